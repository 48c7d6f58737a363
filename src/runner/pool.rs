/*!
The worktree pool of a `--workspace worktree` run: a finished task's worktree is parked
(renamed into `worktrees/.pool/<n>`, its index beside it) instead of deleted, and the next task
takes it over instead of checking the whole repository out again. At most `--jobs` are parked.

A parked worktree is hostile: its last agent may have left links to outside, files where
folders were, `chmod 000` entries, FIFOs, or a forged `.git`. fanout opens nothing in it but
through descriptors that cannot leave it (the check below).

Each worktree is recorded ([`record`]) whenever it is a fresh checkout (after fanout's checkout
or a reset, before the task's processes run), and the recording travels with it into the pool:
the next reset is then the fast one ([`fast`]), which compares stat data with the recording and
rewrites only what changed, in O(change). Without a recording, or when the fast reset is in
doubt, the full reset below runs.

The full reset back to the next task's start commit runs inside that task's sandbox (the
agent's own Landlock rules and uid: it can write only the worktree and the task's scratch
folder), with git's one-way merge that rewrites only entries whose stat data or content
differ (attributes read from the start commit, never from the worktree), after removing
everything untracked or ignored and every file with more than one link; then it checks that
`git status` shows nothing, and writes the `.git` file (from inside too). Last, fanout checks
every entry against the start tree ([`check`]: content hashed, kind, owner, one link, no
extended attribute; permission bits set to a fresh checkout's). Any failure: the worktree is
deleted and checked out afresh, as without a pool.
*/

mod check;
mod fast;
mod record;
mod tick;

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::git::worktree;
use crate::process::SpawnSpec;

/// What the sandboxed reset runs (`/bin/sh -c`), with `$1` the admin folder, `$2` the start
/// commit, `$3` the index it works on (in the task's scratch folder), `$4` git's absolute path
/// (found by fanout: a `PATH` entry an agent could write never supplies a program here).
const RESET_SCRIPT: &str = r#"set -eu
PATH="${4%/*}:/usr/local/bin:/usr/bin:/bin"
# Attributes come from the start commit: a `.gitattributes` the last agent left in the
# worktree (ignored or untracked) never converts what the reset writes.
export PATH GIT_DIR="$1" GIT_WORK_TREE=. GIT_INDEX_FILE="$3" GIT_ATTR_SOURCE="$2"
unset GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_NAMESPACE GIT_COMMON_DIR
# Rights the last agent took away, given back (find never follows links; a folder is
# opened only after its own rights were mended); FIFOs, sockets and devices removed: git
# does not see them at all; files with another link (to a cache, to a twin) removed: their
# inode is shared, whatever their stat data says, so git writes them anew.
find . \( -type d ! -perm -u=rwx -exec chmod u+rwx {} \; \) -o \
       \( -type f ! -perm -u=rw -exec chmod u+rw {} \; \) -o \
       \( ! -type d ! -type f ! -type l -exec rm -f {} + \)
find . ! -type d -links +1 -exec rm -f {} +
rm -rf .git
git clean -ffdxq
git read-tree --reset -u "$2"
git clean -ffdxq
# Submodule folders are not reset by git: such a repository is not pooled.
if git ls-files --stage | grep -q '^160000'; then exit 17; fi
left=$(git status --porcelain --ignored --untracked-files=all
       find . -path ./.git -prune -o ! -type d ! -type f ! -type l -print)
if [ -n "$left" ]; then printf 'left after the reset:\n%s\n' "$left" >&2; exit 18; fi
printf 'gitdir: %s\n' "$1" > .git
"#;

/// How the outcome names the reset's exit when the repository has submodules.
const HAS_SUBMODULES: &str = "(exit code 17)";

