//! Who agents run as when fanout runs as root, and where their workspaces live then.
//!
//! Landlock (ABI 7) does not restrict what root's capabilities allow, so when fanout's
//! effective uid is 0 every sandboxed process runs as an ordinary uid: by default one uid per
//! task from a block of uids no account uses, chosen afresh for every run (see [`Block`]);
//! `--agent-user` names one uid for everything instead. A task's uid must reach and own its
//! worktree and scratch folder, and nobody else may reach them; the run folder
//! (`<repo>/.git/fanout/runs/<run>`) often sits below folders it cannot traverse (`/root`, a
//! 0700 temp folder), so the run's `worktrees` and `scratch` folders are then symbolic links to
//! a root-owned, mode 0711 folder of the run under the system temp folder. fanout reaches
//! everything through the run folder as before; agents are given the real paths.

use super::policy::RunAs;
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

/// Dedicated uid blocks start at this uid (2^30) and end before 2^31: far above the ids
/// accounts get, below what tools that keep a uid in a signed int can hold.
const DEDICATED_FIRST: u32 = 1 << 30;
const DEDICATED_END: u32 = 1 << 31;
/// Uids in one run's block (and the alignment of its first uid).
const BLOCK_SIZE: u32 = 1 << 16;
/// Processes one dedicated uid may have at once, unless `FANOUT_MAX_PROCS` says otherwise.
pub const DEFAULT_MAX_PROCS: u64 = 4096;
/// The variable that sets [`DEFAULT_MAX_PROCS`] (read by the sandbox supervisor).
pub const MAX_PROCS_ENV: &str = "FANOUT_MAX_PROCS";

/// A run's block of dedicated uids (gid = uid for each): `base` is the run's own uid (the one
/// verifiers run as), `base + 1` is shared by the tasks that use writable shared caches, task
/// `i` runs as `base + 2 + i`, and the integration gate as the block's last uid. No account, group or process
/// used any uid of the block when the run chose it, and it is chosen at random among 16 384
/// blocks, so two concurrent runs never share one in practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    base: u32,
}

impl Block {
    /// The block whose run uid is `who`, if `who` is one.
    pub fn of(who: RunAs) -> Option<Block> {
        (who.uid == who.gid
            && (DEDICATED_FIRST..DEDICATED_END).contains(&who.uid)
            && who.uid % BLOCK_SIZE == 0)
            .then_some(Block { base: who.uid })
    }

    fn user(self, offset: u32) -> RunAs {
        let uid = self.base + offset;
        RunAs { uid, gid: uid }
    }

    /// The run's own uid.
    pub fn run_user(self) -> RunAs {
        self.user(0)
    }

    /// The uid of the tasks that share writable caches.
    pub fn shared_caches_user(self) -> RunAs {
        self.user(1)
    }

    /// Task `index`'s uid.
    pub fn task_user(self, index: usize) -> RunAs {
        self.user(2 + (index % (BLOCK_SIZE as usize - 3)) as u32)
    }

    /// The integration gate's uid (it runs the merged code of every task).
    pub fn gate_user(self) -> RunAs {
        self.user(BLOCK_SIZE - 1)
    }

    /// Whether `uid` is in this block.
    pub fn contains(self, uid: u32) -> bool {
        (self.base..self.base + BLOCK_SIZE).contains(&uid)
    }
}

/// Whether `uid` lies in the range dedicated blocks come from.
pub fn is_dedicated(uid: u32) -> bool {
    (DEDICATED_FIRST..DEDICATED_END).contains(&uid)
}

/// The uid task `index` runs as, given the run's uid: its own uid from the run's block, or
/// `run_as` itself (`--agent-user`, `nobody`). `shares_caches`: the task writes shared caches,
/// which all such tasks of the run must own together.
pub fn task_user(run_as: RunAs, index: usize, shares_caches: bool) -> RunAs {
    match Block::of(run_as) {
        Some(b) if shares_caches => b.shared_caches_user(),
        Some(b) => b.task_user(index),
        None => run_as,
    }
}

