//! Who agents run as when fanout runs as root, and where their workspaces live then.
//!
//! Landlock (ABI 7) does not restrict what root's capabilities allow, so when fanout's
//! effective uid is 0 every sandboxed process runs as an ordinary uid (`--agent-user`, default
//! `nobody`). That uid must reach and own its worktree and scratch folder; the run folder
//! (`<repo>/.git/fanout/runs/<run>`) often sits below folders it cannot traverse (`/root`, a
//! 0700 temp folder), so the run's `worktrees` and `scratch` folders are then symbolic links to
//! a root-owned, mode 0711 folder of the run under the system temp folder. fanout reaches
//! everything through the run folder as before; agents are given the real paths.

use super::RunAs;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The uid and gid agents run as by default when fanout runs as root (`nobody`).
pub const NOBODY: RunAs = RunAs {
    uid: 65534,
    gid: 65534,
};

/// The subfolders of a run that hold agent workspaces.
pub const WORKSPACE_DIRS: [&str; 2] = ["worktrees", "scratch"];

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("--agent-user {0:?}: no such user")]
    Unknown(String),
    #[error("--agent-user {0:?}: agents never run as root (uid 0)")]
    Root(String),
    #[error("--agent-user needs fanout to run as root (it runs as uid {0}; agents already run as that uid)")]
    NotRoot(u32),
    #[error("cannot prepare the agent workspace folder {path}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether fanout runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid agents run as: `None` when fanout is not root (nothing changes), else the user
/// named by `--agent-user` (a name or a number), default [`NOBODY`].
pub fn resolve(spec: Option<&str>) -> Result<Option<RunAs>, UserError> {
    if !is_root() {
        return match spec {
            Some(_) => Err(UserError::NotRoot(nix::unistd::geteuid().as_raw())),
            None => Ok(None),
        };
    }
    let who = match spec {
        None => match nix::unistd::User::from_name("nobody") {
            Ok(Some(u)) if !u.uid.is_root() => RunAs {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            },
            _ => NOBODY,
        },
        Some(s) => match s.parse::<u32>() {
            // A number: that uid, with its passwd group when it has one.
            Ok(uid) => {
                let gid = nix::unistd::User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.gid.as_raw())
                    .unwrap_or(uid);
                RunAs { uid, gid }
            }
            Err(_) => match nix::unistd::User::from_name(s) {
                Ok(Some(u)) => RunAs {
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                },
                _ => return Err(UserError::Unknown(s.to_string())),
            },
        },
    };
    if who.uid == 0 || who.gid == 0 {
        return Err(UserError::Root(spec.unwrap_or("nobody").to_string()));
    }
    Ok(Some(who))
}

/// `uid 65534 (nobody)`, for messages and the report.
pub fn describe(who: RunAs) -> String {
    match nix::unistd::User::from_uid(Uid::from_raw(who.uid)) {
        Ok(Some(u)) => format!("uid {} ({}), gid {}", who.uid, u.name, who.gid),
        _ => format!("uid {}, gid {}", who.uid, who.gid),
    }
}

/// Creates the run's workspace folders (`worktrees`, `scratch`). Without `who` they are plain
/// folders of the run. With `who` (fanout is root) they are links to `<temp>/fanout-<run>-*/`,
/// a root-owned 0711 folder (traversable, not listable) whose subfolders the tasks' folders go
/// in; an existing link from an earlier attempt of the run (`fanout resume`) is reused when its
/// target is still a root-owned folder that is not a link.
pub fn prepare_run_workspace(
    run_dir: &Path,
    run_id: &str,
    who: Option<RunAs>,
) -> Result<(), UserError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UserError::Workspace { path, source }
    };
    let Some(_) = who else {
        for sub in WORKSPACE_DIRS {
            let p = run_dir.join(sub);
            std::fs::create_dir_all(&p).map_err(err(&p))?;
        }
        return Ok(());
    };
    std::fs::create_dir_all(run_dir).map_err(err(run_dir))?;
    trust_handed_over_worktrees();
    let link = run_dir.join(WORKSPACE_DIRS[0]);
    let existing = std::fs::read_link(&link)
        .ok()
        .and_then(|t| t.parent().map(Path::to_path_buf))
        .filter(|root| trusted_root(root));
    let root = match existing {
        Some(root) => root,
        None => {
            // A fresh, unpredictable name: nobody can have prepared it in the shared temp folder.
            let dir = tempfile::Builder::new()
                .prefix(&format!("fanout-{run_id}-"))
                .tempdir_in(std::env::temp_dir())
                .map_err(err(&std::env::temp_dir()))?
                .keep();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                .map_err(err(&dir))?;
            dir
        }
    };
    for sub in WORKSPACE_DIRS {
        let target = root.join(sub);
        std::fs::create_dir_all(&target).map_err(err(&target))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o711))
            .map_err(err(&target))?;
        let p = run_dir.join(sub);
        if std::fs::read_link(&p).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        // A plain folder left from a run without a uid switch: only an empty one is replaced.
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_dir(&p)
                .or_else(|_| std::fs::remove_file(&p))
                .map_err(err(&p))?;
        }
        std::os::unix::fs::symlink(&target, &p).map_err(err(&p))?;
    }
    Ok(())
}

