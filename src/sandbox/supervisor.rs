//! The single-threaded supervisor: forks the sandboxed child, reports its status, and makes
//! sure no process of the tree outlives it.

use super::policy::{
    EnforcementStatus, NetPolicy, NetworkConfinement, Policy, SandboxReport, EXIT_EXEC_FAILED,
    EXIT_NOT_ENFORCED, MIN_ABI_ENV, MIN_SUPPORTED_ABI,
};
use super::{netns, privs, procs, rules};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl;
use nix::sys::signal::{kill, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execvp, getpid, getppid, pipe2, setsid, ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to run one supervised program.
#[derive(Debug)]
pub(crate) struct Config {
    pub policy: Policy,
    pub status_file: Option<PathBuf>,
    pub grace: Duration,
    /// Print the status line on stderr before the program starts (`fanout sandbox`).
    pub announce: bool,
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// Second message on the status pipe when `execvp` failed.
#[derive(Serialize, Deserialize)]
struct ExecError {
    exec_error: String,
}

/// Give up killing after this long (a process stuck in uninterruptible sleep).
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the supervisor; returns the exit code.
pub(crate) fn supervise(cfg: Config) -> i32 {
    let min_abi = effective_min_abi(&cfg.policy);
    let argv = match cfg
        .args
        .iter()
        .chain(std::iter::once(&cfg.program))
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(mut v) => {
            v.rotate_right(1); // program first
            v
        }
        Err(_) => {
            eprintln!("fanout sandbox: an argument contains a NUL byte");
            return EXIT_EXEC_FAILED;
        }
    };

    if let Err(e) = prctl::set_child_subreaper(true) {
        eprintln!("fanout sandbox: cannot become a child subreaper: {e}");
        return EXIT_NOT_ENFORCED;
    }
    // SIGCHLD must not be ignored (an inherited SIG_IGN would auto-reap children).
    reset_signal(Signal::SIGCHLD);
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    let old_mask = match mask.thread_swap_mask(SigmaskHow::SIG_BLOCK) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fanout sandbox: sigprocmask: {e}");
            return EXIT_NOT_ENFORCED;
        }
    };
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fanout sandbox: signalfd: {e}");
            return EXIT_NOT_ENFORCED;
        }
    };
    let (status_rd, status_wr) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fanout sandbox: pipe: {e}");
            return EXIT_NOT_ENFORCED;
        }
    };
    let me = getpid();

    match fork_process() {
        Err(e) => {
            eprintln!("fanout sandbox: fork: {e}");
            EXIT_NOT_ENFORCED
        }
        Ok(ForkResult::Child) => {
            drop(status_rd);
            drop(sfd);
            let code = child_main(&cfg, min_abi, &argv, status_wr, &old_mask, me);
            exit_now(code)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(status_wr);
            // Only the child may hold the caller's stdin/stdout: an agent that closes its
            // stdout must give the reader EOF, which our copy would prevent.
            detach_stdio();
            let mut sup = Supervisor {
                me,
                child,
                sfd,
                child_code: None,
                child_signal: None,
            };
            sup.run(&cfg, status_rd)
        }
    }
}

/// Points the supervisor's own stdin and stdout at /dev/null (stderr stays for its messages).
#[allow(unsafe_code)]
fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    for fd in [0, 1] {
        // SAFETY: dup2 onto the standard descriptors; nothing in this single-threaded
        // process holds Rust-level handles to them afterwards.
        unsafe {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd);
        }
    }
}

fn effective_min_abi(policy: &Policy) -> u32 {
    let env = std::env::var(MIN_ABI_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    policy.min_abi.max(env).max(MIN_SUPPORTED_ABI)
}

#[allow(unsafe_code)]
fn fork_process() -> nix::Result<ForkResult> {
    // SAFETY: the supervisor is single-threaded (the `sandbox-exec` helper and `fanout sandbox`
    // are dispatched before any runtime or thread starts), so the child is a complete copy of
    // the process and may allocate and run arbitrary code before it execs or `_exit`s.
    unsafe { nix::unistd::fork() }
}

#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the forked child without running atexit handlers or flushing stdio
    // buffers copied from the supervisor; it takes no pointers.
    unsafe { libc::_exit(code) }
}

