//! What a sandboxed process tree may do (the policy), what it got (the report), and how the
//! supervisor is started and read.

use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code of the helper when the sandbox could not be enforced (no Landlock, an ABI below
/// the policy's minimum, or a ruleset that could not be built); the program was not started.
pub const EXIT_NOT_ENFORCED: i32 = 125;
/// Exit code of the helper when the program could not be executed (not found, not executable).
pub const EXIT_EXEC_FAILED: i32 = 127;

/// The lowest Landlock ABI fanout accepts: ABI 3 (Linux 6.2) is the first that can deny
/// `truncate(2)` on files outside the writable folders.
pub const MIN_SUPPORTED_ABI: u32 = 3;
/// The Landlock ABI whose access rights fanout handles and was tested against (Linux 6.15).
/// Newer kernels are used best-effort with exactly these rights; older kernels (down to
/// [`MIN_SUPPORTED_ABI`]) give [`EnforcementStatus::PartiallyEnforced`].
pub const PINNED_ABI: u32 = 7;
/// Environment variable read by the helper: raises the minimum ABI (never lowers it below the
/// policy's). Tests use it to simulate an old kernel.
pub const MIN_ABI_ENV: &str = "FANOUT_SANDBOX_MIN_ABI";
/// Default grace period between SIGTERM and SIGKILL when the supervisor is told to stop.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// What a sandboxed process tree may do.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    /// `false` = `--sandbox off`: the supervisor still runs (process-tree cleanup), but no
    /// Landlock ruleset is applied and the status is [`EnforcementStatus::Off`].
    pub enforce: bool,
    /// Folders (or files) with full access beneath them: the task's worktree and scratch folder.
    /// They must exist; use absolute paths (relative ones resolve against the helper's cwd).
    pub writable: Vec<PathBuf>,
    /// What may be read (and executed).
    pub read: ReadAccess,
    /// TCP policy.
    pub net: NetPolicy,
    /// Lowest acceptable Landlock ABI; values below [`MIN_SUPPORTED_ABI`] are raised to it.
    pub min_abi: u32,
    /// Run the program as this uid/gid with no capabilities (fanout runs as root). The
    /// supervisor stays root; the child switches before Landlock. `None`: no switch.
    #[serde(default)]
    pub run_as: Option<RunAs>,
    /// Mount this overlay (in a private mount namespace of the program's tree) before the
    /// ruleset is built; `merged` should then be the writable workspace. `None`: no mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlaySpec>,
    /// Shared caches seen through copy-on-write layers, mounted in the same private mount
    /// namespace (made for them when there is no overlay workspace). `None`: no cache mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caches: Option<CacheMounts>,
    /// Run the tree in a network namespace of its own (loopback only); when none can be made,
    /// `net` (the Landlock port rule) is all that applies, with a warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolate_net: bool,
    /// With a network namespace: fanout's egress proxy reached from inside at
    /// 127.0.0.1:`port` (a forwarder relays to its Unix socket); Landlock lets that port pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressLink>,
    /// With a network namespace: the invoker's credential files and folders (those that
    /// exist) covered with empty read-only ones in a mount namespace of the tree's own.
    /// [`supervised_command`] adds the invoker's ([`super::credentials::of_invoker`]) whenever
    /// `isolate_net` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hide: Vec<PathBuf>,
}

/// Where the egress proxy listens (outside) and the port its forwarder takes inside the
/// task's network namespace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EgressLink {
    pub socket: PathBuf,
    pub port: u16,
}

impl EgressLink {
    /// The link of another phase of the same task: its socket is the sibling named
    /// `<stem>.<phase>.sock` (the runner binds one per phase, each with its own allow-list).
    pub fn for_phase(&self, phase: &str) -> EgressLink {
        let name = self
            .socket
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('.'))
            .map(|(stem, _)| format!("{stem}.{phase}.sock"))
            .unwrap_or_else(|| format!("{phase}.sock"));
        EgressLink {
            socket: self.socket.with_file_name(name),
            port: self.port,
        }
    }
}

/// The task's view of the shared caches: one overlay per shared part (its `merged` is where
/// the task's tools find it; writes land in the task's own upper folder, discarded with the
/// task), and the shared caches themselves bind-mounted read-only over themselves, so no
/// process of the task can change them by any path (not even modes, which Landlock lets pass).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheMounts {
    pub layers: Vec<OverlaySpec>,
    pub read_only: Vec<PathBuf>,
}

/// An overlay workspace: `lower` (read-only, shared), `upper` and `work` (the task's own),
/// mounted at `merged`. Absolute paths without `,`, `:` or `\\`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OverlaySpec {
    pub lower: PathBuf,
    /// A shared setup layer (read-only, above `lower`): what the run's `setup` made.
    #[serde(default)]
    pub setup: Option<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