/// One reset: the worktree `wt` taken over (`taken`), registered as `admin`, brought to
/// `start` with the task's sandbox (`spec`) and scratch folder; its output goes to `log`.
#[derive(Clone, Copy)]
pub(crate) struct ResetJob<'a> {
    pub spec: &'a SpawnSpec,
    pub taken: &'a Taken,
    pub wt: &'a Path,
    pub admin: &'a Path,
    pub scratch: &'a Path,
    pub start: git2::Oid,
    pub log: &'a Path,
}

/// Why a reset did not work.
pub(crate) enum ResetError {
    /// The start commit has submodules, or its checkout converts content (attributes,
    /// line-ending settings): not pooled (nothing to warn about).
    NotPooled,
    Failed(String),
}

/// The run's parked worktrees.
pub(crate) struct Pool {
    dir: PathBuf,
    /// git's absolute path (`None`: no git, no pool).
    git: Option<PathBuf>,
    enabled: AtomicBool,
    capacity: usize,
    parked: Mutex<Vec<(PathBuf, Option<Recorded>)>>,
    /// Worktrees in use, as recorded when they were last a fresh checkout, by folder name
    /// (they all live in the run's worktrees folder, reached through links or not).
    recorded: Mutex<HashMap<std::ffi::OsString, Recorded>>,
    next: AtomicUsize,
    reused: AtomicUsize,
}

/// A parked worktree taken over by a task: the index it had, to reset from, and what it was
/// when last a fresh checkout (`None`: never recorded; the full reset runs).
pub(crate) struct Taken {
    pub index: PathBuf,
    pub recorded: Option<Recorded>,
}

pub(crate) use record::Recorded;

impl Pool {
    /// `dir` is emptied first: worktrees parked by an interrupted attempt of this run are
    /// removed, never reused. Without `git` on `PATH` the pool is off.
    pub fn new(dir: PathBuf, enabled: bool, capacity: usize) -> Pool {
        let _ = worktree::remove_tree(&dir);
        let git = enabled
            .then(|| crate::which::find_program("git").ok())
            .flatten()
            .and_then(|p| p.canonicalize().ok());
        Pool {
            dir,
            enabled: AtomicBool::new(git.is_some() && capacity > 0),
            git,
            capacity,
            parked: Mutex::new(Vec::new()),
            recorded: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            reused: AtomicUsize::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// How many tasks ran in a reused worktree.
    pub fn reused(&self) -> usize {
        self.reused.load(Ordering::Relaxed)
    }

    /// Keeps the recording of the worktree at `wt` until it is parked.
    fn remember(&self, wt: &Path, recorded: Recorded) {
        let mut map = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key(wt), recorded);
    }

    /// Drops what was recorded of a worktree at `wt` (it is being replaced).
    pub fn forget(&self, wt: &Path) {
        let mut map = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&key(wt));
    }

    /// Parks the worktree `wt` with its index `index` (moved out of its admin folder): `false`
    /// when the pool is off or full, or a move failed (then the caller removes it).
    pub fn park(&self, wt: &Path, index: &Path) -> bool {
        if !self.enabled() {
            return false;
        }
        let recorded = {
            let mut map = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&key(wt))
        };
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if parked.len() >= self.capacity || !index.is_file() {
            return false;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = self.dir.join(n.to_string());
        // Owner-only: parked worktrees (their names, their files) are nobody else's business.
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .and_then(|()| {
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            });
        if made.is_err() || std::fs::rename(wt, &slot).is_err() {
            return false;
        }
        if std::fs::rename(index, slot.with_extension("index")).is_err() {
            let _ = std::fs::rename(&slot, wt);
            return false;
        }
        parked.push((slot, recorded));
        true
    }

    /// Moves a parked worktree to `wt` (which must not exist), or `None`.
    pub fn take(&self, wt: &Path) -> Option<Taken> {
        if !self.enabled() {
            return None;
        }
        let (slot, recorded) = self
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()?;
        let index = slot.with_extension("index");
        if std::fs::rename(&slot, wt).is_err() {
            let _ = worktree::remove_tree(&slot);
            let _ = std::fs::remove_file(&index);
            return None;
        }
        Some(Taken { index, recorded })
    }

