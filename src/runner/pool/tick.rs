/*!
Waiting for the file system's clock to pass a recording. Change times come from a coarse clock
(one tick: a few milliseconds; a second on file systems that keep whole seconds): a change made
within the tick of a recording could carry the very change time recorded. So before any
process of the task may run, fanout waits until a change made now gets a later change time
than every recorded one — measured on a scratch file of the same file system (an unnamed one
in the worktree's parent folder, which only fanout writes), so the file system's own
granularity counts.
*/

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::stat::{fstat, futimens};
use nix::sys::time::TimeSpec;

/// The longest wait: a file system whose clock does not move in this time is not trusted.
const LONGEST: Duration = Duration::from_secs(3);

/// Returns once a change made in `dir`'s file system gets a change time later than `newest`;
/// `Err` when that cannot be told (then nothing recorded may be trusted).
pub fn wait_past(dir: &Path, newest: (i64, i64)) -> Result<(), String> {
    let probe = tempfile::tempfile_in(dir).map_err(|e| format!("clock probe: {e}"))?;
    let started = Instant::now();
    loop {
        // Setting the times sets the change time to the file system's now.
        futimens(probe.as_fd(), &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW)
            .map_err(|e| format!("clock probe: {e}"))?;
        let st = fstat(probe.as_fd()).map_err(|e| format!("clock probe: {e}"))?;
        if (st.st_ctime, st.st_ctime_nsec) > newest {
            return Ok(());
        }
        if started.elapsed() > LONGEST {
            return Err("the file system's clock did not move".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn returns_after_a_change_just_made() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let m = std::fs::metadata(dir.path().join("f")).unwrap();
        let newest = (m.ctime(), m.ctime_nsec());
        wait_past(dir.path(), newest).unwrap();
        std::fs::write(dir.path().join("f"), "y").unwrap();
        let m = std::fs::metadata(dir.path().join("f")).unwrap();
        assert!((m.ctime(), m.ctime_nsec()) > newest);
    }
}
