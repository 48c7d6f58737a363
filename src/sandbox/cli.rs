//! `fanout sandbox`: run any command under the same supervisor and Landlock policy as agents.

use super::policy::{NetPolicy, Policy, ReadAccess, EXIT_NOT_ENFORCED, MIN_SUPPORTED_ABI};
use super::supervisor;
use clap::{Args, Parser, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// TCP policy on the command line (`--net`, shared by `fanout run` and `fanout sandbox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetArg {
    /// TCP bind denied, connect only to port 443 (plus the agent profile's `connect_ports`,
    /// or the `--allow-port` ports of `fanout sandbox`).
    Default,
    /// No network restrictions.
    Any,
    /// TCP bind denied, connect denied (`fanout sandbox`: except to the `--allow-port` ports).
    None,
    /// A network namespace of its own, loopback only (no host, no DNS, no UDP beyond it);
    /// where none can be made, the `default` port rule with a warning.
    Isolated,
}

/// Read policy on the command line (`--read`, shared by `fanout run` and `fanout sandbox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadArg {
    /// Read and execute everything.
    All,
    /// Read only system folders and the folders the task (or `--readable`) names, plus the
    /// writable folders.
    Strict,
}

/// Flags of `fanout sandbox`.
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Folder with full access beneath it (repeatable). Nothing else is writable.
    #[arg(short = 'w', long = "writable", value_name = "DIR")]
    pub writable: Vec<PathBuf>,
    /// TCP policy.
    #[arg(long, value_enum, default_value_t = NetArg::Default)]
    pub net: NetArg,
    /// Also allow TCP connect to this port (repeatable).
    #[arg(long = "allow-port", value_name = "N")]
    pub allow_port: Vec<u16>,
    /// Read policy.
    #[arg(long, value_enum, default_value_t = ReadArg::All)]
    pub read: ReadArg,
    /// Folder readable under `--read strict` (repeatable).
    #[arg(long, value_name = "DIR")]
    pub readable: Vec<PathBuf>,
    /// Write the enforcement report (JSON) to this file.
    #[arg(long, value_name = "F")]
    pub status_file: Option<PathBuf>,
    /// Grace period between SIGTERM and SIGKILL when stopped.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub grace_ms: u64,
    /// When run as root: the user (name or uid) the command runs as, with no capabilities
    /// (default `nobody`). The writable folders must be writable by that user; fanout sandbox
    /// changes no ownership. Not allowed when not root (the command runs as the invoker).
    #[arg(long, value_name = "USER|UID")]
    pub agent_user: Option<String>,
    /// Lowest acceptable Landlock ABI (testing: simulate an old kernel).
    #[arg(long, hide = true, default_value_t = MIN_SUPPORTED_ABI)]
    pub min_abi: u32,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Parser, Debug)]
#[command(
    name = "fanout sandbox",
    about = "Run a command confined like a fanout agent (Landlock workspace-write)"
)]
struct SandboxCli {
    #[command(flatten)]
    args: SandboxArgs,
}

/// Flags of `fanout sandbox` that describe no policy.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("{path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("--readable needs --read strict")]
    ReadableNeedsStrict,
    #[error("--allow-port has no effect with --net any")]
    AllowPortWithAnyNet,
    #[error(transparent)]
    User(#[from] super::user::UserError),
}

impl SandboxArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> Result<Policy, ArgsError> {
        let abs = |p: &PathBuf| {
            std::fs::canonicalize(p).map_err(|source| ArgsError::Folder {
                path: p.display().to_string(),
                source,
            })
        };
        let writable = self
            .writable
            .iter()
            .map(abs)
            .collect::<Result<Vec<_>, _>>()?;
        let read = match self.read {
            ReadArg::All if !self.readable.is_empty() => {
                return Err(ArgsError::ReadableNeedsStrict)
            }
            ReadArg::All => ReadAccess::All,
            ReadArg::Strict => ReadAccess::Strict {
                readable: self.readable.iter().map(abs).collect::<Result<_, _>>()?,
            },
        };
        let net = match self.net {
            NetArg::Any if !self.allow_port.is_empty() => {
                return Err(ArgsError::AllowPortWithAnyNet)
            }
            NetArg::Any => NetPolicy::Any,
            NetArg::None if self.allow_port.is_empty() => NetPolicy::None,
            NetArg::None => NetPolicy::ConnectPorts(self.allow_port.clone()),
            NetArg::Default | NetArg::Isolated => {
                let mut ports = vec![443];
                ports.extend(&self.allow_port);
                ports.sort_unstable();
                ports.dedup();
                NetPolicy::ConnectPorts(ports)
            }
        };
        let run_as = super::user::resolve_one(self.agent_user.as_deref())?;
        Ok(Policy {
            enforce: true,
            writable,
            read,
            net,
            min_abi: self.min_abi,
            run_as,
            overlay: None,
            caches: None,
            isolate_net: self.net == NetArg::Isolated,
            egress: None,
            // The invoker's credentials, under --net isolated (what runs here is its HOME).
            hide: if self.net == NetArg::Isolated {
                super::credentials::of_invoker()
            } else {
                Vec::new()
            },
        })
    }
}

/// Entry point of `fanout sandbox`. `args` is the process's argv (as from
/// `std::env::args_os()`; a leading program name and `sandbox` are skipped). Prints the
/// enforcement status line on stderr, runs the command under the supervisor, and returns its
/// exit code (125 when the sandbox cannot be enforced, 127 when the command cannot run, 2 on
/// bad flags). Must be called before any other thread exists.
pub fn run(args: Vec<OsString>) -> i32 {
    let mut args = args.into_iter().peekable();
    for _ in 0..2 {
        if args
            .peek()
            .is_some_and(|a| !a.to_string_lossy().starts_with('-'))
        {
            args.next();
        }
    }
    let argv = std::iter::once(OsString::from("fanout sandbox")).chain(args);
    match SandboxCli::try_parse_from(argv) {
        Ok(cli) => run_args(cli.args),
        Err(e) => {
            let _ = e.print();
            e.exit_code()
        }
    }
}

/// `fanout sandbox` with already parsed flags (for folding into a larger clap tree).
pub fn run_args(args: SandboxArgs) -> i32 {
    let policy = match args.policy() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fanout sandbox: {e}");
            return EXIT_NOT_ENFORCED;
        }
    };
    let mut command = args.command.into_iter();
    let Some(program) = command.next() else {
        eprintln!("fanout sandbox: missing command after `--`");
        return 2;
    };
    supervisor::supervise(supervisor::Config {
        policy,
        status_file: args.status_file,
        grace: Duration::from_millis(args.grace_ms),
        announce: true,
        program,
        args: command.collect(),
    })
}
