//! What a task file says, as fanout holds it once read: agents, defaults, tasks, caches.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::ids::TaskId;

/// How fanout talks to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Any MCP server with a Codex-like tool (`codex mcp-server`).
    Mcp,
    /// `codex app-server` (Codex 0.154+).
    CodexAppServer,
    /// A plain command run in the worktree, prompt on stdin and in `FANOUT_PROMPT`.
    Exec,
    /// Detect from `codex --version`: `mcp` up to 0.153.x, `codex-app-server` from 0.154.0.
    Auto,
}

impl Protocol {
    pub(super) fn parse(s: &str) -> Option<Protocol> {
        Some(match s {
            "mcp" => Protocol::Mcp,
            "codex-app-server" => Protocol::CodexAppServer,
            "exec" => Protocol::Exec,
            "auto" => Protocol::Auto,
            _ => return None,
        })
    }
}

/// A verify command: an argv list, or a string run by `sh -c`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum VerifyCommand {
    Argv(Vec<String>),
    Shell(String),
}

impl VerifyCommand {
    pub fn argv(&self) -> Vec<String> {
        match self {
            VerifyCommand::Argv(v) => v.clone(),
            VerifyCommand::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// How task workspaces are made (`--workspace`, `defaults.workspace`; see docs/workspaces.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceChoice {
    /// Overlay when a probe at the run's start shows it works, else worktree.
    #[default]
    Auto,
    /// A shared read-only checkout per start commit under a per-task upper folder.
    Overlay,
    /// A full git worktree per task.
    Worktree,
}

impl WorkspaceChoice {
    pub const NAMES: [&'static str; 3] = ["auto", "overlay", "worktree"];

    pub fn parse(s: &str) -> Option<WorkspaceChoice> {
        match s {
            "auto" => Some(WorkspaceChoice::Auto),
            "overlay" => Some(WorkspaceChoice::Overlay),
            "worktree" => Some(WorkspaceChoice::Worktree),
            _ => None,
        }
    }
}

// Candidates (best-of-N): `candidates` and `select`.

/// One candidate of a task (`candidates`): a separate attempt in its own workspace, with its
/// own agent profile (`None`: the task's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateSpec {
    pub agent: Option<String>,
}

/// Most candidates a task may run.
pub const MAX_CANDIDATES: u32 = 20;

/// How the task's commit is chosen among its passing candidates (`select`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectMode {
    /// Claude Code reads the passing candidates' diffs and names the best, with a reason.
    Review,
    /// The fewest changed lines (insertions + deletions); ties go to the lower number.
    #[default]
    Smallest,
    /// The first candidate whose gates pass; the others are stopped.
    First,
}

impl SelectMode {
    pub const NAMES: [&'static str; 3] = ["review", "smallest", "first"];

    pub fn parse(s: &str) -> Option<SelectMode> {
        match s {
            "review" => Some(SelectMode::Review),
            "smallest" => Some(SelectMode::Smallest),
            "first" => Some(SelectMode::First),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SelectMode::Review => "review",
            SelectMode::Smallest => "smallest",
            SelectMode::First => "first",
        }
    }
}

// Overlap before dispatch (issue 21).
/// What tasks whose `paths` overlap do (`--overlap`, `defaults.overlap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapChoice {
    /// One after another in a lane, each from the verified result of the one before: a
    /// conflict costs a whole run again, waiting costs parallelism among these tasks only.
    #[default]
    Serialize,
    /// At the same time, as if they did not overlap (they may conflict).
    Parallel,
}

impl OverlapChoice {
    pub const NAMES: &'static [&'static str] = &["serialize", "parallel"];

    pub fn parse(s: &str) -> Option<OverlapChoice> {
        match s {
            "serialize" => Some(OverlapChoice::Serialize),
            "parallel" => Some(OverlapChoice::Parallel),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OverlapChoice::Serialize => "serialize",
            OverlapChoice::Parallel => "parallel",
        }
    }
}

/// What a task does when it conflicts with what was merged before it (`--on-conflict`,
/// `defaults.on_conflict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// The task ends `conflict`.
    #[default]
    Fail,
    /// The task runs again from the integration head, up to this many times.
    Retry(u32),
    /// The task's own agent resolves the conflict (its change merged onto the integration head
    /// with the conflicting hunks marked), up to this many rounds.
    Resolve(u32),
}

