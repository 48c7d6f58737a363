/*!
Starting and stopping agent processes.

Every agent (and verify command) runs under fanout's sandbox supervisor (`fanout sandbox-exec`),
in its own process group; it sets `PR_SET_PDEATHSIG` on itself so that it is told to stop if
fanout dies.
Stopping is: SIGTERM to the supervisor (which terminates the whole tree, orphans included),
a grace period, then SIGKILL to the process group.

A supervisor is never SIGKILLed while it still runs its tree: its SIGKILL would orphan the
agent's children to init (it is their subreaper). A process dropped before it was waited for
(a future cancelled by a stop request) gets SIGTERM instead, stays in a registry of live
supervisors, and [`stop_all`] waits — bounded — until every one of them finished cleaning up.
*/

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::sandbox::{self, Policy};

/// Everything needed to start one confined process.
#[derive(Clone, Debug)]
pub struct SpawnSpec {
    /// fanout's own executable, which holds the sandbox supervisor.
    pub self_exe: PathBuf,
    pub policy: Policy,
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// Variables set on top of fanout's environment.
    pub env: BTreeMap<String, String>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<String>,
    /// Where the child's stderr goes (appended).
    pub stderr_log: PathBuf,
    /// Where the supervisor writes the sandbox enforcement report.
    pub status_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open log file {0}")]
    Log(String, #[source] std::io::Error),
    #[error("cannot give the workspace {path} to uid {uid}")]
    HandOver {
        path: String,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running, supervised child with piped stdin/stdout.
pub struct AgentProcess {
    pub child: Child,
    /// Copies the child's stderr into its log, secrets masked; done when the pipe closes.
    stderr_copier: Option<tokio::task::JoinHandle<()>>,
    pub pid: i32,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr_log: PathBuf,
    pub status_file: PathBuf,
}

impl AgentProcess {
    pub fn spawn(spec: &SpawnSpec) -> Result<AgentProcess, SpawnError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.stderr_log)
            .map_err(|e| SpawnError::Log(spec.stderr_log.display().to_string(), e))?;
        let _ = std::fs::remove_file(&spec.status_file);
        hand_over_workspace(spec)?;
        let args: Vec<OsString> = spec.args.iter().map(OsString::from).collect();
        let mut std_cmd = sandbox::supervised_command(
            &spec.self_exe,
            &spec.policy,
            &spec.status_file,
            spec.program.as_ref(),
            &args,
        );
        std_cmd
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in &spec.env_remove {
            std_cmd.env_remove(k);
        }
        if let Some(who) = spec.policy.run_as {
            // Not the invoker's names: a dedicated uid has no passwd entry to look them up in.
            let name = sandbox::user::login_name(who);
            std_cmd.env("USER", &name).env("LOGNAME", &name);
        }
        std_cmd.envs(&spec.env);
        // The supervisor sets its own `PR_SET_PDEATHSIG` (and checks that this process is still
        // its parent): no `pre_exec` here, so the standard library starts it with `posix_spawn`
        // (vfork) instead of forking this whole process, whose page tables grow with the run.
        std_cmd.env(sandbox::PARENT_PID_ENV, std::process::id().to_string());
        let mut cmd = tokio::process::Command::from(std_cmd);
        // No kill_on_drop: SIGKILL would orphan the agent's tree; `Drop` sends SIGTERM instead.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|source| SpawnError::Start {
            program: spec.program.clone(),
            source,
        })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        register(pid, &spec.stderr_log);
        let stderr_copier = child
            .stderr
            .take()
            .map(|err| tokio::spawn(copy_stderr(err, tokio::fs::File::from_std(log))));
        Ok(AgentProcess {
            stderr_copier,
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            pid,
            stderr_log: spec.stderr_log.clone(),
            status_file: spec.status_file.clone(),
        })
    }

    /// Stops the whole tree: SIGTERM to the supervisor, `grace`, then SIGKILL to the group.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.kill_group();
            unregister(self.pid);
            self.finish_log().await;
            return Some(status);
        }
        if self.pid > 0 {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        }
        // The supervisor itself waits a grace period for its tree; give it that plus a margin.
        let status =
            match tokio::time::timeout(grace + Duration::from_secs(3), self.child.wait()).await {
                Ok(Ok(status)) => {
                    self.kill_group();
                    Some(status)
                }
                _ => {
                    self.kill_group();
                    self.child.wait().await.ok()
                }
            };
        unregister(self.pid);
        self.finish_log().await;
        status
    }

    /// Waits until the stderr log holds everything the pipe gave (its end is written when
    /// the pipe closes): a finished task's log is whole when its report is out. Bounded: a
    /// writer that leaked out of the tree must not hold fanout.
    async fn finish_log(&mut self) {
        if let Some(copier) = self.stderr_copier.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), copier).await;
        }
    }

    fn kill_group(&self) {
        if self.pid > 0 {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    /// Waits for exit until `deadline`; `None` on timeout.
    pub async fn wait_until(&mut self, deadline: tokio::time::Instant) -> Option<ExitStatus> {
        let status = tokio::time::timeout_at(deadline, self.child.wait())
            .await
            .ok()?
            .ok()?;
        unregister(self.pid);
        self.finish_log().await;
        Some(status)
    }

    /// The last lines of the child's stderr log, for error messages (after the log caught up).
    pub async fn stderr_tail(&mut self) -> String {
        self.stderr_tail_max(2000).await
    }

    /// The last `max` bytes of the child's stderr log, once the log caught up.
    pub async fn stderr_tail_max(&mut self, max: usize) -> String {
        self.finish_log().await;
        tail_of_file(&self.stderr_log, max)
    }
}

/// When the program runs as another uid (fanout is root), its writable folders become that
/// uid's before every start: fanout created them (and, e.g., CODEX_HOME with `auth.json` 0600)
/// as root. The walk never follows links, so it is safe while the task's processes run.
fn hand_over_workspace(spec: &SpawnSpec) -> Result<(), SpawnError> {
    let Some(who) = spec.policy.run_as else {
        return Ok(());
    };
    for dir in &spec.policy.writable {
        sandbox::user::hand_over(dir, who).map_err(|source| SpawnError::HandOver {
            path: dir.display().to_string(),
            uid: who.uid,
            source,
        })?;
    }
    Ok(())
}

impl Drop for AgentProcess {
    /// A process given up before it ended (its future was cancelled): ask the supervisor to
    /// stop its tree. It stays registered, so [`stop_all`] waits for it.
    fn drop(&mut self) {
        match self.child.try_wait() {
            Ok(Some(_)) => unregister(self.pid),
            _ => signal_registered(self.pid, Signal::SIGTERM),
        }
    }
}

/// A live supervisor: its pidfd, and the stderr log it was started with (which lies in its
/// run's folder, so a run can stop only its own processes).
struct Live {
    fd: OwnedFd,
    log: PathBuf,
}

/// Supervisors started and not yet seen to exit, by pid, each with a pidfd: signals go through
/// the pidfd, so a recycled pid is never hit.
static LIVE: Mutex<Option<HashMap<i32, Live>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<i32, Live>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(pid: i32, log: &Path) {
    if pid <= 0 {
        return;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return; // already gone, or a kernel without pidfds: terminate() still works by pid
    }
    // SAFETY: `fd` is a descriptor we just opened and own.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    live().get_or_insert_with(HashMap::new).insert(
        pid,
        Live {
            fd,
            log: log.to_path_buf(),
        },
    );
}

