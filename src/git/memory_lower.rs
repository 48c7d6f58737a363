/*!
Where overlay lowers live. A lower is a full checkout every task of a run shares and nobody
writes; creating its files is the one cost of an overlay run that grows with the repository,
and on many disks creating a file (an inode) costs ~0.2–1 ms, so 5 000 files cost seconds. On a
memory filesystem it costs ~25 µs. So a lower goes to `/dev/shm` (a private folder there) when
that is a tmpfs with room for it — room measured against the free space there and the memory
the machine has available — and to the run's workspace folder on disk otherwise.

The folder is recorded as a link `<workspaces>/.lower/<commit>` → the memory folder, so
`fanout collect` of a kept task and `fanout clean` find it. `FANOUT_LOWER_IN_MEMORY=0` keeps
lowers on disk (and `=1` insists on memory when possible, whatever the estimate).
*/

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

/// The memory filesystem tried for lowers.
const SHM: &str = "/dev/shm";
/// Every file takes at least a page of a tmpfs.
const PAGE: u64 = 4096;
/// Name prefix of fanout's folders in the memory filesystem (`fanout clean` only removes these).
pub(crate) const PREFIX: &str = "fanout-lower-";

/// Bytes a checkout of `commit` takes on a tmpfs (an upper bound: sizes rounded up to pages).
fn checkout_bytes(repo: &Repository, commit: Oid) -> Option<u64> {
    let tree = repo.find_commit(commit).ok()?.tree().ok()?;
    let odb = repo.odb().ok()?;
    let mut total = 0u64;
    let mut failed = false;
    tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        match entry.kind() {
            Some(ObjectType::Blob) => match odb.read_header(entry.id()) {
                Ok((size, _)) => total += (size as u64).div_ceil(PAGE).max(1) * PAGE,
                Err(_) => {
                    failed = true;
                    return TreeWalkResult::Abort;
                }
            },
            _ => total += PAGE,
        }
        TreeWalkResult::Ok
    })
    .ok()?;
    (!failed).then_some(total)
}

/// Memory the machine can still give (MemAvailable), in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn free_bytes(path: &Path) -> Option<u64> {
    let vfs = nix::sys::statvfs::statvfs(path).ok()?;
    Some(vfs.blocks_available() * vfs.fragment_size())
}

/// Whether `path` is a tmpfs with `need` bytes free, and `need` is at most a quarter of the
/// memory available (lowers must never push the agents out of memory).
fn has_room(path: &Path, need: u64) -> bool {
    let Ok(fs) = nix::sys::statfs::statfs(path) else {
        return false;
    };
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return false;
    }
    let Some(free) = free_bytes(path) else {
        return false;
    };
    free / 2 >= need && mem_available().is_some_and(|m| m / 4 >= need)
}

/// Where lowers would go on this machine, for `fanout doctor`.
pub(crate) fn describe() -> String {
    if std::env::var("FANOUT_LOWER_IN_MEMORY").ok().as_deref() == Some("0") {
        return "lowers on disk (FANOUT_LOWER_IN_MEMORY=0)".into();
    }
    let shm = Path::new(SHM);
    if !has_room(shm, 0) {
        return format!("lowers on disk ({SHM} is not a tmpfs fanout can use)");
    }
    let free = free_bytes(shm).unwrap_or(0);
    let mem = mem_available().unwrap_or(0);
    format!(
        "lowers in memory when they fit ({SHM}: {} MB free, {} MB of memory available)",
        free >> 20,
        mem >> 20
    )
}

/// A fresh private folder in the memory filesystem for the lower of `commit`, or `None` (use
/// the disk). Its parent is named `fanout-lower-<run>-…` and is reachable by its owner only:
/// the overlay reads the lower with the mounting process's rights, agents never reach it.
pub(crate) fn memory_folder(repo: &Repository, run_id: &str, commit: Oid) -> Option<PathBuf> {
    let setting = std::env::var("FANOUT_LOWER_IN_MEMORY").ok();
    if setting.as_deref() == Some("0") {
        return None;
    }
    let shm = Path::new(SHM);
    if setting.as_deref() != Some("1") {
        let need = checkout_bytes(repo, commit)?;
        if !has_room(shm, need) {
            return None;
        }
    } else if !has_room(shm, 0) {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{run_id}-"))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(shm)
        .ok()?
        .keep();
    Some(dir.join(commit.to_string()))
}

/// Removes a lower's memory folder (the parent of `lower`) when it is one of ours.
pub(crate) fn remove_memory_parent(lower: &Path) {
    let Some(parent) = lower.parent() else {
        return;
    };
    if is_ours(parent) {
        let _ = crate::fs_util::remove_tree(parent);
    }
}

/// A folder fanout made in the memory filesystem: directly in it, named with our prefix, a
/// real folder (not a link) owned by us.
fn is_ours(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    dir.parent() == Some(Path::new(SHM))
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PREFIX))
        && std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw())
}

/// Removes the lowers a run left in memory (`fanout clean`; a run that was killed or is
/// continued).
pub fn remove_run_lowers(run_dir: &Path) {
    remove_linked(
        &crate::run_dir::RunDir::new(run_dir)
            .worktrees()
            .join(".lower"),
    );
}

/// Removes the memory folders the run's `.lower` links point at (`fanout clean`, the end of a
/// run), and the links.
pub(crate) fn remove_linked(lower_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(lower_dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if let Ok(target) = std::fs::read_link(&p) {
            remove_memory_parent(&target);
            let _ = std::fs::remove_file(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_folders_in_the_memory_filesystem_count_as_ours() {
        assert!(!is_ours(Path::new("/dev/shm")));
        assert!(!is_ours(Path::new("/tmp/fanout-lower-x")));
        assert!(!is_ours(Path::new("/dev/shm/other")));
        let Ok(dir) = tempfile::Builder::new().prefix(PREFIX).tempdir_in(SHM) else {
            return; // no /dev/shm on this machine: nothing to check
        };
        assert!(is_ours(dir.path()));
        let link = Path::new(SHM).join(format!("{PREFIX}link-{}", std::process::id()));
        let _ = std::os::unix::fs::symlink(dir.path(), &link);
        assert!(!is_ours(&link), "a link is never ours");
        let _ = std::fs::remove_file(&link);
    }

    #[test]
    fn a_checkout_estimate_counts_pages_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let blob = repo.blob(&[b'x'; 5000]).unwrap();
        let small = repo.blob(b"y").unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("big", blob, 0o100644).unwrap();
        b.insert("small", small, 0o100644).unwrap();
        let tree = repo.find_tree(b.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let c = repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap();
        assert_eq!(checkout_bytes(&repo, c), Some(3 * PAGE));
    }
}