#[allow(unsafe_code)]
fn reset_signal(sig: Signal) {
    // SAFETY: installing SIG_DFL involves no handler code, so no async-signal-safety concerns.
    let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
}

/// Closes every descriptor above 2 except `keep`.
#[allow(unsafe_code)]
fn close_fds_except(keep: i32) {
    let ranges = if keep > 2 {
        vec![(3u32, keep as u32 - 1), (keep as u32 + 1, u32::MAX)]
    } else {
        vec![(3u32, u32::MAX)]
    };
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        // SAFETY: close_range only closes descriptors; none of the closed ones is used
        // afterwards by this process (it is about to exec), and `keep` is excluded.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last as libc::c_uint,
                0 as libc::c_uint,
            )
        };
        if r != 0 {
            // Kernels before 5.9: close what /proc lists.
            let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            for fd in fds {
                if fd > 2 && fd != keep && (fd as u32) >= first && (fd as u32) <= last {
                    let _ = nix::unistd::close(fd);
                }
            }
        }
    }
}

/// The forked child: confine, report, exec. Returns an exit code only on failure.
fn child_main(
    cfg: &Config,
    min_abi: u32,
    argv: &[CString],
    status_wr: OwnedFd,
    old_mask: &SigSet,
    supervisor: Pid,
) -> i32 {
    // Undo the supervisor's signal setup and Rust's SIGPIPE=SIG_IGN, which exec would keep.
    let _ = old_mask.thread_set_mask();
    for s in [
        Signal::SIGPIPE,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        reset_signal(s);
    }
    let _ = setsid();
    // The network namespace first: without root its user namespace must own it.
    let network = confine_network(&cfg.policy);
    // Then, with a namespace, the invoker's credentials covered (before the forwarder, the
    // overlay, the uid switch and the ruleset); without one nothing is hidden.
    let (hidden, credentials_visible) = match network {
        NetworkConfinement::Namespace => match hide_credentials(cfg) {
            Ok(kept) => (Ok(()), kept),
            Err(why) => (Err(why), Vec::new()),
        },
        _ => (Ok(()), Vec::new()),
    };
    // The egress forwarder only inside a namespace: outside, its port would be the host's.
    let mut policy = cfg.policy.clone();
    match (&policy.egress, network, &hidden) {
        (Some(link), NetworkConfinement::Namespace, Ok(())) => {
            if let Err(why) = netns::start_forwarder(link) {
                eprintln!("fanout sandbox: warning: no egress proxy inside the namespace: {why}");
                policy.egress = None;
            }
        }
        _ => policy.egress = None,
    }
    if network == NetworkConfinement::Namespace {
        // The namespace is the boundary (loopback and the forwarder): inside it a test suite
        // may serve and reach its own ports, which Landlock's port rule would refuse.
        policy.net = NetPolicy::Any;
    }
    let policy = &policy;
    // The overlay is mounted while still privileged (as root, or with the capabilities of a
    // fresh user namespace), before the uid switch and the ruleset, which opens the mount.
    let mounted = hidden.and_then(|()| match (&cfg.policy.overlay, &cfg.policy.caches) {
        (None, None) => Ok(()),
        (workspace, caches) => {
            super::overlay::enter(workspace.as_ref(), caches.as_ref(), cfg.policy.run_as).map_err(
                |why| match workspace {
                    Some(_) => format!("cannot set up the overlay workspace: {why}"),
                    None => format!("cannot set up the cache layers: {why}"),
                },
            )
        }
    });
    // Root is dropped first: a change of credentials clears the parent-death signal.
    let switched = match (mounted, cfg.policy.run_as) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(who)) => privs::limit_processes(who)
            .and_then(|()| privs::become_user(who))
            .map(|()| Some(who))
            .map_err(|why| format!("cannot drop root privileges for the program: {why}")),
        (Ok(()), None) => Ok(None),
    };
    if prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != supervisor {
        return EXIT_NOT_ENFORCED; // the supervisor is already gone
    }

    let report = match switched {
        Err(why) => rules::not_enforced(rules::kernel_abi(), why),
        Ok(run_as) => {
            let mut r = if cfg.policy.enforce {
                rules::apply(policy, min_abi)
            } else {
                SandboxReport {
                    status: EnforcementStatus::Off,
                    abi: rules::kernel_abi(),
                    missing: Vec::new(),
                    message: None,
                    run_as: None,
                    child_signal: None,
                    network: None,
                    credentials_visible: Vec::new(),
                }
            };
            r.run_as = run_as;
            r
        }
    };
    let report = SandboxReport {
        network: Some(network),
        credentials_visible,
        ..report
    };
    let mut pipe = std::fs::File::from(status_wr);
    let mut line = serde_json::to_vec(&report).unwrap_or_default();
    line.push(b'\n');
    let _ = pipe.write_all(&line);

    if report.status == EnforcementStatus::NotEnforced {
        eprintln!(
            "fanout sandbox: not enforced: {}",
            report.message.as_deref().unwrap_or("unknown reason")
        );
        return EXIT_NOT_ENFORCED;
    }
    if cfg.announce {
        eprintln!("fanout sandbox: {}", report.status_line());
    }
    close_fds_except(pipe.as_raw_fd());

    let err = match execvp(&argv[0], argv) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let msg = format!(
        "cannot execute {}: {}",
        cfg.program.to_string_lossy(),
        err.desc()
    );
    let mut line = serde_json::to_vec(&ExecError {
        exec_error: msg.clone(),
    })
    .unwrap_or_default();
    line.push(b'\n');
    let _ = pipe.write_all(&line);
    eprintln!("fanout sandbox: {msg}");
    EXIT_EXEC_FAILED
}

