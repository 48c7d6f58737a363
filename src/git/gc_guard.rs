/*!
Keeps `git gc` off the repository while a run writes objects.

A run writes objects long before anything references them (a task's blobs while it is
collected, the integration's packs until `fanout/<run>/merged` is written), and even an object
referenced at once can go: `git gc --prune=now` decides what is reachable first and deletes
unreachable loose objects and redundant packs afterwards, so an object written in between is
lost although its branch exists a millisecond later (measured: a task branch pointing at a
pruned commit). Git's own protection, the two-week grace period, is exactly what `--prune=now`
turns off.

Git has a lock for this: `gc.pid` in the git folder, `"<pid> <hostname>"`. `git gc` (and
`git maintenance`'s gc task) refuses to start while that names a live process of this host and
is younger than 12 hours ("gc is already running … (use --force if not)"). fanout holds it for
the whole run: written when the run starts (after waiting a bounded time for a gc that is
running), rewritten by a watcher when something removed it or when another fanout run that held
it ended, its time refreshed so a long run never looks stale, and removed at the end only when it
still names fanout. `git gc --force`, or `git prune`/`git repack` run by hand, are the user's
explicit choice and not stopped.
*/

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the watcher checks the lock (and how soon after a removal it is back).
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// Git treats a `gc.pid` older than 12 hours as stale; refresh well before.
const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// How long a run waits for a `git gc` that is running when it starts.
const WAIT_FOR_GC: Duration = Duration::from_secs(120);

/// Holds `gc.pid` until dropped.
pub struct GcGuard {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

/// What `gc.pid` says: a live process of this host (git's own test), or nothing that counts.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    Us,
    Other(u32),
    Nobody,
}

/// The host name git writes (`gethostname`, the same as the kernel's node name).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// Reads `gc.pid` the way git does: `<pid> <host>`, counted when the host is another one or the
/// process lives, and the file is younger than 12 hours.
fn holder(path: &Path, host: &str) -> Holder {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Holder::Nobody;
    };
    let fresh = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_none_or(|age| age < Duration::from_secs(12 * 3600));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut words = text.split_whitespace();
    let (Some(pid), Some(their_host)) = (
        words.next().and_then(|p| p.parse::<u32>().ok()),
        words.next(),
    ) else {
        return Holder::Nobody;
    };
    if !fresh {
        Holder::Nobody
    } else if pid == std::process::id() && their_host == host {
        Holder::Us
    } else if their_host != host || alive(pid) {
        Holder::Other(pid)
    } else {
        Holder::Nobody
    }
}

/// What an attempt to take the lock found.
#[derive(Debug, PartialEq, Eq)]
enum Take {
    /// `gc.pid` names this process now.
    Taken,
    /// A live process holds it (a gc, or another fanout run).
    HeldBy(u32),
    /// Somebody holds `gc.pid.lock` right now (a gc deciding, as we would): try again.
    Busy,
}

/// Takes `gc.pid` the way git does: `gc.pid.lock` created exclusively first, and only while
/// holding it is `gc.pid` read and, when nobody live holds it, replaced by a rename. Deciding
/// before taking `gc.pid.lock` would let a gc take the lock in between and have its `gc.pid`
/// overwritten: it would run on unseen, and remove the file when it ends.
fn take(path: &Path, host: &str) -> Take {
    let lock = path.with_extension("pid.lock");
    let Ok(mut file) = create_lock_file(&lock) else {
        return Take::Busy;
    };
    if let Holder::Other(pid) = holder(path, host) {
        let _ = std::fs::remove_file(&lock);
        return Take::HeldBy(pid);
    }
    let ok = writeln!(file, "{} {host}", std::process::id()).is_ok()
        && std::fs::rename(&lock, path).is_ok();
    if ok {
        Take::Taken
    } else {
        let _ = std::fs::remove_file(&lock);
        Take::Busy
    }
}

/// Creates `gc.pid.lock` exclusively, as git does: whoever creates it decides.
fn create_lock_file(lock: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(lock)
}

