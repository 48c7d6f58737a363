//! Landlock confinement of agent process trees (`workspace-write`).
//!
//! Every agent and every verify command runs under a small **supervisor**, the hidden
//! `fanout sandbox-exec` helper built from [`supervised_command`]:
//!
//! ```text
//! fanout (multi-threaded, tokio)
//!   └─ fanout sandbox-exec -- program args…   (supervisor; policy and status file in its env)
//!        │  single-threaded, child subreaper, stays outside the Landlock domain
//!        └─ agent (fork → setsid → PDEATHSIG=SIGKILL → Landlock restrict_self → execvp)
//!             └─ … everything the agent starts, confined by the same domain
//! ```
//!
//! The forked child builds and applies the Landlock ruleset to itself (it is single-threaded
//! after the fork, so allocating is fine), reports the resulting [`SandboxReport`] to the
//! supervisor over a close-on-exec pipe, closes every other inherited descriptor above 2 and
//! execs the program. The supervisor writes the report to the status file, waits for the
//! child, and when the child exits — or when the supervisor receives SIGTERM, SIGINT or
//! SIGHUP — kills every remaining descendant, including processes that double-forked and
//! called `setsid()` (they are reparented to the subreaper supervisor).
//!
//! Fail closed: when [`Policy::enforce`] is true and the kernel offers no Landlock, or an ABI
//! below [`Policy::min_abi`], the program is not started and the helper exits with
//! [`EXIT_NOT_ENFORCED`]. See `docs/sandbox.md` for the policy, the statuses and what
//! Landlock does not cover.
#![deny(unsafe_code)]

pub mod cli;
pub mod credentials;
mod hide;
mod idmap;
mod mounts;
mod netns;
pub mod overlay;
mod policy;
pub mod privs;
mod procs;
mod rules;
mod supervisor;
pub mod user;
mod userns;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use policy::*;

/// The Landlock ABI version the running kernel offers, `None` if Landlock is not built in or
/// not enabled (for `fanout doctor`).
pub fn kernel_abi() -> Option<u32> {
    rules::kernel_abi()
}

/// The hidden `fanout sandbox-exec` helper. `args` is the process's argv (as from
/// `std::env::args_os()`; a leading program name and `sandbox-exec` are skipped):
/// `sandbox-exec [--policy <json>] [--status-file <f>] [--grace-ms N] -- program args…`;
/// without `--policy` (`--status-file`) the policy (status file) comes from [`POLICY_ENV`]
/// ([`STATUS_FILE_ENV`]). Both variables are removed from the environment the program gets.
///
/// Must be called before any other thread exists (before the tokio runtime). Returns the exit
/// code for `std::process::exit`.
pub fn exec_main(args: Vec<OsString>) -> i32 {
    let from_env = (
        std::env::var_os(POLICY_ENV),
        std::env::var_os(STATUS_FILE_ENV),
    );
    let parent = std::env::var(PARENT_PID_ENV).ok();
    // Single-threaded here (dispatched before any runtime): removing is safe.
    std::env::remove_var(POLICY_ENV);
    std::env::remove_var(STATUS_FILE_ENV);
    std::env::remove_var(PARENT_PID_ENV);
    if let Some(parent) = parent.and_then(|p| p.trim().parse::<i32>().ok()) {
        if !die_with_parent(parent) {
            eprintln!("fanout sandbox-exec: the fanout that started this helper is gone");
            return EXIT_NOT_ENFORCED;
        }
    }
    match parse_exec_args(args, from_env) {
        Ok(cfg) => supervisor::supervise(cfg),
        Err(msg) => {
            eprintln!("fanout sandbox-exec: {msg}");
            eprintln!(
                "usage: fanout sandbox-exec [--policy <json>] [--status-file <file>] [--grace-ms N] -- program [args…] (or the policy in FANOUT_SANDBOX_POLICY)"
            );
            EXIT_NOT_ENFORCED
        }
    }
}

/// Asks for SIGTERM when the parent dies, then checks that `parent` is still the parent: it
/// may have died between starting this process and the request (the signal would never come).
fn die_with_parent(parent: i32) -> bool {
    use nix::sys::prctl;
    prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).is_ok()
        && nix::unistd::getppid().as_raw() == parent
}