/// Covers the invoker's credential paths the policy lists (in the tree's own network
/// namespace), except those holding what the tree needs — its folders, the run's, its working
/// folder and its program —, which stay visible with a warning on stderr (the task's log).
/// Returns the paths kept visible.
fn hide_credentials(cfg: &Config) -> Result<Vec<String>, String> {
    let p = &cfg.policy;
    if p.hide.is_empty() {
        return Ok(Vec::new());
    }
    // Not `--read strict`'s readable list: it allows, it is not needed (a repository that is
    // the home folder lists `.ssh` there).
    let mut protected: Vec<PathBuf> = p.writable.clone();
    let layers = p
        .overlay
        .iter()
        .chain(p.caches.iter().flat_map(|c| &c.layers));
    for o in layers {
        protected.extend([&o.lower, &o.upper, &o.work, &o.merged].map(|x| x.to_path_buf()));
        protected.extend(o.setup.iter().cloned());
    }
    protected.extend(p.caches.iter().flat_map(|c| c.read_only.iter().cloned()));
    protected.extend(p.egress.as_ref().map(|e| e.socket.clone()));
    protected.extend(cfg.status_file.iter().cloned());
    protected.extend(std::env::current_dir().ok());
    protected.extend(super::hide::program_path(&cfg.program));
    let (cover, kept) = super::hide::plan(&p.hide, &protected);
    for k in &kept {
        eprintln!(
            "fanout sandbox: warning: not hiding the credential path {}: it holds {}",
            k.path.display(),
            k.holds.display()
        );
    }
    super::hide::enter(&cover).map_err(|why| format!("cannot hide the credential files: {why}"))?;
    Ok(kept.iter().map(|k| k.path.display().to_string()).collect())
}

/// Enters a network namespace of the tree's own when the policy asks for one; says what then
/// confines the network (Landlock's port rule, with a warning, when no namespace could be made).
fn confine_network(policy: &Policy) -> NetworkConfinement {
    if policy.isolate_net {
        match netns::enter() {
            Ok(()) => return NetworkConfinement::Namespace,
            Err(why) => eprintln!(
                "fanout sandbox: warning: no network namespace ({why}); only Landlock's TCP port rule limits the network"
            ),
        }
    }
    if policy.enforce && policy.net != NetPolicy::Any {
        NetworkConfinement::LandlockPorts
    } else {
        NetworkConfinement::Any
    }
}