/// Removes `gc.pid` if it still names this process, deciding under `gc.pid.lock` as [`take`]
/// does. A lock file that stays busy leaves `gc.pid` naming a process that is about to end,
/// which git treats as nobody's.
fn release(path: &Path, host: &str) {
    let lock = path.with_extension("pid.lock");
    for _ in 0..20 {
        if create_lock_file(&lock).is_ok() {
            if holder(path, host) == Holder::Us {
                let _ = std::fs::remove_file(path);
            }
            let _ = std::fs::remove_file(&lock);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl GcGuard {
    /// Takes the lock in `git_dir` (the repository's common git folder). `warn` is told once
    /// when a running gc did not end in time (the run goes on: refusing would help nobody).
    pub fn acquire(git_dir: &Path, warn: impl FnOnce(&str)) -> GcGuard {
        let path = git_dir.join("gc.pid");
        let host = hostname();
        let deadline = Instant::now() + WAIT_FOR_GC;
        // Until the lock names fanout: a gc that holds it (or takes it first, as one run in a
        // loop would) is waited for; a lock file being written by git is tried again.
        loop {
            let waiting_for = match take(&path, &host) {
                Take::Taken => break,
                Take::HeldBy(pid) if is_fanout(pid) => break,
                Take::HeldBy(pid) => Some(pid),
                Take::Busy => None,
            };
            if Instant::now() >= deadline {
                warn(&match waiting_for {
                    Some(pid) => format!(
                        "`git gc` (pid {pid}) is still running on this repository; objects of this run may be pruned by it"
                    ),
                    None => format!(
                        "cannot take git's gc lock ({} exists); a concurrent `git gc` may prune objects of this run",
                        path.with_extension("pid.lock").display()
                    ),
                });
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::Builder::new()
                .name("fanout-gc-guard".into())
                .spawn(move || watch(&path, &host, &stop))
                .ok()
        };
        GcGuard {
            path,
            stop,
            watcher,
        }
    }
}

/// Takes the lock back unless a live process holds it (a gc, or another fanout run that keeps
/// it for both). Checked first without the lock file: most checks find it ours.
fn claim(path: &Path, host: &str) {
    if holder(path, host) == Holder::Nobody {
        let _ = take(path, host);
    }
}

fn watch(path: &Path, host: &str, stop: &AtomicBool) {
    let mut refreshed = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(WATCH_EVERY);
        claim(path, host);
        if refreshed.elapsed() >= REFRESH_EVERY {
            if holder(path, host) == Holder::Us {
                let _ = take(path, host);
            }
            refreshed = Instant::now();
        }
    }
}

/// Whether `pid` is a fanout process (another run holding the lock for both of us).
fn is_fanout(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|exe| {
            exe.file_name()
                .map(|n| n.to_string_lossy().starts_with("fanout"))
        })
        .unwrap_or(false)
}

impl Drop for GcGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        release(&self.path, &hostname());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_lock_and_gives_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gc.pid");
        {
            let _g = GcGuard::acquire(dir.path(), |w| panic!("{w}"));
            assert_eq!(holder(&path, &hostname()), Holder::Us);
            // Removed behind its back: back within the watch period.
            std::fs::remove_file(&path).expect("rm");
            std::thread::sleep(WATCH_EVERY * 3);
            assert_eq!(holder(&path, &hostname()), Holder::Us);
        }
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_or_foreign_lock_is_handled_like_git() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gc.pid");
        let host = hostname();
        // A dead pid of this host: nobody.
        std::fs::write(&path, format!("{} {host}\n", u32::MAX - 1)).expect("write");
        assert_eq!(holder(&path, &host), Holder::Nobody);
        // Another host: counts, whatever the pid.
        std::fs::write(&path, "1 elsewhere\n").expect("write");
        assert_eq!(holder(&path, &host), Holder::Other(1));
        // Garbage: nobody.
        std::fs::write(&path, "not a lock").expect("write");
        assert_eq!(holder(&path, &host), Holder::Nobody);
    }

    #[test]
    fn a_lock_it_did_not_write_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gc.pid");
        {
            let _g = GcGuard::acquire(dir.path(), |w| panic!("{w}"));
            // Another host's gc took it over (as `git gc --force` would): not ours to remove.
            std::fs::write(&path, "7 elsewhere\n").expect("write");
        }
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "7 elsewhere\n"
        );
    }

    #[test]
    fn a_live_holder_or_a_busy_lock_file_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gc.pid");
        let host = hostname();
        // A live gc of this host (pid 1 always lives): left alone, its pid told.
        std::fs::write(&path, format!("1 {host}\n")).expect("write");
        assert_eq!(take(&path, &host), Take::HeldBy(1));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("1 {host}\n")
        );
        assert!(
            !path.with_extension("pid.lock").exists(),
            "our lock file is gone"
        );
        // A gc deciding right now (it holds gc.pid.lock), gc.pid absent: not taken over.
        std::fs::remove_file(&path).expect("rm");
        std::fs::write(path.with_extension("pid.lock"), "").expect("write");
        assert_eq!(take(&path, &host), Take::Busy);
        assert!(!path.exists());
        // Once it gave up the lock file: taken, naming us.
        std::fs::remove_file(path.with_extension("pid.lock")).expect("rm");
        assert_eq!(take(&path, &host), Take::Taken);
        assert_eq!(holder(&path, &host), Holder::Us);
        release(&path, &host);
        assert!(!path.exists());
    }
}
