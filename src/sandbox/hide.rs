//! Hiding the invoker's credential files (`sandbox/credentials.rs` lists them) from a tree in a
//! network namespace of its own: in the forked, single-threaded child, after the network
//! namespace and before the overlay, the uid switch and Landlock, a private mount namespace
//! where each existing folder of the list is covered by an empty read-only tmpfs and each file
//! by a read-only bind of `/dev/null`. Without root the mount namespace belongs to a new user
//! namespace of the child's own ids (nested in the network one; the overlay then nests its own),
//! whose capabilities are dropped again; the mounts made here are locked for the namespaces
//! below it, so nothing in the tree can unmount them.

use std::path::{Path, PathBuf};

/// A credential path left visible because something the tree needs lies beneath it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Kept {
    pub path: PathBuf,
    pub holds: PathBuf,
}

/// What to cover: each existing candidate by its real path (links resolved: a mount covers
/// what the link points at), folders before what they contain; `protected` (the workspace,
/// the run's folders, the program) are never beneath one — such a candidate is kept visible.
pub(crate) fn plan(candidates: &[PathBuf], protected: &[PathBuf]) -> (Vec<PathBuf>, Vec<Kept>) {
    let protected: Vec<PathBuf> = protected
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let mut cover: Vec<PathBuf> = Vec::new();
    let mut kept = Vec::new();
    for c in candidates {
        // Missing, or a link to nothing: nothing to read there.
        let Ok(real) = std::fs::canonicalize(c) else {
            continue;
        };
        if real == Path::new("/") || cover.contains(&real) {
            continue;
        }
        if let Some(p) = protected.iter().find(|p| p.starts_with(&real)) {
            kept.push(Kept {
                path: c.clone(),
                holds: p.clone(),
            });
            continue;
        }
        cover.push(real);
    }
    // A folder covered first makes what it contains vanish (then skipped below).
    cover.sort_by_key(|p| p.components().count());
    (cover, kept)
}

/// Enters the mount namespace and covers `cover` (from [`plan`]); nothing when it is empty.
/// `Err` says which path could not be covered (the caller does not start the program).
#[allow(unsafe_code)]
pub(crate) fn enter(cover: &[PathBuf]) -> Result<(), String> {
    if cover.is_empty() {
        return Ok(());
    }
    let root = nix::unistd::geteuid().is_root();
    super::userns::unshare_own_ids(libc::CLONE_NEWNS, "mount")?;
    super::mounts::propagate_root(libc::MS_PRIVATE)?;
    for path in cover {
        // Gone when a folder covered before held it.
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        let done = if meta.is_dir() {
            empty_folder(path)
        } else {
            // Without `nodev`: the file reads as empty (a tool reading it finds no entry)
            // rather than failing; Landlock refuses writes to it.
            super::mounts::bind_read_only(Path::new("/dev/null"), path, true)
        };
        done.map_err(|e| format!("cannot hide the credential path {}: {e}", path.display()))?;
    }
    if !root {
        super::privs::drop_all_caps()?;
    }
    Ok(())
}

/// Mounts an empty, read-only tmpfs at `path`.
#[allow(unsafe_code)]
fn empty_folder(path: &Path) -> Result<(), std::io::Error> {
    let target = super::mounts::cstring(path)?;
    let fstype = c"tmpfs";
    let data = c"size=4k,nr_inodes=1,mode=0755";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The program `argv0` names, as exec would find it (through `PATH` when it has no slash).
pub(crate) fn program_path(argv0: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if argv0.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(argv0));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(argv0))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_what_exists_and_keeps_what_holds_the_workspace() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path();
        for p in [".ssh", ".claude/local", ".codex", "work/repo"] {
            std::fs::create_dir_all(h.join(p)).unwrap();
        }
        for f in [".netrc", ".claude/.credentials.json", ".codex/auth.json"] {
            std::fs::write(h.join(f), "secret").unwrap();
        }
        std::os::unix::fs::symlink(h.join(".netrc"), h.join(".npmrc")).unwrap();
        std::os::unix::fs::symlink(h.join("nowhere"), h.join(".pypirc")).unwrap();
        let cand: Vec<PathBuf> = [
            ".codex/auth.json",
            ".codex",
            ".claude",
            ".claude/.credentials.json",
            ".ssh",
            ".netrc",
            ".npmrc",
            ".pypirc",
            ".aws",
        ]
        .iter()
        .map(|p| h.join(p))
        .collect();
        let program = h.join(".claude/local/claude");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        let (cover, kept) = plan(&cand, &[h.join("work/repo"), program.clone()]);
        let h = std::fs::canonicalize(h).unwrap();
        let rel: Vec<String> = cover
            .iter()
            .map(|p| p.strip_prefix(&h).unwrap().display().to_string())
            .collect();
        // The link's target once, the dangling link and the missing folder not at all; the
        // folder holding the program is kept, its login file covered; folders first.
        assert_eq!(
            rel,
            [
                ".codex",
                ".ssh",
                ".netrc",
                ".codex/auth.json",
                ".claude/.credentials.json"
            ]
        );
        assert_eq!(kept.len(), 1);
        assert!(kept[0].path.ends_with(".claude"), "{kept:?}");
        // A credential folder holding the workspace is never covered.
        let (cover, kept) = plan(&[h.join("work")], &[h.join("work/repo")]);
        assert!(cover.is_empty() && kept.len() == 1);
    }

    #[test]
    fn program_path_follows_path_lookup() {
        assert_eq!(
            program_path("/bin/x".as_ref()),
            Some(PathBuf::from("/bin/x"))
        );
        assert!(program_path("sh".as_ref()).is_some_and(|p| p.is_absolute()));
        assert_eq!(program_path("fanout-no-such-program".as_ref()), None);
    }
}