/// An unprivileged uid and gid a sandboxed program runs as.
#[derive(schemars::JsonSchema, Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl Policy {
    /// The default `workspace-write` policy: enforced, read everywhere, full access beneath
    /// `writable`, TCP connect to port 443 only, minimum ABI 3.
    pub fn workspace_write(writable: Vec<PathBuf>) -> Self {
        Policy {
            enforce: true,
            writable,
            read: ReadAccess::All,
            net: NetPolicy::default(),
            min_abi: MIN_SUPPORTED_ABI,
            run_as: None,
            overlay: None,
            caches: None,
            isolate_net: false,
            egress: None,
            hide: Vec::new(),
        }
    }
}

/// Read (and execute) access.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadAccess {
    /// Read and execute everything.
    All,
    /// Read and execute only beneath the system folders ([`SYSTEM_READ_DIRS`]), `readable`,
    /// and the writable folders.
    Strict { readable: Vec<PathBuf> },
}

/// System folders readable under [`ReadAccess::Strict`] (those that exist).
pub const SYSTEM_READ_DIRS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/lib",
    "/nix/store",
];

/// Landlock can only allow: to make everything beneath `root` readable except the `hidden`
/// subtrees, this lists the entries of `root` (and, for folders that contain a hidden path, of
/// them, recursively) that contain no hidden path. Links are left out (they are not followed:
/// one pointing at `/` would open everything).
pub fn readable_except(root: &Path, hidden: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if hidden.contains(&dir) {
            continue;
        }
        if !hidden.iter().any(|h| h.starts_with(&dir)) {
            out.push(dir);
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| !t.is_symlink()) {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// TCP policy (Landlock ABI ≥ 4). UDP and other protocols are not restricted by Landlock ABI 7.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetPolicy {
    /// No network rules.
    Any,
    /// TCP bind and connect denied.
    None,
    /// TCP bind denied; TCP connect allowed only to these ports.
    ConnectPorts(Vec<u16>),
}

impl Default for NetPolicy {
    fn default() -> Self {
        NetPolicy::ConnectPorts(vec![443])
    }
}

/// The sandbox's effective state for one process tree.
#[derive(schemars::JsonSchema, Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementStatus {
    /// Every restriction of the policy is enforced.
    FullyEnforced,
    /// Enforced, but the kernel lacks some restrictions (listed in [`SandboxReport::missing`]).
    PartiallyEnforced,
    /// Not enforced: the program was not started (exit [`EXIT_NOT_ENFORCED`]).
    NotEnforced,
    /// The policy asked for no confinement (`--sandbox off`).
    Off,
}

impl EnforcementStatus {
    /// The snake_case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementStatus::FullyEnforced => "fully_enforced",
            EnforcementStatus::PartiallyEnforced => "partially_enforced",
            EnforcementStatus::NotEnforced => "not_enforced",
            EnforcementStatus::Off => "off",
        }
    }
}

/// What the helper wrote to its status file.
#[derive(schemars::JsonSchema, Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SandboxReport {
    pub status: EnforcementStatus,
    /// Landlock ABI offered by the kernel (`None`: no Landlock).
    pub abi: Option<u32>,
    /// Restrictions of the policy the kernel could not enforce, e.g. `"scope.signal (ABI 6)"`.
    pub missing: Vec<String>,
    /// Why the sandbox was not enforced, or why the program could not be executed.
    pub message: Option<String>,
    /// The uid/gid the program runs as when the supervisor dropped root for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
    /// The signal that killed the program, written once it died of one: the supervisor's own
    /// exit code (128 + n) cannot tell that from a program that exited with that status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_signal: Option<i32>,
    /// What confines the tree's network: its own namespace, Landlock's port rule, or nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfinement>,
    /// Credential paths of the invoker left visible in the tree's namespace because they hold
    /// something it needs (its workspace, the run's folders, its program); the others were
    /// covered (`Policy::hide`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials_visible: Vec<String>,
}

impl SandboxReport {
    /// One human-readable line, e.g. `fully_enforced (Landlock ABI 7)`.
    pub fn status_line(&self) -> String {
        let abi = match self.abi {
            Some(a) => format!("Landlock ABI {a}"),
            None => "no Landlock".to_string(),
        };
        let mut line = format!("{} ({abi}", self.status.as_str());
        if !self.missing.is_empty() {
            line.push_str("; missing: ");
            line.push_str(&self.missing.join(", "));
        }
        if self.status == EnforcementStatus::Off {
            line.push_str("; NOT CONFINED");
        }
        line.push(')');
        if let Some(who) = self.run_as {
            line.push_str(&format!(
                ", as uid {} gid {} with no capabilities",
                who.uid, who.gid
            ));
        }
        if let Some(n) = self.network {
            line.push_str(&format!(", network: {}", n.as_str()));
        }
        if let Some(m) = &self.message {
            line.push_str(": ");
            line.push_str(m);
        }
        line
    }
}

