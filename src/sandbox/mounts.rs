//! Mount calls the sandboxed child shares: read-only binds, the propagation of `/`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cstring(p: &Path) -> Result<CString, std::io::Error> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path contains a NUL byte"))
}

/// Bind-mounts `src` at `dst` (recursively for a folder), then makes that mount read-only,
/// `nosuid` and, unless `devices`, `nodev`. The flags the mount already has are kept: in a user
/// namespace the ones inherited from outside are locked and may not be dropped.
#[allow(unsafe_code)]
pub(crate) fn bind_read_only(src: &Path, dst: &Path, devices: bool) -> Result<(), std::io::Error> {
    let (s, d) = (cstring(src)?, cstring(dst)?);
    // SAFETY: valid NUL-terminated strings; a bind takes no type or data.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let st = nix::sys::statvfs::statvfs(dst).map_err(std::io::Error::from)?;
    let have = st.flags();
    use nix::sys::statvfs::FsFlags;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID;
    if !devices || have.contains(FsFlags::ST_NODEV) {
        flags |= libc::MS_NODEV;
    }
    for (fs, ms) in [
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if have.contains(fs) {
            flags |= ms;
        }
    }
    // SAFETY: as above; a remount takes no source or type.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            d.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the propagation of every mount under `/` (`MS_PRIVATE` or `MS_SLAVE`, recursively), so
/// nothing mounted in this namespace reaches the one fanout runs in.
#[allow(unsafe_code)]
pub(crate) fn propagate_root(kind: libc::c_ulong) -> Result<(), String> {
    // SAFETY: valid NUL-terminated string; null source/type/data are allowed for a
    // propagation change.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | kind,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot make the mounts private: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