struct Supervisor {
    me: Pid,
    child: Pid,
    sfd: SignalFd,
    child_code: Option<i32>,
    /// The signal the program died of, when it did.
    child_signal: Option<i32>,
}

impl Supervisor {
    fn run(&mut self, cfg: &Config, status_rd: OwnedFd) -> i32 {
        // EOF on the pipe: the child exec'd (close-on-exec) or exited.
        let mut buf = Vec::new();
        let _ = std::fs::File::from(status_rd).read_to_end(&mut buf);
        let mut lines = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let mut report: SandboxReport = lines
            .next()
            .and_then(|l| serde_json::from_slice(l).ok())
            .unwrap_or_else(|| SandboxReport {
                status: EnforcementStatus::NotEnforced,
                abi: rules::kernel_abi(),
                missing: Vec::new(),
                message: Some("the sandboxed process exited before reporting its status".into()),
                run_as: None,
                child_signal: None,
                network: None,
                credentials_visible: Vec::new(),
            });
        if let Some(e) = lines
            .next()
            .and_then(|l| serde_json::from_slice::<ExecError>(l).ok())
        {
            report.message = Some(e.exec_error);
        }
        if let Some(path) = &cfg.status_file {
            if let Err(e) = write_report(path, &report) {
                eprintln!(
                    "fanout sandbox: cannot write the status file {}: {e}",
                    path.display()
                );
            }
        }

        loop {
            let stop = self.wait_signals(PollTimeout::NONE);
            if let Some(sig) = stop {
                self.terminate(cfg.grace);
                return 128 + sig as i32;
            }
            if let Some(code) = self.child_code {
                self.kill_all();
                if let (Some(sig), Some(path)) = (self.child_signal, &cfg.status_file) {
                    report.child_signal = Some(sig);
                    let _ = write_report(path, &report);
                }
                return code;
            }
        }
    }

    /// Waits up to `timeout` for signals, reaps children; returns a stop signal if one came.
    fn wait_signals(&mut self, timeout: PollTimeout) -> Option<Signal> {
        let mut fds = [PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        let mut stop = None;
        while let Ok(Some(info)) = self.sfd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                if sig != Signal::SIGCHLD {
                    stop = Some(sig);
                }
            }
        }
        self.reap();
        stop
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    if pid == self.child {
                        self.child_code = Some(code);
                    }
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    if pid == self.child {
                        self.child_code = Some(128 + sig as i32);
                        self.child_signal = Some(sig as i32);
                    }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn descendants(&self) -> Vec<i32> {
        procs::descendants_of(self.me.as_raw())
            .unwrap_or_else(|| procs::descendants(&procs::all_processes(), self.me.as_raw()))
    }

    fn signal_all(&self, sig: Signal) -> usize {
        let d = self.descendants();
        for pid in &d {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
        d.len()
    }

    /// SIGTERM everything, wait up to `grace`, then SIGKILL what remains.
    fn terminate(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        if self.signal_all(Signal::SIGTERM) > 0 {
            loop {
                self.reap();
                if self.descendants().is_empty() {
                    return;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let ms = left.as_millis().min(50) as u16;
                let _ = self.wait_signals(PollTimeout::from(ms));
            }
        }
        self.kill_all();
    }

    /// SIGKILL and reap every descendant until none is left.
    fn kill_all(&mut self) {
        let give_up = Instant::now() + KILL_DEADLINE;
        loop {
            self.reap();
            if self.signal_all(Signal::SIGKILL) == 0 {
                return;
            }
            if Instant::now() > give_up {
                eprintln!("fanout sandbox: some processes could not be killed");
                return;
            }
            let _ = self.wait_signals(PollTimeout::from(10u16));
        }
    }
}

fn write_report(path: &Path, report: &SandboxReport) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, report)?;
    tmp.write_all(b"\n")?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