impl OnConflict {
    /// `fail`, `retry` / `resolve` (once) or `retry=N` / `resolve=N` (N from 1 to 100).
    pub fn parse(s: &str) -> Result<OnConflict, String> {
        let rounds = |rest: Option<&str>| match rest.map(str::parse::<u32>) {
            None => Some(1),
            Some(Ok(n)) if (1..=100).contains(&n) => Some(n),
            _ => None,
        };
        let (word, rest) = match s.split_once('=') {
            Some((w, n)) => (w, Some(n)),
            None => (s, None),
        };
        let found = match word {
            "fail" if rest.is_none() => Some(OnConflict::Fail),
            "retry" => rounds(rest).map(OnConflict::Retry),
            "resolve" => rounds(rest).map(OnConflict::Resolve),
            _ => None,
        };
        found.ok_or_else(|| {
            format!("expected fail, retry[=N] or resolve[=N] (N from 1 to 100), found {s:?}")
        })
    }

    /// How many times a conflicting task runs again (retry) or is given back to its agent
    /// (resolve).
    pub fn retries(self) -> u32 {
        match self {
            OnConflict::Fail => 0,
            OnConflict::Retry(n) | OnConflict::Resolve(n) => n,
        }
    }

    /// Whether a conflict goes back to the task's own agent to resolve.
    pub fn resolves(self) -> bool {
        matches!(self, OnConflict::Resolve(_))
    }
}

/// `integrate`: a verify command run on the integration result (see docs/taskfile.md).
#[derive(Clone, Debug, PartialEq)]
pub struct IntegrateSpec {
    pub verify: VerifyCommand,
    pub timeout_secs: Option<f64>,
    pub verify_retries: Option<u32>,
    /// Integration repair (issue 21): rounds the culprit's agent gets to fix the integration
    /// before it is taken out (0: none).
    pub repair: Option<u32>,
}

/// An agent profile. Field names follow Codex's `mcp_servers` table where they overlap.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentProfile {
    pub protocol: Protocol,
    pub command: String,
    pub args: Vec<String>,
    /// Working directory of the agent process, relative to the worktree (default: the worktree).
    pub cwd: Option<String>,
    /// Environment for the agent; `${VAR}` is expanded from fanout's environment.
    pub env: BTreeMap<String, String>,
    /// MCP tool to call (default `codex`).
    pub tool: String,
    /// Extra tool arguments, merged under `{"prompt", "cwd"}`.
    pub arguments: Map<String, Value>,
    pub startup_timeout_sec: f64,
    pub tool_timeout_sec: f64,
    pub enabled: bool,
    /// TCP ports the sandbox lets the agent connect to, besides 443.
    pub connect_ports: Vec<u16>,
    /// Variables of fanout's environment passed to the agent besides the base allow-list.
    pub env_pass: Vec<String>,
    /// MCP servers written into a Codex agent's private `config.toml` (`[mcp_servers.NAME]`).
    pub mcp_servers: BTreeMap<String, McpServerSpec>,
}

/// The built-in MCP server name that expands to Claude Code's `claude mcp serve`.
pub const CLAUDE_CODE_SERVER: &str = "claude-code";

/// One `mcp_servers` entry, with Codex's own field names. `None` fields are left to Codex (or,
/// for the built-in `claude-code`, to fanout's defaults).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct McpServerSpec {
    pub command: Option<String>,
    /// A streamable HTTP server instead of a command.
    pub url: Option<String>,
    /// With `url`: the variable holding the bearer token (passed by name).
    pub bearer_token_env_var: Option<String>,
    pub http_headers: BTreeMap<String, String>,
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub startup_timeout_sec: Option<f64>,
    pub tool_timeout_sec: Option<f64>,
    pub enabled_tools: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

