//! An idmapped view of the shared lower checkout for one task (fanout runs as root).
//!
//! The lower belongs to root (mode 0700: no other account reaches it). In the task's private
//! mount namespace, a clone of the lower's mount is idmapped — root's files shown as owned by
//! the task's uid and gid — and mounted over the lower's own path, so the overlay built on it
//! gives the task a view of files it owns, whatever uid the task has. The mapping comes from a
//! throwaway user namespace whose only mapping is `0 → the task's uid` (and gid).

use super::policy::RunAs;
use nix::sys::wait::waitpid;
use nix::unistd::{pipe2, ForkResult};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// From <linux/mount.h>.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// `struct mount_attr` (version 0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Mounts, over `lower`, a clone of it where root's files are `who`'s. Only in the calling
/// process's (private) mount namespace; needs root.
#[allow(unsafe_code)]
pub(crate) fn mount_lower_as(lower: &Path, who: RunAs) -> Result<(), String> {
    let userns = userns_mapping_root_to(who)?;
    let path = CString::new(lower.as_os_str().as_bytes())
        .map_err(|_| "the lower path contains a NUL byte".to_string())?;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(os_err("cannot clone the lower checkout's mount"));
    }
    // SAFETY: open_tree returned a fresh descriptor nobody else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: `attr` and `empty` outlive the call; the size is the struct's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(os_err(
            "cannot idmap the lower checkout (the filesystem must support idmapped mounts)",
        ));
    }
    // SAFETY: valid descriptors and NUL-terminated strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(os_err("cannot mount the idmapped lower checkout"));
    }
    Ok(())
}

/// A descriptor of a new user namespace whose only mappings are uid 0 → `who.uid` and gid 0 →
/// `who.gid`: a forked helper creates it and waits until its maps are written and the
/// namespace is opened, then exits.
#[allow(unsafe_code)]
fn userns_mapping_root_to(who: RunAs) -> Result<OwnedFd, String> {
    let (ready_rd, ready_wr) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let (done_rd, done_wr) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    // SAFETY: the sandboxed child that calls this is single-threaded; the helper only calls
    // unshare, read and write on descriptors, and _exit.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot fork the user namespace helper: {e}")),
        Ok(ForkResult::Child) => {
            drop(ready_rd);
            drop(done_wr);
            // SAFETY: unshare takes only flags.
            let ok = unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0;
            let mut w = std::fs::File::from(ready_wr);
            let _ = w.write_all(if ok { b"1" } else { b"0" });
            drop(w);
            // Until the parent closes its end (or dies).
            let mut r = std::fs::File::from(done_rd);
            let mut buf = [0u8; 1];
            let _ = r.read(&mut buf);
            // SAFETY: ends the helper without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ready_wr);
            drop(done_rd);
            let mut r = std::fs::File::from(ready_rd);
            let mut buf = [0u8; 1];
            let created = r.read(&mut buf).is_ok_and(|n| n == 1) && buf[0] == b'1';
            let result = if created {
                let write = |file: &str, text: String| {
                    std::fs::write(format!("/proc/{child}/{file}"), text)
                        .map_err(|e| format!("cannot write the helper's {file}: {e}"))
                };
                write("uid_map", format!("0 {} 1", who.uid))
                    .and_then(|()| write("gid_map", format!("0 {} 1", who.gid)))
                    .and_then(|()| {
                        std::fs::File::open(format!("/proc/{child}/ns/user"))
                            .map(OwnedFd::from)
                            .map_err(|e| format!("cannot open the helper's user namespace: {e}"))
                    })
            } else {
                Err("cannot create a user namespace for the idmapped lower".to_string())
            };
            drop(done_wr);
            let _ = waitpid(child, None);
            result
        }
    }
}
