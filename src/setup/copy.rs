//! A setup layer copied into a plain worktree (worktree workspaces, the integration gate's
//! checkout): the cheapest faithful copy the filesystem offers — a reflink (`FICLONE`, shared
//! blocks) where it can, else a byte copy. Modes are kept, symlinks stay symlinks (never
//! followed), special files are skipped.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::SetupError;

/// `FICLONE` from <linux/fs.h>: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// What a copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
    /// Files whose blocks are shared with the layer (reflinks).
    pub reflinked: u64,
}

/// Copies everything beneath `from` into `to` (which exists); what is already at `to` is
/// replaced entry by entry. `reflink`: try a reflink first (it stays off after one refusal).
pub fn copy_tree(from: &Path, to: &Path, reflink: bool) -> Result<Copied, SetupError> {
    let mut out = Copied::default();
    let mut try_reflink = reflink;
    copy_dir(from, to, &mut out, &mut try_reflink)?;
    Ok(out)
}

fn copy_dir(
    from: &Path,
    to: &Path,
    out: &mut Copied,
    try_reflink: &mut bool,
) -> Result<(), SetupError> {
    let entries = std::fs::read_dir(from).map_err(|e| io("read", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("read", from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src).map_err(|e| io("read", &src, e))?;
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        if ft.is_dir() {
            if !std::fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir()) {
                let _ = std::fs::remove_file(&dst);
                std::fs::create_dir(&dst).map_err(|e| io("create", &dst, e))?;
            }
            copy_dir(&src, &dst, out, try_reflink)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io("set the mode of", &dst, e))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| io("read", &src, e))?;
            remove_any(&dst)?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| io("create", &dst, e))?;
        } else if ft.is_file() {
            remove_any(&dst)?;
            copy_file(&src, &dst, mode, try_reflink, out)?;
            out.files += 1;
            out.bytes += meta.len();
        }
    }
    Ok(())
}

fn copy_file(
    src: &Path,
    dst: &Path,
    mode: u32,
    try_reflink: &mut bool,
    out: &mut Copied,
) -> Result<(), SetupError> {
    let input = File::open(src).map_err(|e| io("open", src, e))?;
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dst)
        .map_err(|e| io("create", dst, e))?;
    let mut cloned = false;
    if *try_reflink {
        #[allow(unsafe_code)]
        // SAFETY: both descriptors are open for the whole call; FICLONE takes an int.
        let r = unsafe { libc::ioctl(output.as_raw_fd(), FICLONE as _, input.as_raw_fd()) };
        cloned = r == 0;
        // One refusal (another filesystem, no support) says it for every file.
        *try_reflink = cloned;
    }
    if cloned {
        out.reflinked += 1;
    } else {
        let mut input = input;
        std::io::copy(&mut input, &mut output).map_err(|e| io("copy", src, e))?;
    }
    output
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("set the mode of", dst, e))
}

/// Removes a file or link at `p` (a folder there stays: the copy goes into it).
fn remove_any(p: &Path) -> Result<(), SetupError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(|e| io("remove", p, e)),
        Ok(_) => std::fs::remove_file(p).map_err(|e| io("remove", p, e)),
        Err(_) => Ok(()),
    }
}

fn io(what: &str, p: &Path, e: std::io::Error) -> SetupError {
    SetupError::Copy(format!("cannot {what} {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_links_are_kept_and_links_not_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        std::fs::create_dir_all(from.join("node_modules/.bin")).expect("mkdir");
        std::fs::create_dir_all(&to).expect("mkdir");
        std::fs::write(from.join("node_modules/x.js"), "x").expect("write");
        std::fs::write(from.join("node_modules/run"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(
            from.join("node_modules/run"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("../run", from.join("node_modules/.bin/run")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", from.join("node_modules/out")).expect("link");
        let c = copy_tree(&from, &to, true).expect("copy");
        assert_eq!(c.files, 2);
        let m = std::fs::metadata(to.join("node_modules/run")).expect("meta");
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(to.join("node_modules/.bin/run")).expect("link"),
            Path::new("../run")
        );
        assert!(std::fs::symlink_metadata(to.join("node_modules/out"))
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read(to.join("node_modules/x.js")).expect("read"),
            b"x"
        );
    }
}