/// fanout (root) opens the task worktrees it created and handed to the agent uid; libgit2
/// refuses repositories owned by another user. What that check protects git from — running
/// hooks or an fsmonitor from someone else's configuration — libgit2 never does, and fanout
/// only reads the worktree, commits to its own branch, and runs no configured program.
#[allow(unsafe_code)]
pub fn trust_handed_over_worktrees() {
    // SAFETY: a process-wide libgit2 option, set before the task pipelines start (no git2 call
    // runs concurrently at this point of a run).
    unsafe {
        let _ = git2::opts::set_verify_owner_validation(false);
    }
}

/// A workspace root fanout made: a real folder (not a link) owned by root, not writable by
/// others.
fn trusted_root(root: &Path) -> bool {
    std::fs::symlink_metadata(root)
        .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0)
}

/// Where a run's `worktrees` or `scratch` folder really is (the link's target when fanout runs
/// as root), for paths handed to agents.
pub fn workspace_dir(run_dir: &Path, sub: &str) -> PathBuf {
    let p = run_dir.join(sub);
    match std::fs::read_link(&p) {
        Ok(target) if target.is_absolute() => target,
        _ => p,
    }
}

/// Removes the run's workspace root under the temp folder (and the links to it) once both
/// subfolders are empty, or always with `force` (`fanout clean`). No-op for plain folders.
pub fn remove_outside(run_dir: &Path, force: bool) {
    let mut root = None;
    for sub in WORKSPACE_DIRS {
        let p = run_dir.join(sub);
        let Ok(target) = std::fs::read_link(&p) else {
            continue;
        };
        let Some(parent) = target.parent().filter(|r| trusted_root(r)) else {
            continue;
        };
        let removed = if force {
            crate::fs_util::remove_tree(&target).is_ok()
        } else {
            std::fs::remove_dir(&target).is_ok() || !target.exists()
        };
        if removed {
            let _ = std::fs::remove_file(&p);
            root = Some(parent.to_path_buf());
        }
    }
    if let Some(r) = root {
        let _ = std::fs::remove_dir(r);
    }
}

/// Gives `path` and everything beneath it to `who`, never following a link: the walk goes
/// through descriptors (`openat` with `O_NOFOLLOW`, `fchownat` with `AT_SYMLINK_NOFOLLOW`), so
/// a process of `who` that swaps a folder for a link meanwhile cannot redirect it outside.
/// Files with more than one hard link are left alone (one could be a link to a file outside).
pub fn hand_over(path: &Path, who: RunAs) -> std::io::Result<()> {
    let dir = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = nix::sys::stat::fstat(&dir)?;
    if st.st_uid != who.uid || st.st_gid != who.gid {
        nix::unistd::fchown(
            &dir,
            Some(Uid::from_raw(who.uid)),
            Some(Gid::from_raw(who.gid)),
        )?;
    }
    hand_over_beneath(&dir, who, 0)
}

/// Deeper trees than this are not walked further (a bound against pathological nesting).
const MAX_DEPTH: usize = 256;

fn hand_over_beneath(dir: &OwnedFd, who: RunAs, depth: usize) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    // The magic link names exactly the folder this descriptor holds.
    let names: Vec<std::ffi::OsString> =
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
    for name in names {
        let Ok(st) = fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            continue;
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let is_dir = kind == SFlag::S_IFDIR;
        let owned = st.st_uid == who.uid && st.st_gid == who.gid;
        if !owned && (is_dir || st.st_nlink <= 1) {
            fchownat(
                dir,
                name.as_os_str(),
                Some(Uid::from_raw(who.uid)),
                Some(Gid::from_raw(who.gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        if is_dir {
            let Ok(sub) = openat(
                dir,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            hand_over_beneath(&sub, who, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_dir_without_links_is_the_run_folder() {
        let d = tempfile::tempdir().expect("tmp");
        prepare_run_workspace(d.path(), "r1", None).expect("prepare");
        assert!(d.path().join("worktrees").is_dir());
        assert_eq!(workspace_dir(d.path(), "scratch"), d.path().join("scratch"));
    }

    #[test]
    fn as_root_workspaces_move_to_a_0711_folder() {
        if !is_root() {
            return;
        }
        let d = tempfile::tempdir().expect("tmp");
        let run = d.path().join("run");
        prepare_run_workspace(&run, "r2", Some(NOBODY)).expect("prepare");
        let wt = workspace_dir(&run, "worktrees");
        assert_ne!(wt, run.join("worktrees"));
        let root = wt.parent().expect("root");
        let m = std::fs::metadata(root).expect("meta");
        assert_eq!(m.mode() & 0o7777, 0o711);
        assert_eq!(m.uid(), 0);
        // Reused by a second attempt of the same run.
        prepare_run_workspace(&run, "r2", Some(NOBODY)).expect("again");
        assert_eq!(workspace_dir(&run, "worktrees"), wt);
        // Handing over never follows a link out of the tree.
        let task = wt.join("t");
        std::fs::create_dir_all(task.join("a")).expect("mkdir");
        let outside = d.path().join("outside.txt");
        std::fs::write(&outside, "x").expect("write");
        std::os::unix::fs::symlink(&outside, task.join("a/link")).expect("link");
        std::fs::hard_link(&outside, task.join("hard")).expect("hard link");
        hand_over(&task, NOBODY).expect("hand over");
        assert_eq!(std::fs::metadata(task.join("a")).expect("a").uid(), 65534);
        assert_eq!(std::fs::metadata(&outside).expect("outside").uid(), 0);
        remove_outside(&run, true);
        assert!(!root.exists());
        assert!(std::fs::symlink_metadata(run.join("worktrees")).is_err());
    }
}