impl AgentProfile {
    pub fn new(protocol: Protocol, command: &str) -> AgentProfile {
        AgentProfile {
            protocol,
            command: command.to_string(),
            args: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            tool: "codex".into(),
            arguments: Map::new(),
            startup_timeout_sec: DEFAULT_STARTUP_TIMEOUT_SEC,
            tool_timeout_sec: DEFAULT_TOOL_TIMEOUT_SEC,
            enabled: true,
            connect_ports: Vec::new(),
            env_pass: Vec::new(),
            mcp_servers: BTreeMap::new(),
        }
    }
}

pub const DEFAULT_STARTUP_TIMEOUT_SEC: f64 = 30.0;
pub const DEFAULT_TOOL_TIMEOUT_SEC: f64 = 900.0;
pub const DEFAULT_TASK_TIMEOUT_SEC: f64 = 900.0;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;
/// Most reruns of a failing verify command (`verify_retries`).
pub const MAX_RETRIES: u32 = 10;

/// Values every task inherits unless it sets its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    pub agent: Option<String>,
    pub timeout_secs: Option<f64>,
    pub verify: Option<VerifyCommand>,
    pub verify_timeout_secs: Option<f64>,
    /// How many times a failing verify command runs again.
    pub verify_retries: Option<u32>,
    pub max_attempts: Option<u32>,
    pub max_file_bytes: Option<u64>,
    pub max_change_bytes: Option<u64>,
    /// The review gate every task gets unless it sets its own.
    pub review: Option<ReviewSpec>,
    /// Ask Claude Code for a root-cause diagnosis before each feedback turn.
    pub diagnose: Option<bool>,
    pub on_conflict: Option<OnConflict>,
    /// Overlap before dispatch (issue 21): what tasks whose `paths` overlap do.
    pub overlap: Option<OverlapChoice>,
    /// How task workspaces are made (`--workspace` overrides).
    pub workspace: Option<WorkspaceChoice>,
    pub setup: Option<VerifyCommand>,
    pub setup_timeout_secs: Option<f64>,
    /// The long form's `inputs`: what the setup layer depends on (`None`: the whole tree).
    pub setup_inputs: Option<Vec<String>>,
    /// The long form's `once` (default true): one shared layer instead of a run per workspace.
    pub setup_once: Option<bool>,
    /// What each phase reaches through the egress proxy (`--net isolated`).
    pub network: Option<super::network::NetworkSpec>,
    /// Integration repair (issue 21): globs a repair round may never change.
    pub protect: Option<Vec<String>>,
    /// Candidates: the attempts every task runs side by side (`None`: one, no candidates).
    pub candidates: Option<Vec<CandidateSpec>>,
    /// Candidates: how the task's commit is chosen among them.
    pub select: Option<SelectMode>,
}

/// The optional `review` gate: Claude Code reads the task's diff and approves or rejects it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewSpec {
    /// What the reviewer checks (the diff and the answer format are added by fanout).
    pub prompt: String,
    /// Seconds the reviewer may take (default 300).
    pub timeout_secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub id: TaskId,
    pub prompt: String,
    pub agent: Option<String>,
    pub paths: Vec<String>,
    pub timeout_secs: Option<f64>,
    pub verify: Option<VerifyCommand>,
    pub verify_timeout_secs: Option<f64>,
    pub verify_retries: Option<u32>,
    pub depends_on: Vec<TaskId>,
    pub max_attempts: Option<u32>,
    pub max_file_bytes: Option<u64>,
    pub max_change_bytes: Option<u64>,
    /// Run in the workspace, in the sandbox, before the agent.
    pub setup: Option<VerifyCommand>,
    pub setup_timeout_secs: Option<f64>,
    pub setup_inputs: Option<Vec<String>>,
    pub setup_once: Option<bool>,
    /// A template (`for_each`) not expanded yet: see [`generate`].
    pub template: bool,
    /// `group`: tasks of one group land together or not at all.
    pub group: Option<String>,
    pub review: Option<ReviewSpec>,
    pub network: Option<super::network::NetworkSpec>,
    /// Integration repair (issue 21): globs a repair round may never change.
    pub protect: Option<Vec<String>>,
    /// Candidates: the attempts the task runs side by side (`None`: `defaults`' or one).
    pub candidates: Option<Vec<CandidateSpec>>,
    /// Candidates: how the task's commit is chosen among them.
    pub select: Option<SelectMode>,
}