    /// Turns the pool off for the rest of the run and removes what is parked.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
        self.clear();
    }

    /// Removes every parked worktree (end of run): all of them live in the pool's folder.
    pub fn clear(&self) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.clear();
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let _ = worktree::remove_tree(&self.dir);
    }

    /// Brings the taken-over worktree to its task's start commit inside the task's sandbox,
    /// then installs the index the reset wrote. On `Err` the pool is off for the rest of the
    /// run (what failed once would fail again, and a fresh checkout is always right); the
    /// caller checks this worktree out afresh.
    /// `recorded`: what the worktree was when last a fresh checkout; with it the fast reset
    /// ([`fast`]) runs first, and the full one only when it is in doubt.
    pub async fn reset(
        &self,
        job: ResetJob<'_>,
        recorded: Option<Recorded>,
    ) -> Result<(), ResetError> {
        if recorded.is_none() {
            test_note(job.wt, "full: nothing recorded");
        }
        if let Some(recorded) = recorded.filter(|_| fast_reset_allowed()) {
            match self.fast_reset(&job, recorded).await {
                Ok(said) => {
                    let _ = std::fs::remove_file(&job.taken.index);
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    test_note(job.wt, &format!("fast: {said}"));
                    return Ok(());
                }
                Err(why) => {
                    test_note(job.wt, &format!("full: {why}"));
                    note(
                        job.log,
                        &format!("fanout: the fast reset was not used: {why}\n"),
                    );
                }
            }
        }
        let out = self.run_reset(&job).await;
        if out.is_err() {
            self.disable();
        }
        out
    }

    /// The fast reset: only what changed since the recording is rewritten (see [`fast`]); the
    /// result recorded, the clock waited for, the index installed. `Err` says why not.
    async fn fast_reset(&self, job: &ResetJob<'_>, recorded: Recorded) -> Result<String, String> {
        let (wt, admin, start) = (job.wt.to_path_buf(), job.admin.to_path_buf(), job.start);
        let run_as = job.spec.policy.run_as.map(|r| (r.uid, r.gid));
        let done = tokio::task::spawn_blocking(move || {
            let repo = open_common(&admin)?;
            let parent = wt.parent().unwrap_or(&wt).to_path_buf();
            let git_file = check::git_file_content(&admin);
            let fast_job = fast::Job {
                wt: &wt,
                repo: &repo,
                fresh: check::Fresh::for_parent(&parent, run_as),
                chown: run_as.is_some(),
                git_file: &git_file,
            };
            let t = std::time::Instant::now();
            let (recorded, counts) = fast::reset(&fast_job, recorded, start).map_err(|d| d.0)?;
            let reset_ms = t.elapsed().as_millis();
            tick::wait_past(&parent, recorded.newest)?;
            let wait_ms = t.elapsed().as_millis() - reset_ms;
            recorded.write_index(&admin.join("index"))?;
            let said = format!(
                "{counts:?}; {reset_ms} ms, clock {wait_ms} ms, index {} ms",
                t.elapsed().as_millis() - reset_ms - wait_ms
            );
            Ok::<_, String>((recorded, said))
        })
        .await
        .map_err(|e| e.to_string())??;
        self.remember(job.wt, done.0);
        Ok(done.1)
    }

    /// Records a worktree fanout just checked out afresh at `start` (given to the task's
    /// uid first when fanout is root), so its next reset can be the fast one. Nothing is
    /// recorded when that cannot be done (its next reset is then the full one).
    pub async fn record_fresh(
        &self,
        wt: &Path,
        admin: &Path,
        start: git2::Oid,
        run_as: Option<crate::sandbox::RunAs>,
    ) {
        if !self.enabled() {
            return;
        }
        let (w, a) = (wt.to_path_buf(), admin.to_path_buf());
        let recorded = tokio::task::spawn_blocking(move || {
            if let Some(who) = run_as {
                crate::sandbox::user::hand_over(&w, who).map_err(|e| e.to_string())?;
            }
            let listing = start_listing(&a, start).map_err(|_| "not pooled".to_string())?;
            record_settled(&w, start, &listing)
        })
        .await;
        match recorded {
            Ok(Ok(r)) => self.remember(wt, r),
            Ok(Err(e)) => {
                test_note(wt, &format!("not recorded: {e}"));
                self.forget(wt)
            }
            Err(_) => self.forget(wt),
        }
    }

    async fn run_reset(&self, job: &ResetJob<'_>) -> Result<(), ResetError> {
        let ResetJob {
            spec,
            taken,
            wt,
            admin,
            scratch,
            start,
            log,
        } = *job;
        let Some(git) = &self.git else {
            return Err(ResetError::Failed("no git".into()));
        };
        let listing = {
            let admin = admin.to_path_buf();
            blocking(move || start_listing(&admin, start)).await?
        };
        let work_index = scratch.join("reset-index");
        let copied = std::fs::copy(&taken.index, &work_index);
        let _ = std::fs::remove_file(&taken.index);
        copied.map_err(|e| ResetError::Failed(format!("cannot copy the parked index: {e}")))?;
        let mut spec = spec.clone();
        spec.cwd = wt.to_path_buf();
        spec.stderr_log = spec.stderr_log.with_extension("reset-stderr.log");
        spec.status_file = spec.status_file.with_extension("reset.json");
        let script = reset_script();
        let argv: Vec<String> = [
            "/bin/sh",
            "-c",
            &script,
            "fanout-reset",
            &admin.display().to_string(),
            &start.to_string(),
            &work_index.display().to_string(),
            &git.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out =
            crate::verify::command::run_logged(&spec, &argv, Duration::from_secs(600), Some(log))
                .await;
        let installed = if out.passed {
            Some(match self.check(job, listing).await {
                Ok(listing) => {
                    let installed = install_index(&work_index, admin);
                    if installed.is_ok() {
                        self.record_checked(wt, start, listing).await;
                    }
                    installed
                }
                Err(e) => Err(e),
            })
        } else {
            None
        };
        let _ = std::fs::remove_file(&work_index);
        match installed {
            Some(Ok(())) => {
                let _ = std::fs::remove_file(log);
                let _ = std::fs::remove_file(&spec.stderr_log);
                let _ = std::fs::remove_file(&spec.status_file);
                self.reused.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Some(Err(e)) => Err(ResetError::Failed(e)),
            None if out.summary.contains(HAS_SUBMODULES) => Err(ResetError::NotPooled),
            None => Err(ResetError::Failed(format!(
                "the reset failed ({}); log {}",
                out.summary,
                log.display()
            ))),
        }
    }
}

/// The name the pool keeps a worktree's recording under.
fn key(wt: &Path) -> std::ffi::OsString {
    wt.file_name().unwrap_or(wt.as_os_str()).to_os_string()
}

/// Records the worktree `wt` (a fresh checkout of `start`) and waits for the file system's
/// clock to pass the recording (see [`tick`]).
fn record_settled(
    wt: &Path,
    start: git2::Oid,
    listing: &crate::git::checkout::Listing,
) -> Result<Recorded, String> {
    let recorded = record::record(wt, start, listing)?;
    tick::wait_past(wt.parent().unwrap_or(wt), recorded.newest)?;
    Ok(recorded)
}

/// The repository of the worktree registered at `admin`, opened from its common folder.
fn open_common(admin: &Path) -> Result<git2::Repository, String> {
    let common = check::common_dir_of(admin).ok_or("no repository")?;
    git2::Repository::open_ext(
        &common,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(|e| format!("cannot open the repository: {e}"))
}

/// Appends `line` to the reset's log.
fn note(log: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// `FANOUT_WORKTREE_RESET=full` makes every reset the full one (for comparison); with the
/// `test-hooks` feature, so does `FANOUT_TEST_FAIL_RESET=1` (its failure is the full reset's).
fn fast_reset_allowed() -> bool {
    let full = std::env::var("FANOUT_WORKTREE_RESET").is_ok_and(|v| v == "full");
    #[cfg(feature = "test-hooks")]
    let full = full || std::env::var("FANOUT_TEST_FAIL_RESET").is_ok_and(|v| v == "1");
    !full
}

/// TEST-ONLY (the `test-hooks` feature): `FANOUT_TEST_RESET_NOTES=<file>` gets one line per
/// reset, `<worktree name> fast: <counts and times>` or `<worktree name> full: <why>`, so
/// tests see which ran.
#[cfg(feature = "test-hooks")]
fn test_note(wt: &Path, what: &str) {
    if let Some(path) = std::env::var_os("FANOUT_TEST_RESET_NOTES") {
        let name = wt.file_name().unwrap_or_default().to_string_lossy();
        note(Path::new(&path), &format!("{name} {what}\n"));
    }
}

#[cfg(not(feature = "test-hooks"))]
fn test_note(_: &Path, _: &str) {}

/// Runs `f` on tokio's blocking threads (file system walks, git object reads).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ResetError> + Send + 'static,
) -> Result<T, ResetError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ResetError::Failed(format!(
            "a step of the reset stopped: {e}"
        )))
    })
}

