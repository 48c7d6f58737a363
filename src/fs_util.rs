//! Removing folders an agent had: it may have taken away permissions and planted links.

use std::path::{Path, PathBuf};

/// `remove_dir_all` that first gives back write/execute permission an agent may have taken
/// away. Links are never followed: permissions are changed with `AT_SYMLINK_NOFOLLOW`, so a
/// folder swapped for a link to outside is refused, not chmod-ed through.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            restore_permissions(path);
            // Gone in between (another cleanup of the same folder finished first) is removed.
            match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        }
    }
}

fn restore_permissions(path: &Path) {
    use nix::sys::stat::{fchmodat, FchmodatFlags, Mode};
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let _ = fchmodat(
            nix::fcntl::AT_FDCWD,
            &dir,
            Mode::from_bits_truncate(0o700),
            FchmodatFlags::NoFollowSymlink,
        );
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn locked_folders_are_removed_and_links_out_are_left_alone() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("w");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("a/out")).unwrap();
        std::fs::set_permissions(root.join("a"), std::fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        let mode = std::fs::metadata(outside.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o755);
    }
}
