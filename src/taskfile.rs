/*!
The task file (`tasks.json`, version 1): parsing and validation.

The file is read as a JSON value first (so syntax errors carry line and column), then walked
by hand so that *every* problem is collected with its JSON path, instead of stopping at the
first one as serde's derive would. Unknown fields are errors: a typo must not be ignored.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

use crate::ids::TaskId;

mod agents;
pub mod caches;
pub mod generate;
mod problem;
mod read;
pub mod schema;
mod sections;
mod tasks;

pub use problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum TaskFileError {
    #[error("cannot read task file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task file {path} has {} problem(s):\n{}", problems.len(), render(problems))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
    /// Valid JSON without a task file's shape: nothing of its content is quoted (it may be a
    /// credentials file given by mistake).
    #[error("{path} is not a fanout task file")]
    NotATaskFile { path: String },
}

/// Whether a JSON document has a task file's shape: an object with `tasks` or `version`, or
/// an array of objects of which at least one looks like a task (`prompt` or `for_each`).
pub fn has_task_file_shape(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.contains_key("tasks") || m.contains_key("version"),
        Value::Array(items) => {
            items.iter().all(Value::is_object)
                && (items.is_empty()
                    || items.iter().any(|i| {
                        i.as_object()
                            .is_some_and(|o| o.contains_key("prompt") || o.contains_key("for_each"))
                    }))
        }
        _ => false,
    }
}

/// [`parse`] for the file at `path`, refusing valid JSON without a task file's shape first.
fn parse_file(path: &Path, text: &str) -> Result<TaskFile, TaskFileError> {
    let json = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Ok(value) = serde_json::from_str::<Value>(json) {
        if !has_task_file_shape(&value) {
            return Err(TaskFileError::NotATaskFile {
                path: path.display().to_string(),
            });
        }
    }
    parse(text).map_err(|problems| TaskFileError::Invalid {
        path: path.display().to_string(),
        problems,
    })
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

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
    fn parse(s: &str) -> Option<Protocol> {
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
}

impl OnConflict {
    /// `fail`, `retry` (once) or `retry=N` (N from 1 to 100).
    pub fn parse(s: &str) -> Result<OnConflict, String> {
        match s {
            "fail" => Ok(OnConflict::Fail),
            "retry" => Ok(OnConflict::Retry(1)),
            _ => match s.strip_prefix("retry=").map(str::parse::<u32>) {
                Some(Ok(n)) if (1..=100).contains(&n) => Ok(OnConflict::Retry(n)),
                _ => Err(format!(
                    "expected fail, retry or retry=N (N from 1 to 100), found {s:?}"
                )),
            },
        }
    }

    /// How many times a conflicting task runs again.
    pub fn retries(self) -> u32 {
        match self {
            OnConflict::Fail => 0,
            OnConflict::Retry(n) => n,
        }
    }
}

/// `integrate`: a verify command run on the integration result (see docs/taskfile.md).
#[derive(Clone, Debug, PartialEq)]
pub struct IntegrateSpec {
    pub verify: VerifyCommand,
    pub timeout_secs: Option<f64>,
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
            mcp_servers: BTreeMap::new(),
        }
    }
}

pub const DEFAULT_STARTUP_TIMEOUT_SEC: f64 = 30.0;
pub const DEFAULT_TOOL_TIMEOUT_SEC: f64 = 900.0;
pub const DEFAULT_TASK_TIMEOUT_SEC: f64 = 900.0;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;

/// Values every task inherits unless it sets its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    pub agent: Option<String>,
    pub timeout_secs: Option<f64>,
    pub verify: Option<VerifyCommand>,
    pub verify_timeout_secs: Option<f64>,
    pub max_attempts: Option<u32>,
    pub max_file_bytes: Option<u64>,
    pub max_change_bytes: Option<u64>,
    /// The review gate every task gets unless it sets its own.
    pub review: Option<ReviewSpec>,
    /// Ask Claude Code for a root-cause diagnosis before each feedback turn.
    pub diagnose: Option<bool>,
    pub on_conflict: Option<OnConflict>,
    /// How task workspaces are made (`--workspace` overrides).
    pub workspace: Option<WorkspaceChoice>,
    pub setup: Option<VerifyCommand>,
    pub setup_timeout_secs: Option<f64>,
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
    pub depends_on: Vec<TaskId>,
    pub max_attempts: Option<u32>,
    pub max_file_bytes: Option<u64>,
    pub max_change_bytes: Option<u64>,
    /// Run in the workspace, in the sandbox, before the agent.
    pub setup: Option<VerifyCommand>,
    pub setup_timeout_secs: Option<f64>,
    /// A template (`for_each`) not expanded yet: see [`generate`].
    pub template: bool,
    pub review: Option<ReviewSpec>,
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
    pub tasks: Vec<TaskSpec>,
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

/// Reads a task file and expands its templates over `tracked` (the repository's tracked files
/// at the base commit); returns the expanded text (a plain task file) and its parse.
pub fn load_expanded(
    path: &Path,
    tracked: &TrackedFiles<'_>,
) -> Result<(String, TaskFile), TaskFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let invalid = |problems| TaskFileError::Invalid {
        path: path.display().to_string(),
        problems,
    };
    let file = parse_file(path, &text)?;
    if !file.tasks.iter().any(|t| t.template) {
        return Ok((text, file));
    }
    let value: Value = serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
        .map_err(|e| {
            invalid(vec![Problem {
                location: "$".into(),
                message: e.to_string(),
            }])
        })?;
    let files = tracked(file.base.as_deref()).map_err(|e| {
        invalid(vec![Problem {
            location: "$".into(),
            message: format!("cannot list the repository's files: {e}"),
        }])
    })?;
    let expanded = generate::expand(&value, &files).map_err(invalid)?;
    let text = serde_json::to_string_pretty(&expanded).unwrap_or_default();
    let file = parse(&text).map_err(invalid)?;
    Ok((text, file))
}

/// Reads and validates a task file.
pub fn load(path: &Path) -> Result<TaskFile, TaskFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_file(path, &text)
}

/// Parses task-file text, returning every problem found.
pub fn parse(text: &str) -> Result<TaskFile, Vec<Problem>> {
    // Editors on Windows save UTF-8 with a byte-order mark, which JSON parsers reject.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = serde_json::from_str(text).map_err(|e| {
        vec![Problem {
            location: format!("line {}, column {}", e.line(), e.column()),
            message: format!("invalid JSON: {}", strip_position(&e.to_string())),
        }]
    })?;
    let mut v = Validator::default();
    let file = v.file(&value);
    if v.problems.is_empty() {
        Ok(file)
    } else {
        Err(v.problems)
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

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

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    /// Agent names a task may use: the file's profiles plus the built-in ones.
    known_agents: BTreeSet<String>,
}

use read::kind;
pub use tasks::find_cycle;

#[cfg(test)]
mod tests;