/// The uid everything of the run's shared caches runs as when fanout is root: the cache store's
/// owner, the `caches_fill` step, and the tasks that use caches (their copy-on-write layers
/// keep the store's owner). `None` when fanout is not root.
pub fn caches_user(run_as: Option<RunAs>) -> Option<RunAs> {
    run_as.map(|who| task_user(who, 0, true))
}

/// The uid and gid a verifier of this run (read-back, review, diagnosis) runs as when fanout
/// is root: the run's own uid (no task runs as it), or the `--agent-user` uid. `None` when
/// fanout is not root (verifiers run as the invoker).
pub fn verifier_user(run_as: Option<RunAs>) -> Option<RunAs> {
    run_as.map(|who| Block::of(who).map_or(who, Block::run_user))
}

/// The uid the integration gate's command runs as: a uid of the block no task or verifier has,
/// or the `--agent-user` uid; `None` when fanout is not root.
pub fn gate_user(run_as: Option<RunAs>) -> Option<RunAs> {
    run_as.map(|who| Block::of(who).map_or(who, Block::gate_user))
}

/// The most processes a sandboxed program running as `who` may have: a limit only for
/// dedicated uids (where it is a per-task limit), `FANOUT_MAX_PROCS` or [`DEFAULT_MAX_PROCS`].
pub fn max_procs(who: RunAs) -> Option<u64> {
    if !is_dedicated(who.uid) {
        return None;
    }
    let configured = std::env::var(MAX_PROCS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0);
    Some(configured.unwrap_or(DEFAULT_MAX_PROCS))
}

/// Chooses a fresh block for a run: a random aligned block of the dedicated range that this
/// process can switch to (inside its user namespace's uid and gid maps) and that no passwd or
/// group entry and no running process uses. `None` when no such block is found.
pub fn choose_block() -> Option<Block> {
    let mapped = |file: &str| -> Vec<(u64, u64)> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
                let (inside, _, count) = (f.next()??, f.next()??, f.next()??);
                Some((inside, inside + count))
            })
            .collect()
    };
    let (uids, gids) = (mapped("/proc/self/uid_map"), mapped("/proc/self/gid_map"));
    let covers = |ranges: &[(u64, u64)], b: u32| {
        let (first, end) = (b as u64, b as u64 + BLOCK_SIZE as u64);
        ranges.iter().any(|(s, e)| *s <= first && end <= *e)
    };
    let used = used_ids();
    let slots = (DEDICATED_END - DEDICATED_FIRST) / BLOCK_SIZE;
    for _ in 0..64 {
        let mut r = [0u8; 4];
        getrandom(&mut r).ok()?;
        let base = DEDICATED_FIRST + (u32::from_ne_bytes(r) % slots) * BLOCK_SIZE;
        let block = Block { base };
        if !covers(&uids, base) || !covers(&gids, base) {
            continue;
        }
        if used.iter().any(|id| block.contains(*id)) {
            continue;
        }
        // Accounts from other sources than the files (LDAP, …), at the block's edges.
        let named = [base, base + BLOCK_SIZE - 1].iter().any(|id| {
            nix::unistd::User::from_uid(Uid::from_raw(*id)).is_ok_and(|u| u.is_some())
                || nix::unistd::Group::from_gid(Gid::from_raw(*id)).is_ok_and(|g| g.is_some())
        });
        if !named {
            return Some(block);
        }
    }
    None
}