fn unregister(pid: i32) {
    if let Some(map) = live().as_mut() {
        map.remove(&pid);
    }
}

fn pidfd_signal(fd: &OwnedFd, sig: Signal) {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo, no flags.
    #[allow(unsafe_code)]
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

fn signal_registered(pid: i32, sig: Signal) {
    if let Some(l) = live().as_ref().and_then(|m| m.get(&pid)) {
        pidfd_signal(&l.fd, sig);
    }
}

/// Whether the process behind a pidfd has exited (the pidfd polls readable then).
fn pidfd_exited(fd: &OwnedFd) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Supervisors still running.
pub fn live_supervisors() -> usize {
    live_under(None)
}

/// Supervisors still running whose log lies under `dir` (all of them for `None`).
fn live_under(dir: Option<&Path>) -> usize {
    let mut guard = live();
    let Some(map) = guard.as_mut() else {
        return 0;
    };
    map.retain(|_, l| !pidfd_exited(&l.fd));
    map.values()
        .filter(|l| dir.is_none_or(|d| l.log.starts_with(d)))
        .count()
}

/// Stops every supervisor still running — SIGTERM, so each stops its whole tree — and waits
/// until they are gone, at most `grace` plus a margin; then SIGKILLs what is left. Every way a
/// run ends goes through here, so no agent process outlives fanout.
pub fn stop_all(grace: Duration) {
    stop_matching(None, grace)
}

/// [`stop_all`] for the processes of one run only: those whose stderr log lies under the run's
/// folder `dir`. Several runs in one process (`fanout mcp`) end without stopping each other.
pub fn stop_under(dir: &Path, grace: Duration) {
    stop_matching(Some(dir), grace)
}

fn stop_matching(dir: Option<&Path>, grace: Duration) {
    let mine = |l: &Live| dir.is_none_or(|d| l.log.starts_with(d));
    if live_under(dir) == 0 {
        return;
    }
    if let Some(map) = live().as_ref() {
        for l in map.values().filter(|l| mine(l)) {
            pidfd_signal(&l.fd, Signal::SIGTERM);
        }
    }
    // The supervisor waits `DEFAULT_GRACE` for its tree, then kills it; allow for that.
    let deadline = Instant::now() + grace.max(sandbox::DEFAULT_GRACE) + Duration::from_secs(3);
    while live_under(dir) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(map) = live().as_mut() {
        let left: Vec<i32> = map
            .iter()
            .filter(|(_, l)| mine(l))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in left {
            if let Some(l) = map.remove(&pid) {
                pidfd_signal(&l.fd, Signal::SIGKILL);
            }
        }
    }
}

/// Longest start of a stderr log kept per process; past it only the end is kept.
const MAX_STDERR_LOG: u64 = 32 * 1024 * 1024;
/// How much of the end of a long stderr is kept (error messages quote the end).
const STDERR_TAIL: usize = 1024 * 1024;
/// One read of the pipe at most: large, so a flood of short lines costs few syscalls.
const STDERR_READ: usize = 256 * 1024;
/// One read of the pipe at first: most agents say little on stderr, and each running process
/// holding three buffers of [`STDERR_READ`] cost 6 MB at `--jobs 8`. A read that fills the
/// buffer doubles it, up to [`STDERR_READ`].
const STDERR_FIRST_READ: usize = 8 * 1024;

/// Copies an agent's stderr into its log in large chunks, masking secrets: the first
/// [`MAX_STDERR_LOG`] bytes, then a note of what was left out, then the last [`STDERR_TAIL`].
async fn copy_stderr(mut err: tokio::process::ChildStderr, log: tokio::fs::File) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut log = tokio::io::BufWriter::with_capacity(STDERR_FIRST_READ, log);
    let mut buf = vec![0u8; STDERR_FIRST_READ];
    let mut redactor = crate::redact::StreamRedactor::new();
    let mut masked = Vec::new();
    let mut written = 0u64;
    let mut tail = StderrTail::default();
    loop {
        let n = match err.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n == buf.len() && buf.len() < STDERR_READ {
            // A flood: larger reads (what was read stays at the start).
            buf.resize(buf.len() * 2, 0);
        }
        if written >= MAX_STDERR_LOG {
            tail.push(&buf[..n]);
            continue;
        }
        masked.clear();
        redactor.push(&buf[..n], &mut masked);
        written += masked.len() as u64;
        let mut upto = masked.len();
        if written >= MAX_STDERR_LOG {
            redactor.finish(&mut masked);
            // The start ends with a whole line; the line it cuts goes with the end, which is
            // masked as a whole (a secret across the cut is seen whole there).
            upto = masked
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(masked.len(), |i| i + 1);
            tail.push(&masked[upto..]);
        }
        if log.write_all(&masked[..upto]).await.is_err() {
            return;
        }
    }
    masked.clear();
    redactor.finish(&mut masked);
    tail.finish(&mut masked);
    let _ = log.write_all(&masked).await;
    let _ = log.flush().await;
}