/// Parses the helper's arguments; `from_env`: the values of [`POLICY_ENV`] and
/// [`STATUS_FILE_ENV`], used when the flags are absent.
fn parse_exec_args(
    args: Vec<OsString>,
    from_env: (Option<OsString>, Option<OsString>),
) -> Result<supervisor::Config, String> {
    let mut it = args.into_iter().peekable();
    // Skip argv[0] and the subcommand name when present.
    for _ in 0..2 {
        if let Some(a) = it.peek() {
            if a != "--" && !a.to_string_lossy().starts_with("--") {
                it.next();
            }
        }
    }
    let mut policy = None;
    let mut status_file = None;
    let mut grace = DEFAULT_GRACE;
    loop {
        let Some(a) = it.next() else {
            return Err("missing `-- program`".into());
        };
        let value = |it: &mut std::iter::Peekable<std::vec::IntoIter<OsString>>| {
            it.next()
                .ok_or_else(|| format!("{} needs a value", a.to_string_lossy()))
        };
        match a.to_str() {
            Some("--") => break,
            Some("--policy") => {
                let v = value(&mut it)?;
                let v = v.to_str().ok_or("--policy is not UTF-8")?;
                policy = Some(
                    serde_json::from_str::<Policy>(v)
                        .map_err(|e| format!("invalid --policy: {e}"))?,
                );
            }
            Some("--status-file") => status_file = Some(PathBuf::from(value(&mut it)?)),
            Some("--grace-ms") => {
                let v = value(&mut it)?;
                let ms: u64 = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--grace-ms needs a number of milliseconds")?;
                grace = Duration::from_millis(ms);
            }
            _ => return Err(format!("unexpected argument {:?}", a)),
        }
    }
    let program = it.next().ok_or("missing program after `--`")?;
    if policy.is_none() {
        if let Some(v) = from_env.0 {
            let v = v.to_str().ok_or("the policy is not UTF-8")?;
            policy = Some(
                serde_json::from_str::<Policy>(v).map_err(|e| format!("invalid policy: {e}"))?,
            );
        }
    }
    if status_file.is_none() {
        status_file = from_env.1.map(PathBuf::from);
    }
    Ok(supervisor::Config {
        policy: policy.ok_or("missing --policy")?,
        status_file,
        grace,
        announce: false,
        program,
        args: it.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::path::Path;

    #[test]
    fn policy_json_roundtrip() {
        let mut p = Policy::workspace_write(vec!["/a".into()]);
        p.read = ReadAccess::Strict {
            readable: vec!["/r".into()],
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"connect_ports\":[443]"), "{json}");
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
        assert_eq!(
            serde_json::to_string(&EnforcementStatus::PartiallyEnforced).unwrap(),
            "\"partially_enforced\""
        );
    }

    #[test]
    fn readable_except_leaves_out_hidden_subtrees() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for p in [
            ".git/objects",
            ".git/fanout/runs/x",
            ".git/worktrees/a",
            ".git/worktrees/b",
            "src",
        ] {
            std::fs::create_dir_all(r.join(p)).unwrap();
        }
        std::fs::write(r.join("README"), "x").unwrap();
        std::os::unix::fs::symlink("/", r.join("root-link")).unwrap();
        let hidden = [r.join(".git/fanout"), r.join(".git/worktrees")];
        let got = readable_except(r, &hidden);
        let want: Vec<PathBuf> = [".git/objects", "README", "src"]
            .iter()
            .map(|p| r.join(p))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_isolated_policy_carries_the_invokers_credentials() {
        let policy_of = |isolate_net: bool| {
            let mut p = Policy::workspace_write(vec![]);
            p.isolate_net = isolate_net;
            let cmd = supervised_command(
                Path::new("/bin/fanout"),
                &p,
                Path::new("/s.json"),
                OsStr::new("true"),
                &[],
            );
            let json = cmd
                .get_envs()
                .find(|(n, _)| *n == POLICY_ENV)
                .and_then(|(_, v)| v.map(|v| v.to_owned()))
                .expect("the policy travels in the environment");
            serde_json::from_str::<Policy>(json.to_str().expect("utf-8")).expect("policy")
        };
        assert!(policy_of(false).hide.is_empty());
        let hide = policy_of(true).hide;
        assert_eq!(hide, credentials::of_invoker());
        if let Some(home) = std::env::var_os("HOME").filter(|h| h != "/") {
            assert!(hide.contains(&PathBuf::from(home).join(".ssh")), "{hide:?}");
        }
    }

    #[test]
    fn exec_args_parse() {
        let p = Policy::workspace_write(vec![]);
        let cmd = supervised_command(
            Path::new("/bin/fanout"),
            &p,
            Path::new("/s.json"),
            OsStr::new("sh"),
            &["-c".into(), "--".into()],
        );
        let mut argv: Vec<OsString> = vec![cmd.get_program().to_owned()];
        argv.extend(cmd.get_args().map(|a| a.to_owned()));
        // Nothing of the policy on the command line, which every local user can read.
        assert!(
            !argv.iter().any(|a| a.to_string_lossy().contains("s.json")
                || a.to_string_lossy().contains("writable")),
            "{argv:?}"
        );
        let env = |k: &str| {
            cmd.get_envs()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v.map(|v| v.to_owned()))
        };
        let cfg = parse_exec_args(argv, (env(POLICY_ENV), env(STATUS_FILE_ENV))).unwrap();
        assert_eq!(cfg.policy, p);
        assert_eq!(cfg.status_file.as_deref(), Some(Path::new("/s.json")));
        assert_eq!(cfg.program, "sh");
        assert_eq!(cfg.args, vec![OsString::from("-c"), OsString::from("--")]);
        assert!(parse_exec_args(
            vec!["x".into(), "sandbox-exec".into(), "--".into()],
            (None, None)
        )
        .is_err());
    }
}