/// The start commit's plain checkout, which the reset must reproduce; `NotPooled` when git
/// would not reset it faithfully (submodules) or a fresh checkout converts content (then the
/// bytes a reused worktree must hold are not the blobs').
fn start_listing(
    admin: &Path,
    start: git2::Oid,
) -> Result<crate::git::checkout::Listing, ResetError> {
    let failed = |e: &dyn std::fmt::Display| {
        ResetError::Failed(format!("cannot list the start commit: {e}"))
    };
    let common = check::common_dir_of(admin).ok_or_else(|| failed(&"no repository"))?;
    let repo = git2::Repository::open_ext(
        &common,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(|e| failed(&e))?;
    match crate::git::checkout::plain_listing(&repo, start).map_err(|e| failed(&e))? {
        Some(l) if !l.items.iter().any(|i| i.mode == 0o160000) => Ok(l),
        _ => Err(ResetError::NotPooled),
    }
}

impl Pool {
    /// fanout's own check of the reset worktree against the start commit (see [`check`]).
    async fn check(
        &self,
        job: &ResetJob<'_>,
        listing: crate::git::checkout::Listing,
    ) -> Result<crate::git::checkout::Listing, String> {
        let parent = job.wt.parent().unwrap_or(job.wt);
        let run_as = job.spec.policy.run_as.map(|r| (r.uid, r.gid));
        let fresh = check::Fresh::for_parent(parent, run_as);
        let (wt, git_file) = (job.wt.to_path_buf(), check::git_file_content(job.admin));
        tokio::task::spawn_blocking(move || {
            check::check_worktree(&wt, &listing, &git_file, fresh).map(|_| listing)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| format!("the reused worktree differs from a fresh checkout: {e}"))
    }

    /// After the full reset and its check: the worktree is a fresh checkout, recorded so the
    /// next reset can be the fast one.
    async fn record_checked(
        &self,
        wt: &Path,
        start: git2::Oid,
        listing: crate::git::checkout::Listing,
    ) {
        let w = wt.to_path_buf();
        match tokio::task::spawn_blocking(move || record_settled(&w, start, &listing)).await {
            Ok(Ok(r)) => self.remember(wt, r),
            _ => self.forget(wt),
        }
    }
}

/// Without the `test-hooks` feature (every release build) the reset is always the real one.
#[cfg(not(feature = "test-hooks"))]
fn reset_script() -> String {
    RESET_SCRIPT.to_string()
}

/// TEST-ONLY (the `test-hooks` feature): `FANOUT_TEST_FAIL_RESET=1` makes every reset fail after
/// it ran, so tests see the fresh checkout that follows.
#[cfg(feature = "test-hooks")]
fn reset_script() -> String {
    match std::env::var("FANOUT_TEST_FAIL_RESET") {
        Ok(v) if v == "1" => format!("{RESET_SCRIPT}\necho 'failing on purpose' >&2; exit 1\n"),
        _ => RESET_SCRIPT.to_string(),
    }
}

/// The index the sandboxed git wrote becomes the worktree's (a regular file, copied: fanout
/// never follows a link the sandbox could have left).
fn install_index(work_index: &Path, admin: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(work_index)
        .map_err(|e| format!("the reset wrote no index: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("the reset's index is not a regular file".into());
    }
    std::fs::copy(work_index, admin.join("index"))
        .map(|_| ())
        .map_err(|e| format!("cannot install the reset's index: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worktree_with_index(root: &Path, name: &str) -> (PathBuf, PathBuf) {
        let wt = root.join(name);
        std::fs::create_dir_all(wt.join("sub")).unwrap();
        std::fs::write(wt.join("sub/f"), name).unwrap();
        let index = root.join(format!("{name}.admin-index"));
        std::fs::write(&index, "index").unwrap();
        (wt, index)
    }

    #[test]
    fn parks_up_to_capacity_and_hands_out_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(dir.path().join(".pool"), true, 2);
        let (a, ai) = worktree_with_index(dir.path(), "a");
        let (b, bi) = worktree_with_index(dir.path(), "b");
        let (c, ci) = worktree_with_index(dir.path(), "c");
        assert!(pool.park(&a, &ai) && pool.park(&b, &bi));
        // Owner-only: parked worktrees are nobody else's to list or enter.
        let mode = std::fs::metadata(dir.path().join(".pool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!pool.park(&c, &ci), "full");
        assert!(
            c.is_dir() && ci.is_file(),
            "a worktree not parked stays where it was"
        );
        assert!(!a.exists() && !ai.exists());
        let t1 = pool.take(&dir.path().join("t1")).expect("one");
        let t2 = pool.take(&dir.path().join("t2")).expect("two");
        assert!(pool.take(&dir.path().join("t3")).is_none());
        assert!(t1.index.is_file() && t2.index.is_file());
        let mut seen = [
            std::fs::read_to_string(dir.path().join("t1/sub/f")).unwrap(),
            std::fs::read_to_string(dir.path().join("t2/sub/f")).unwrap(),
        ];
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
    }

    #[test]
    fn a_worktree_without_index_or_a_disabled_pool_is_not_parked() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(dir.path().join(".pool"), true, 4);
        let (a, _) = worktree_with_index(dir.path(), "a");
        assert!(!pool.park(&a, &dir.path().join("missing-index")));
        let (b, bi) = worktree_with_index(dir.path(), "b");
        assert!(pool.park(&b, &bi));
        pool.disable();
        assert!(
            !dir.path().join(".pool").exists(),
            "parked worktrees removed"
        );
        let (c, ci) = worktree_with_index(dir.path(), "c");
        assert!(!pool.park(&c, &ci));
        assert!(pool.take(&dir.path().join("t")).is_none());
        let off = Pool::new(dir.path().join(".pool2"), false, 4);
        assert!(!off.park(&c, &ci) && c.is_dir());
    }

    #[test]
    fn leftovers_of_an_earlier_attempt_are_removed_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(".pool/0");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(dir.path().join(".pool/0.index"), "i").unwrap();
        let pool = Pool::new(dir.path().join(".pool"), true, 2);
        assert!(!old.exists());
        assert!(pool.take(&dir.path().join("t")).is_none());
    }
}