/// The last [`STDERR_TAIL`] bytes of a stream, and how many came before them.
#[derive(Default)]
struct StderrTail {
    kept: Vec<u8>,
    dropped: u64,
}

impl StderrTail {
    fn push(&mut self, bytes: &[u8]) {
        self.kept.extend_from_slice(bytes);
        if self.kept.len() >= 2 * STDERR_TAIL {
            let cut = self.kept.len() - STDERR_TAIL;
            self.dropped += cut as u64;
            self.kept.drain(..cut);
        }
    }

    /// Appends the note and the kept end, from its first whole line (a secret cut by the
    /// window's start would not be recognised), masked.
    fn finish(self, out: &mut Vec<u8>) {
        if self.dropped == 0 && self.kept.is_empty() {
            return;
        }
        let mut kept = &self.kept[..];
        let mut dropped = self.dropped;
        if dropped == 0 && kept.len() <= STDERR_TAIL {
            out.extend_from_slice(&crate::redact::redact_bytes(kept));
            return;
        }
        {
            let start = kept.len().saturating_sub(STDERR_TAIL);
            let line = kept[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(kept.len(), |i| start + i + 1);
            dropped += line as u64;
            kept = &kept[line..];
        }
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(
            format!("fanout: {dropped} bytes of stderr were not kept; its end follows\n")
                .as_bytes(),
        );
        out.extend_from_slice(&crate::redact::redact_bytes(kept));
    }
}

/// The end of a text file, at most `max` bytes, cut at a line start when possible.
pub fn tail_of_file(path: &Path, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    let mut slice = &bytes[start..];
    if start > 0 {
        if let Some(nl) = slice.iter().position(|&b| b == b'\n') {
            slice = &slice[nl + 1..];
        }
    }
    String::from_utf8_lossy(slice).trim().to_string()
}

/// Describes an exit status in words.
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        match code {
            sandbox::EXIT_NOT_ENFORCED => "the sandbox could not be enforced (exit 125)".into(),
            sandbox::EXIT_EXEC_FAILED => "the command could not be started (exit 127)".into(),
            c if c > 128 && c < 160 => {
                format!("killed by signal {} (exit {c})", signal_name(c - 128))
            }
            c => format!("exit code {c}"),
        }
    } else if let Some(sig) = status.signal() {
        format!("killed by signal {}", signal_name(sig))
    } else {
        "unknown exit".into()
    }
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_end_starts_at_a_line_and_is_masked_whole() {
        let token = format!("ghp_{}", "k3K4".repeat(9));
        let mut tail = StderrTail::default();
        let line = b"0123456789abcdef\n";
        for _ in 0..(3 * STDERR_TAIL / line.len()) {
            tail.push(line);
        }
        // A token cut in two by reads, then the last line.
        tail.push(&token.as_bytes()[..10]);
        tail.push(&token.as_bytes()[10..]);
        tail.push(b"\nthe end\n");
        let mut out = b"start".to_vec();
        tail.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("start\nfanout: "), "{}", &text[..80]);
        let note_end = text.find('\n').unwrap() + text[6..].find('\n').unwrap() + 1;
        let kept = &text[note_end + 1..];
        assert!(kept.starts_with("0123456789abcdef\n"), "{}", &kept[..40]);
        assert!(kept.ends_with("[redacted]\nthe end\n"));
        assert!(kept.len() <= STDERR_TAIL);
        let dropped: u64 = text[6..]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let total = 3 * STDERR_TAIL / line.len() * line.len() + token.len() + 9;
        assert_eq!(
            dropped as usize + kept.len() - "[redacted]".len() + token.len(),
            total
        );
    }

    #[test]
    fn a_short_end_is_kept_whole_without_a_note() {
        let mut tail = StderrTail::default();
        tail.push(b"a few\nlines\n");
        let mut out = Vec::new();
        tail.finish(&mut out);
        assert_eq!(out, b"a few\nlines\n");
        let mut out = Vec::new();
        StderrTail::default().finish(&mut out);
        assert!(out.is_empty());
    }
}