/// A named cache shared by the tasks of every run (`caches`): a fanout-owned folder that the
/// variables in `env` point at (each to the folder itself, or to a subfolder of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    pub name: String,
    /// (variable, subfolder; "" = the folder itself)
    pub env: Vec<(String, String)>,
    /// The subfolders shared between tasks and runs ("" = the whole folder); the rest of a
    /// task's view of the cache is its own.
    pub shared: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskFile {
    pub base: Option<String>,
    /// `commit.author`, as written (`Name <email>`).
    pub commit_author: Option<String>,
    /// `include`: globs of ignored files copied into every workspace.
    pub include: Vec<String>,
    pub caches: Vec<Cache>,
    /// `caches_fill`: the command that fills the shared caches, once per run, on the base.
    pub caches_fill: Option<VerifyCommand>,
    pub defaults: Defaults,
    pub agents: BTreeMap<String, AgentProfile>,
    pub verifier: Option<AgentProfile>,
    pub integrate: Option<IntegrateSpec>,
    /// `merge`: how conflicts in the files the rules name are resolved, first match wins.
    pub merge: Vec<MergeRule>,
    pub tasks: Vec<TaskSpec>,
    // Accounting and budgets (issue 23):
    /// `pricing`: model → US dollars per million tokens.
    pub pricing: crate::usage::pricing::Pricing,
    /// `budget`: what a task and the run may spend.
    pub budget: crate::usage::budget::Budget,
}

pub use crate::git::merge_rules::MergeStrategy;

/// One `merge` rule: files matching `paths` (globs) resolve a content conflict by `strategy`.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeRule {
    pub paths: Vec<String>,
    pub strategy: MergeStrategy,
}

/// Splits `Name <email>` (the format of `commit.author`, as git writes identities).
pub fn parse_author(raw: &str) -> Option<(String, String)> {
    let re_ok =
        raw.ends_with('>') && raw.matches('<').count() == 1 && raw.matches('>').count() == 1;
    let (name, rest) = raw.split_once(" <")?;
    let email = rest.strip_suffix('>')?;
    (re_ok && !name.trim().is_empty() && !email.is_empty() && !email.contains(char::is_whitespace))
        .then(|| (name.trim().to_string(), email.to_string()))
}

/// Agent names that exist without an `agents` entry. `codex` is resolved by the Codex module.
pub const BUILTIN_AGENTS: &[&str] = &["codex"];

/// Lists the repository's tracked files at the file's `base` (or the run's).
pub type TrackedFiles<'a> = dyn Fn(Option<&str>) -> Result<Vec<String>, String> + 'a;

/// Reads a tracked file (path) at the file's `base` (or the run's), up to a size (bytes):
/// `None` when it cannot be read or is larger. For `for_each.contains`.
pub type ReadTrackedAt<'a> = dyn Fn(Option<&str>, &str, u64) -> Option<Vec<u8>> + 'a;

/// Expands `${VAR}` from the environment; a missing variable is an error naming it.
pub fn expand_env(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated ${{ in {value:?}"));
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {name:?}"));
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::OnConflict;

    #[test]
    fn on_conflict_parses_fail_retry_and_resolve_with_their_rounds() {
        assert_eq!(OnConflict::parse("fail"), Ok(OnConflict::Fail));
        assert_eq!(OnConflict::parse("retry"), Ok(OnConflict::Retry(1)));
        assert_eq!(OnConflict::parse("retry=3"), Ok(OnConflict::Retry(3)));
        assert_eq!(OnConflict::parse("resolve"), Ok(OnConflict::Resolve(1)));
        assert_eq!(
            OnConflict::parse("resolve=100"),
            Ok(OnConflict::Resolve(100))
        );
        for bad in ["resolve=0", "resolve=101", "fail=1", "resolve=", "merge"] {
            let e = OnConflict::parse(bad).expect_err(bad);
            assert!(e.contains("resolve[=N]"), "{e}");
        }
        assert!(OnConflict::Resolve(2).resolves() && !OnConflict::Retry(2).resolves());
        assert_eq!(OnConflict::Resolve(2).retries(), 2);
    }
}