#[allow(unsafe_code)]
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every uid and gid named in `/etc/passwd` and `/etc/group` or used by a running process.
fn used_ids() -> Vec<u32> {
    let mut ids = Vec::new();
    for (file, field) in [("/etc/passwd", 2), ("/etc/group", 2), ("/etc/passwd", 3)] {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            ids.extend(
                line.split(':')
                    .nth(field)
                    .and_then(|v| v.parse::<u32>().ok()),
            );
        }
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("Uid:").or_else(|| l.strip_prefix("Gid:")) {
                ids.extend(v.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    ids
}

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

/// The run's uid: `None` when fanout is not root (nothing changes), else the user named by
/// `--agent-user` (a name or a number), by default the run uid of a fresh [`Block`] (each task
/// then gets its own uid, see [`task_user`]), or `nobody` when no block can be used (a user
/// namespace that maps too few uids).
pub fn resolve(spec: Option<&str>) -> Result<Option<RunAs>, UserError> {
    resolve_with(spec, choose_block)
}

/// The uid `fanout sandbox` runs its command as: like [`resolve`], but by default `nobody`
/// (the caller prepares the writable folders for a uid it knows; fanout changes no ownership
/// there).
pub fn resolve_one(spec: Option<&str>) -> Result<Option<RunAs>, UserError> {
    resolve_with(spec, || None)
}

fn resolve_with(
    spec: Option<&str>,
    choose_block: impl FnOnce() -> Option<Block>,
) -> Result<Option<RunAs>, UserError> {
    if !is_root() {
        return match spec {
            Some(_) => Err(UserError::NotRoot(nix::unistd::geteuid().as_raw())),
            None => Ok(None),
        };
    }
    let who = match spec {
        None => match (choose_block(), nix::unistd::User::from_name("nobody")) {
            (Some(b), _) => b.run_user(),
            (None, Ok(Some(u))) if !u.uid.is_root() => RunAs {
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

/// The login name a program running as `who` gets in `USER` and `LOGNAME`: its passwd name,
/// or `fanout-<uid>` for a uid without one (a dedicated uid).
pub fn login_name(who: RunAs) -> String {
    match nix::unistd::User::from_uid(Uid::from_raw(who.uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("fanout-{}", who.uid),
    }
}

/// `uid 65534 (nobody)`, for messages and the report.
pub fn describe(who: RunAs) -> String {
    if let Some(b) = Block::of(who) {
        return format!(
            "one dedicated uid per task from uid {} (gid the same; no account uses them), run uid {}",
            b.task_user(0).uid,
            who.uid
        );
    }
    match nix::unistd::User::from_uid(Uid::from_raw(who.uid)) {
        Ok(Some(u)) => format!("uid {} ({}), gid {}", who.uid, u.name, who.gid),
        _ => format!("uid {}, gid {}", who.uid, who.gid),
    }
}

/// Creates the run's workspace folders (`worktrees`, `scratch`): links to
/// `<temp>/fanout-<run>-*/`, a fresh folder of fanout's own uid whose subfolders the tasks'
/// folders go in — with `who` (fanout is root) 0711 (traversable, not listable by the task
/// uids), else 0700. Outside the repository's `.git`: a path with a dot-folder in it changes
/// what tools do (`send`/`serve-static` answer 404 for it, ESLint ignores `.git/`), so a
/// workspace is where a checkout of the user's would be. An existing link from an earlier
/// attempt of the run (`fanout resume`) is reused when its target is still such a folder.
pub fn prepare_run_workspace(
    run_dir: &Path,
    run_id: &str,
    who: Option<RunAs>,
) -> Result<(), UserError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UserError::Workspace { path, source }
    };
    std::fs::create_dir_all(run_dir).map_err(err(run_dir))?;
    // Logs, events and status files of the run: fanout's alone.
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(err(run_dir))?;
    if who.is_some() {
        trust_handed_over_worktrees();
    }
    let mode = if who.is_some() { 0o711 } else { 0o700 };
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
                .tempdir_in(workspaces_parent())
                .map_err(err(&workspaces_parent()))?
                .keep();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(err(&dir))?;
            dir
        }
    };
    for sub in WORKSPACE_DIRS {
        let target = root.join(sub);
        std::fs::create_dir_all(&target).map_err(err(&target))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
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

/// Where workspace folders go: `$TMPDIR` when it is set, else `/var/tmp` (kept across
/// reboots, unlike a `/tmp` that several distributions mount as a tmpfs: a kept workspace holds
/// work that could not be committed), else the system temp folder. `/var/tmp` is used only
/// when it is what a shared temp folder must be: a root-owned folder with the sticky bit.
pub fn workspaces_parent() -> PathBuf {
    let var_tmp = Path::new("/var/tmp");
    let shared_temp = std::fs::symlink_metadata(var_tmp)
        .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o1000 != 0);
    if std::env::var_os("TMPDIR").is_none() && shared_temp {
        var_tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    }
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

/// A workspace root fanout made: a real folder (not a link) of fanout's own uid, not writable
/// by others.
fn trusted_root(root: &Path) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    std::fs::symlink_metadata(root)
        .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o022 == 0)
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
/// On the way, every setuid and setgid bit and every write permission for others is removed
/// (nothing planted in a workspace gives anyone its owner's rights), and `path` itself becomes
/// reachable by its owner only (mode 0700).
pub fn hand_over(path: &Path, who: RunAs) -> std::io::Result<()> {
    walk_top(path, Some(who), true)
}

/// A workspace kept for the user (fanout is root): given back to root, setuid and setgid bits
/// and write permissions for others removed, reachable by root only. No uid of the run owns
/// anything in it afterwards.
pub fn take_back(path: &Path) -> std::io::Result<()> {
    walk_top(path, Some(RunAs { uid: 0, gid: 0 }), true)
}

/// A workspace kept for the user (fanout is not root): setuid and setgid bits and write
/// permissions for others removed, reachable by its owner only, ownership unchanged.
pub fn strip_unsafe_modes(path: &Path) -> std::io::Result<()> {
    walk_top(path, None, true)
}

/// Mode bits a workspace entry never keeps: setuid, setgid, writable by others.
const UNSAFE_MODE: u32 = 0o6002;

fn walk_top(path: &Path, who: Option<RunAs>, owner_only: bool) -> std::io::Result<()> {
    let dir = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = nix::sys::stat::fstat(&dir)?;
    if let Some(who) = who {
        if st.st_uid != who.uid || st.st_gid != who.gid {
            nix::unistd::fchown(
                &dir,
                Some(Uid::from_raw(who.uid)),
                Some(Gid::from_raw(who.gid)),
            )?;
        }
    }
    let keep = if owner_only { 0o700 } else { !UNSAFE_MODE };
    let mode = st.st_mode & 0o7777;
    if mode & !keep != 0 {
        nix::sys::stat::fchmod(&dir, Mode::from_bits_truncate(mode & keep))?;
    }
    walk_beneath(&dir, who, 0)
}

/// Deeper trees than this are not walked further (a bound against pathological nesting).
const MAX_DEPTH: usize = 256;

fn walk_beneath(dir: &OwnedFd, who: Option<RunAs>, depth: usize) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    // The magic link names exactly the folder this descriptor holds.
    let names: Vec<std::ffi::OsString> =
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
    let nofollow = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    for name in names {
        let Ok(st) = fstatat(dir, name.as_os_str(), nofollow) else {
            continue;
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let is_dir = kind == SFlag::S_IFDIR;
        // A file with several links may be a link to a file outside: not ours to change,
        // unless its owner is the workspace's own uid (then the task made it).
        let ours = is_dir || st.st_nlink <= 1;
        let owner_is_task = who.is_some_and(|w| st.st_uid == w.uid);
        if let Some(who) = who {
            let owned = st.st_uid == who.uid && st.st_gid == who.gid;
            if !owned && ours {
                fchownat(
                    dir,
                    name.as_os_str(),
                    Some(Uid::from_raw(who.uid)),
                    Some(Gid::from_raw(who.gid)),
                    nofollow,
                )?;
            }
        }
        let mode = st.st_mode & 0o7777;
        let plain = is_dir || kind == SFlag::S_IFREG;
        if plain && mode & UNSAFE_MODE != 0 && (ours || owner_is_task || who.is_none()) {
            // Never through a link: the entry was just seen not to be one, and the flag
            // refuses to follow one swapped in since.
            fchmodat_nofollow(dir, &name, mode & !UNSAFE_MODE)?;
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
            walk_beneath(&sub, who, depth + 1)?;
        }
    }
    Ok(())
}

/// `chmod` of `name` in `dir` without following a link: through an `O_PATH` descriptor opened
/// with `O_NOFOLLOW` (what `fchmodat(AT_SYMLINK_NOFOLLOW)` does on kernels without
/// `fchmodat2`), so a link swapped in since the entry was seen is refused, not followed.
fn fchmodat_nofollow(dir: &OwnedFd, name: &std::ffi::OsStr, mode: u32) -> std::io::Result<()> {
    let fd = match openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let st = nix::sys::stat::fstat(&fd)?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFDIR && kind != SFlag::S_IFREG {
        return Ok(());
    }
    std::fs::set_permissions(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        std::fs::Permissions::from_mode(mode),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_uid_switch_workspaces_move_to_an_owner_only_folder() {
        let d = tempfile::tempdir().expect("tmp");
        let run = d.path().join("run");
        prepare_run_workspace(&run, "r1", None).expect("prepare");
        let wt = workspace_dir(&run, "worktrees");
        assert!(wt.is_dir() && !wt.starts_with(&run), "{}", wt.display());
        let root = wt.parent().expect("root");
        let m = std::fs::metadata(root).expect("meta");
        assert_eq!(m.mode() & 0o7777, 0o700);
        assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
        // A second attempt of the run (resume) finds the same folders.
        prepare_run_workspace(&run, "r1", None).expect("again");
        assert_eq!(workspace_dir(&run, "worktrees"), wt);
        remove_outside(&run, true);
        assert!(!root.exists());
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
    #[test]
    fn a_block_gives_each_task_its_own_uid() {
        let b = Block {
            base: DEDICATED_FIRST + 5 * BLOCK_SIZE,
        };
        let run = b.run_user();
        assert_eq!(Block::of(run), Some(b));
        assert_eq!(task_user(run, 0, false).uid, run.uid + 2);
        assert_eq!(task_user(run, 0, false).gid, run.uid + 2);
        assert_ne!(task_user(run, 0, false), task_user(run, 1, false));
        assert_eq!(task_user(run, 3, true), b.shared_caches_user());
        assert!(b.contains(task_user(run, 70_000, false).uid));
        assert_eq!(verifier_user(Some(run)), Some(run));
        assert_eq!(verifier_user(None), None);
        let gate = gate_user(Some(run)).expect("gate");
        assert!(b.contains(gate.uid));
        assert!((0..70_000).all(|i| task_user(run, i, false) != gate));
        assert_eq!(gate_user(Some(NOBODY)), Some(NOBODY));
        assert_eq!(task_user(NOBODY, 7, false), NOBODY);
        assert!(Block::of(NOBODY).is_none());
        assert!(Block::of(task_user(run, 0, false)).is_none());
        assert_eq!(max_procs(NOBODY), None);
        assert!(max_procs(task_user(run, 0, false)).is_some());
    }

    #[test]
    fn a_chosen_block_is_free() {
        let Some(b) = choose_block() else {
            return; // a user namespace that maps too few uids
        };
        assert!(b.base >= DEDICATED_FIRST && b.base % BLOCK_SIZE == 0);
        assert!(b.base + BLOCK_SIZE <= DEDICATED_END);
        assert!(!used_ids().iter().any(|id| b.contains(*id)));
        assert!(nix::unistd::User::from_uid(Uid::from_raw(b.base))
            .expect("lookup")
            .is_none());
    }

    #[test]
    fn hand_over_and_keep_strip_setuid_setgid_and_open_modes() {
        let d = tempfile::tempdir().expect("tmp");
        let top = d.path().join("ws");
        std::fs::create_dir_all(top.join("open/sub")).expect("mkdir");
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        for (name, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("ww", 0o666)] {
            std::fs::write(top.join(name), "x").expect("write");
            set(&top.join(name), mode);
        }
        set(&top.join("open"), 0o1777);
        set(&top.join("open/sub"), 0o2775);
        set(&top, 0o755);
        let mode = |p: &str| std::fs::metadata(top.join(p)).expect("meta").mode() & 0o7777;
        let check = || {
            assert_eq!(mode("suid"), 0o755);
            assert_eq!(mode("sgid"), 0o755);
            assert_eq!(mode("ww"), 0o664);
            assert_eq!(mode("open"), 0o1775);
            assert_eq!(mode("open/sub"), 0o775);
            assert_eq!(mode(""), 0o700);
        };
        if is_root() {
            hand_over(&top, NOBODY).expect("hand over");
            check();
            assert_eq!(std::fs::metadata(top.join("suid")).expect("m").uid(), 65534);
            set(&top.join("suid"), 0o4755);
            take_back(&top).expect("take back");
            check();
            assert_eq!(std::fs::metadata(top.join("suid")).expect("m").uid(), 0);
        } else {
            strip_unsafe_modes(&top).expect("strip");
            check();
        }
    }
}