/// Errors of the sandbox API.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot read the sandbox status file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sandbox status file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The variable that carries the policy (JSON) to the supervisor, and the one that names its
/// status file: not on its command line, which every local user can read in
/// `/proc/<pid>/cmdline` (the policy names the task's folders). A process's environment is
/// readable by its own uid (and root) only; the supervisor removes both before the program
/// starts.
pub const POLICY_ENV: &str = "FANOUT_SANDBOX_POLICY";
pub const STATUS_FILE_ENV: &str = "FANOUT_SANDBOX_STATUS_FILE";
/// The pid of the process that started the helper: the helper asks for SIGTERM when its
/// parent dies and ends at once when that parent is already gone.
pub const PARENT_PID_ENV: &str = "FANOUT_SANDBOX_PARENT";

/// A `std` command that runs `self_exe sandbox-exec -- program args…`, i.e. `program` under
/// the supervisor with `policy` applied; the policy and the status file travel in the
/// command's environment ([`POLICY_ENV`], [`STATUS_FILE_ENV`]), so the caller must not clear
/// it.
///
/// The caller sets cwd, environment and stdio (they pass straight through to `program`) and
/// spawns it; fanout's process code also puts it in its own process group and sets
/// `PR_SET_PDEATHSIG=SIGTERM` on it. After the child started (or exited), [`read_report`] on
/// `status_file` tells the enforcement status. Exit code: the program's (128+signal if it was
/// killed), [`EXIT_NOT_ENFORCED`] or [`EXIT_EXEC_FAILED`].
pub fn supervised_command(
    self_exe: &Path,
    policy: &Policy,
    status_file: &Path,
    program: &OsStr,
    args: &[OsString],
) -> std::process::Command {
    let json = if policy.isolate_net {
        // Whoever built the policy: a tree with its own network never sees the invoker's
        // credentials (this process's HOME is the invoker's; the tree's is a private one).
        let mut policy = policy.clone();
        for p in super::credentials::of_invoker() {
            if !policy.hide.contains(&p) {
                policy.hide.push(p);
            }
        }
        serde_json::to_string(&policy)
    } else {
        serde_json::to_string(policy)
    }
    .expect("a Policy always serializes");
    let mut cmd = std::process::Command::new(supervisor_exe(self_exe));
    cmd.env(POLICY_ENV, json)
        .env(STATUS_FILE_ENV, status_file)
        .arg("sandbox-exec")
        .arg("--")
        .arg(program)
        .args(args);
    cmd
}

/// What `fanout-supervisor --version` prints: the crate's version and the version of the
/// policy it reads (raised whenever [`Policy`] changes shape).
pub const SUPERVISOR_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+policy.1");

/// The program that supervises a sandboxed command: `fanout-supervisor` beside `self_exe`
/// when it is there and of the same version (checked once per process), else `self_exe`
/// itself (`fanout sandbox-exec`). Both take the same arguments.
pub fn supervisor_exe(self_exe: &Path) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CHOSEN: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| Mutex::new(HashMap::new()));
    let mut chosen = chosen.lock().unwrap_or_else(|e| e.into_inner());
    chosen
        .entry(self_exe.to_path_buf())
        .or_insert_with(|| {
            let helper = self_exe.with_file_name("fanout-supervisor");
            let same_version = std::process::Command::new(&helper)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .is_ok_and(|o| {
                    o.status.success()
                        && String::from_utf8_lossy(&o.stdout).trim() == SUPERVISOR_VERSION
                });
            if same_version {
                helper
            } else {
                self_exe.to_path_buf()
            }
        })
        .clone()
}

/// Reads the report the helper wrote to `status_file`. The file appears once the sandboxed
/// child has applied its ruleset (before the program runs); it is complete once it exists.
pub fn read_report(status_file: &Path) -> Result<SandboxReport, SandboxError> {
    let text = std::fs::read(status_file).map_err(|source| SandboxError::Io {
        path: status_file.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| SandboxError::Parse {
        path: status_file.to_path_buf(),
        source,
    })
}

/// Whether the child's network is its own, as the report tells.
#[derive(
    schemars::JsonSchema, Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq,
)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkConfinement {
    /// A network namespace with only a loopback interface.
    Namespace,
    /// Fanout's network, TCP limited by Landlock's port rule (UDP not limited).
    LandlockPorts,
    /// Fanout's network, nothing limited.
    Any,
}

impl NetworkConfinement {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkConfinement::Namespace => "namespace",
            NetworkConfinement::LandlockPorts => "landlock-ports",
            NetworkConfinement::Any => "any",
        }
    }
}
