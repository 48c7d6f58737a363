/*!
The task file (`tasks.json`, version 1): parsing and validation.

The file is read as a JSON value first (so syntax errors carry line and column), then walked
by hand so that *every* problem is collected with its JSON path, instead of stopping at the
first one as serde's derive would. Unknown fields are errors: a typo must not be ignored.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use crate::ids::TaskId;

pub mod caches;
pub mod generate;
pub mod schema;

/// One thing wrong with a task file, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `$.tasks[2].id`, or `line 3, column 7` for syntax errors.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

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
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskFile {
    pub base: Option<String>,
    /// `commit.author`, as written (`Name <email>`).
    pub commit_author: Option<String>,
    /// `include`: globs of ignored files copied into every workspace.
    pub include: Vec<String>,
    pub caches: Vec<Cache>,
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
    let file = parse(&text).map_err(invalid)?;
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
    parse(&text).map_err(|problems| TaskFileError::Invalid {
        path: path.display().to_string(),
        problems,
    })
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

impl Validator {
    fn problem(&mut self, location: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.to_string(),
            message: message.into(),
        });
    }

    /// Reports fields not in `allowed`.
    fn known_fields(&mut self, obj: &Map<String, Value>, path: &str, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.problem(
                    &format!("{path}.{key}"),
                    format!(
                        "unknown field {key:?}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn object<'a>(&mut self, value: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        match value {
            Value::Object(m) => Some(m),
            other => {
                self.problem(path, format!("expected an object, found {}", kind(other)));
                None
            }
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match obj.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    &format!("{path}.{key}"),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn strings(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<Vec<String>> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.problem(
                            &format!("{loc}[{i}]"),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.problem(
                    &loc,
                    format!("expected an array of strings, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn positive(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<f64> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::Number(n) => match n.as_f64() {
                Some(x) if x > 0.0 && x.is_finite() => Some(x),
                _ => {
                    self.problem(&loc, format!("must be a positive number, found {n}"));
                    None
                }
            },
            other => {
                self.problem(
                    &loc,
                    format!("expected a positive number, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A size in bytes: a whole number of at least 1.
    fn bytes(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<u64> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::Number(n) => match n.as_u64() {
                Some(x) if x >= 1 => Some(x),
                _ => {
                    self.problem(
                        &loc,
                        format!("must be a whole number of bytes (at least 1), found {n}"),
                    );
                    None
                }
            },
            other => {
                self.problem(
                    &loc,
                    format!("expected a whole number of bytes, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn count(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<u32> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::Number(n) => match n.as_u64() {
                Some(x) if (1..=100).contains(&x) => Some(x as u32),
                _ => {
                    self.problem(
                        &loc,
                        format!("must be a whole number from 1 to 100, found {n}"),
                    );
                    None
                }
            },
            other => {
                self.problem(
                    &loc,
                    format!("expected a whole number, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match obj.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(
                    &format!("{path}.{key}"),
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn verify(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<VerifyCommand> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(VerifyCommand::Shell(s.clone())),
            Value::Array(_) => {
                let argv = self.strings(obj, key, path)?;
                if argv.is_empty() || argv[0].is_empty() {
                    self.problem(&loc, "verify command must not be empty");
                    return None;
                }
                Some(VerifyCommand::Argv(argv))
            }
            Value::String(_) => {
                self.problem(&loc, "verify command must not be empty");
                None
            }
            other => {
                self.problem(
                    &loc,
                    format!(
                        "expected an argv array or a shell string, found {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }

    fn file(&mut self, value: &Value) -> TaskFile {
        let mut file = TaskFile {
            base: None,
            commit_author: None,
            include: Vec::new(),
            caches: Vec::new(),
            defaults: Defaults::default(),
            agents: BTreeMap::new(),
            verifier: None,
            integrate: None,
            tasks: Vec::new(),
        };
        let tasks_value = match value {
            Value::Array(_) => value,
            Value::Object(obj) => {
                self.known_fields(obj, "$", &schema::names(schema::FILE_FIELDS));
                match obj.get("version") {
                    None => {}
                    Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
                    Some(other) => self.problem(
                        "$.version",
                        format!("unsupported version {other}; this fanout reads version 1"),
                    ),
                }
                file.base = self.string(obj, "base", "$");
                file.include = self.strings(obj, "include", "$").unwrap_or_default();
                for (i, g) in file.include.iter().enumerate() {
                    if let Err(e) = globset::Glob::new(g) {
                        self.problem(&format!("$.include[{i}]"), format!("invalid glob: {e}"));
                    }
                }
                if let Some(c) = obj.get("commit") {
                    file.commit_author = self.commit(c);
                }
                if let Some(c) = obj.get("caches") {
                    file.caches = self.caches(c);
                }
                if let Some(d) = obj.get("defaults") {
                    file.defaults = self.defaults(d);
                }
                if let Some(a) = obj.get("agents") {
                    if let Some(agents) = self.object(a, "$.agents") {
                        for (name, profile) in agents {
                            let loc = format!("$.agents.{name}");
                            if name.is_empty()
                                || !name
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                            {
                                self.problem(&loc, "agent names are slugs ([A-Za-z0-9._-])");
                            }
                            if let Some(p) = self.profile(profile, &loc, "codex") {
                                file.agents.insert(name.clone(), p);
                            }
                        }
                    }
                }
                if let Some(v) = obj.get("verifier") {
                    file.verifier = self.profile(v, "$.verifier", "Read");
                }
                if let Some(v) = obj.get("integrate") {
                    file.integrate = self.integrate(v);
                }
                match obj.get("tasks") {
                    Some(t) => t,
                    None => {
                        self.problem("$", "missing field \"tasks\"");
                        return file;
                    }
                }
            }
            other => {
                self.problem(
                    "$",
                    format!(
                        "expected an object with \"tasks\" or an array of tasks, found {}",
                        kind(other)
                    ),
                );
                return file;
            }
        };
        self.known_agents = file.agents.keys().cloned().collect();
        self.known_agents
            .extend(BUILTIN_AGENTS.iter().map(|s| s.to_string()));
        if let Some(a) = &file.defaults.agent {
            if !self.known_agents.contains(a) {
                let known = self.agent_list();
                self.problem(
                    "$.defaults.agent",
                    format!("unknown agent {a:?}; known agents: {known}"),
                );
            }
        }
        let tasks_path = if value.is_array() { "$" } else { "$.tasks" };
        let Value::Array(items) = tasks_value else {
            self.problem(
                tasks_path,
                format!("expected an array of tasks, found {}", kind(tasks_value)),
            );
            return file;
        };
        if items.is_empty() {
            self.problem(tasks_path, "no tasks: the list is empty");
        }
        // Every id the file names, valid or not, so dependencies are checked on every task.
        let all_ids: BTreeSet<String> = items
            .iter()
            .filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let loc = format!("{tasks_path}[{i}]");
            // Told even when either task has other problems: each is worth knowing at once.
            let is_template = item.get("for_each").is_some();
            let duplicate = match item
                .get("id")
                .and_then(Value::as_str)
                .filter(|_| !is_template)
            {
                Some(id) => {
                    match seen.get(id) {
                        Some(&first) => {
                            self.problem(
                            &format!("{loc}.id"),
                            format!("duplicate task id {id:?} (first used at {tasks_path}[{first}])"),
                        );
                            true
                        }
                        None => {
                            seen.insert(id.to_string(), i);
                            false
                        }
                    }
                }
                None => false,
            };
            if let Some(task) = self.task(item, &loc, &all_ids) {
                if !duplicate {
                    file.tasks.push(task);
                }
            }
        }
        self.cross_checks(&file, tasks_path);
        file
    }

    /// `commit`: `{"author": "Name <email>"}`.
    fn commit(&mut self, value: &Value) -> Option<String> {
        let obj = self.object(value, "$.commit")?;
        self.known_fields(obj, "$.commit", &["author"]);
        let author = self.string(obj, "author", "$.commit")?;
        if parse_author(&author).is_none() {
            self.problem(
                "$.commit.author",
                format!("{author:?} is not \"Name <email>\""),
            );
            return None;
        }
        Some(author)
    }

    /// `caches`: preset names (`"pip"`) or `{"name": …, "env": ["VAR", …]}`.
    fn caches(&mut self, value: &Value) -> Vec<Cache> {
        let path = "$.caches";
        let Value::Array(items) = value else {
            self.problem(
                path,
                format!(
                    "expected an array of cache names or objects, found {}",
                    kind(value)
                ),
            );
            return Vec::new();
        };
        let mut out: Vec<Cache> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let loc = format!("{path}[{i}]");
            let cache = match item {
                Value::String(name) => match caches::preset(name) {
                    Some(vars) => Cache {
                        name: name.clone(),
                        env: vars
                            .iter()
                            .map(|(v, s)| (v.to_string(), s.to_string()))
                            .collect(),
                    },
                    None => {
                        self.problem(
                            &loc,
                            format!(
                                "unknown cache preset {name:?}; presets: {} (or an object {{\"name\", \"env\"}})",
                                caches::PRESETS.join(", ")
                            ),
                        );
                        continue;
                    }
                },
                Value::Object(obj) => {
                    self.known_fields(obj, &loc, &["name", "env"]);
                    let name = self.string(obj, "name", &loc);
                    let env = self.strings(obj, "env", &loc).unwrap_or_default();
                    let Some(name) = name else {
                        if !obj.contains_key("name") {
                            self.problem(&loc, "missing field \"name\"");
                        }
                        continue;
                    };
                    if env.is_empty() {
                        self.problem(&loc, "`env` must name at least one variable");
                    }
                    for (j, v) in env.iter().enumerate() {
                        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            self.problem(
                                &format!("{loc}.env[{j}]"),
                                format!("{v:?} is not a variable name"),
                            );
                        }
                    }
                    Cache {
                        name,
                        env: env.into_iter().map(|v| (v, String::new())).collect(),
                    }
                }
                other => {
                    self.problem(
                        &loc,
                        format!("expected a preset name or an object, found {}", kind(other)),
                    );
                    continue;
                }
            };
            // The name is a folder name under the caches folder.
            if crate::ids::TaskId::parse(&cache.name).is_err() {
                self.problem(
                    &loc,
                    format!(
                        "cache name {:?}: 1-64 of [A-Za-z0-9._-], no leading dot",
                        cache.name
                    ),
                );
                continue;
            }
            if out.iter().any(|c| c.name == cache.name) {
                self.problem(&loc, format!("duplicate cache {:?}", cache.name));
                continue;
            }
            out.push(cache);
        }
        out
    }

    fn defaults(&mut self, value: &Value) -> Defaults {
        let path = "$.defaults";
        let Some(obj) = self.object(value, path) else {
            return Defaults::default();
        };
        self.known_fields(obj, path, &schema::names(schema::DEFAULTS_FIELDS));
        Defaults {
            agent: self.string(obj, "agent", path),
            timeout_secs: self.positive(obj, "timeout_secs", path),
            verify: self.verify(obj, "verify", path),
            verify_timeout_secs: self.positive(obj, "verify_timeout_secs", path),
            max_attempts: self.count(obj, "max_attempts", path),
            max_file_bytes: self.bytes(obj, "max_file_bytes", path),
            max_change_bytes: self.bytes(obj, "max_change_bytes", path),
            review: self.review(obj, path),
            diagnose: self.boolean(obj, "diagnose", path),
            on_conflict: self.on_conflict(obj, "on_conflict", path),
            setup: self.verify(obj, "setup", path),
            setup_timeout_secs: self.positive(obj, "setup_timeout_secs", path),
        }
    }

    fn on_conflict(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<OnConflict> {
        let s = self.string(obj, key, path)?;
        match OnConflict::parse(&s) {
            Ok(o) => Some(o),
            Err(e) => {
                self.problem(&format!("{path}.{key}"), e);
                None
            }
        }
    }

    fn integrate(&mut self, value: &Value) -> Option<IntegrateSpec> {
        let path = "$.integrate";
        let obj = self.object(value, path)?;
        self.known_fields(obj, path, &schema::names(schema::INTEGRATE_FIELDS));
        let timeout_secs = self.positive(obj, "timeout_secs", path);
        if !obj.contains_key("verify") {
            self.problem(path, "missing field \"verify\"");
        }
        let verify = self.verify(obj, "verify", path)?;
        Some(IntegrateSpec {
            verify,
            timeout_secs,
        })
    }

    /// `review: {prompt, timeout_secs}`.
    fn review(&mut self, obj: &Map<String, Value>, path: &str) -> Option<ReviewSpec> {
        let value = obj.get("review")?;
        let loc = format!("{path}.review");
        let r = self.object(value, &loc)?;
        self.known_fields(r, &loc, &schema::names(schema::REVIEW_FIELDS));
        let timeout_secs = self.positive(r, "timeout_secs", &loc);
        let prompt = match self.string(r, "prompt", &loc) {
            Some(p) if !p.trim().is_empty() => p,
            Some(_) => {
                self.problem(&format!("{loc}.prompt"), "prompt must not be empty");
                return None;
            }
            None => {
                if !r.contains_key("prompt") {
                    self.problem(&loc, "missing field \"prompt\"");
                }
                return None;
            }
        };
        Some(ReviewSpec {
            prompt,
            timeout_secs,
        })
    }

    fn profile(&mut self, value: &Value, path: &str, default_tool: &str) -> Option<AgentProfile> {
        let obj = self.object(value, path)?;
        self.known_fields(obj, path, &schema::names(schema::PROFILE_FIELDS));
        let protocol = match self.string(obj, "protocol", path) {
            None => Protocol::Mcp,
            Some(s) => {
                match Protocol::parse(&s) {
                    Some(p) => p,
                    None => {
                        self.problem(
                        &format!("{path}.protocol"),
                        format!("unknown protocol {s:?}; expected mcp, codex-app-server, exec or auto"),
                    );
                        Protocol::Mcp
                    }
                }
            }
        };
        let command = match self.string(obj, "command", path) {
            Some(c) if !c.trim().is_empty() => c,
            Some(_) => {
                self.problem(&format!("{path}.command"), "command must not be empty");
                String::new()
            }
            None => {
                if !obj.contains_key("command") {
                    self.problem(path, "missing field \"command\"");
                }
                String::new()
            }
        };
        let mut profile = AgentProfile::new(protocol, &command);
        profile.tool = default_tool.to_string();
        if let Some(args) = self.strings(obj, "args", path) {
            profile.args = args;
        }
        profile.cwd = self.string(obj, "cwd", path);
        if let Some(env) = obj.get("env") {
            let loc = format!("{path}.env");
            if let Some(map) = self.object(env, &loc) {
                for (k, v) in map {
                    match v {
                        Value::String(s) => {
                            if let Err(e) = expand_env(s, &|n| std::env::var(n).ok()) {
                                self.problem(&format!("{loc}.{k}"), e);
                            }
                            profile.env.insert(k.clone(), s.clone());
                        }
                        other => self.problem(
                            &format!("{loc}.{k}"),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
            }
        }
        if let Some(tool) = self.string(obj, "tool", path) {
            profile.tool = tool;
        }
        if let Some(args) = obj.get("arguments") {
            if let Some(map) = self.object(args, &format!("{path}.arguments")) {
                profile.arguments = map.clone();
            }
        }
        if let Some(x) = self.positive(obj, "startup_timeout_sec", path) {
            profile.startup_timeout_sec = x;
        }
        if let Some(x) = self.positive(obj, "tool_timeout_sec", path) {
            profile.tool_timeout_sec = x;
        }
        if let Some(b) = self.boolean(obj, "enabled", path) {
            profile.enabled = b;
        }
        if let Some(ports) = obj.get("connect_ports") {
            let loc = format!("{path}.connect_ports");
            match ports {
                Value::Array(items) => {
                    for (i, p) in items.iter().enumerate() {
                        match p.as_u64() {
                            Some(n) if (1..=65535).contains(&n) => {
                                profile.connect_ports.push(n as u16)
                            }
                            _ => self
                                .problem(&format!("{loc}[{i}]"), "expected a TCP port (1-65535)"),
                        }
                    }
                }
                other => self.problem(
                    &loc,
                    format!("expected an array of ports, found {}", kind(other)),
                ),
            }
        }
        if let Some(servers) = obj.get("mcp_servers") {
            profile.mcp_servers = self.mcp_servers(servers, &format!("{path}.mcp_servers"));
        }
        Some(profile)
    }

    /// `mcp_servers`: name → `{command, args, env, …}`; the built-in `claude-code` may be
    /// `true` or `{}` (everything defaulted), `false` leaves a server out.
    fn mcp_servers(&mut self, value: &Value, path: &str) -> BTreeMap<String, McpServerSpec> {
        let mut out = BTreeMap::new();
        let Some(map) = self.object(value, path) else {
            return out;
        };
        for (name, entry) in map {
            let loc = format!("{path}.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            {
                self.problem(&loc, "MCP server names are [A-Za-z0-9_-]");
            }
            let builtin = name == CLAUDE_CODE_SERVER;
            let spec = match entry {
                Value::Bool(true) if builtin => McpServerSpec::default(),
                Value::Bool(true) => {
                    self.problem(&loc, format!("`true` only works for the built-in {CLAUDE_CODE_SERVER:?}; give a {{\"command\": …}} object"));
                    continue;
                }
                Value::Bool(false) => continue,
                Value::Object(obj) => {
                    self.known_fields(obj, &loc, &schema::names(schema::MCP_SERVER_FIELDS));
                    let command = self.string(obj, "command", &loc);
                    match &command {
                        Some(c) if c.trim().is_empty() => {
                            self.problem(&format!("{loc}.command"), "command must not be empty")
                        }
                        None if !builtin && !obj.contains_key("command") => {
                            self.problem(&loc, "missing field \"command\"")
                        }
                        _ => {}
                    }
                    let mut env = BTreeMap::new();
                    if let Some(e) = obj.get("env") {
                        let eloc = format!("{loc}.env");
                        if let Some(m) = self.object(e, &eloc) {
                            for (k, v) in m {
                                match v {
                                    Value::String(s) => {
                                        if let Err(e) = expand_env(s, &|n| std::env::var(n).ok()) {
                                            self.problem(&format!("{eloc}.{k}"), e);
                                        }
                                        env.insert(k.clone(), s.clone());
                                    }
                                    other => self.problem(
                                        &format!("{eloc}.{k}"),
                                        format!("expected a string, found {}", kind(other)),
                                    ),
                                }
                            }
                        }
                    }
                    McpServerSpec {
                        command,
                        args: self.strings(obj, "args", &loc),
                        env,
                        startup_timeout_sec: self.positive(obj, "startup_timeout_sec", &loc),
                        tool_timeout_sec: self.positive(obj, "tool_timeout_sec", &loc),
                        enabled_tools: self.strings(obj, "enabled_tools", &loc),
                        enabled: self.boolean(obj, "enabled", &loc),
                    }
                }
                other => {
                    self.problem(
                        &loc,
                        format!(
                            "expected an object (or true for {CLAUDE_CODE_SERVER:?}), found {}",
                            kind(other)
                        ),
                    );
                    continue;
                }
            };
            out.insert(name.clone(), spec);
        }
        out
    }

    fn task(&mut self, value: &Value, path: &str, all_ids: &BTreeSet<String>) -> Option<TaskSpec> {
        let obj = self.object(value, path)?;
        self.known_fields(obj, path, &schema::names(schema::TASK_FIELDS));
        let template = match obj.get("for_each") {
            Some(fe) => {
                let mut problems = Vec::new();
                generate::parse_for_each(fe, &format!("{path}.for_each"), &mut problems);
                self.problems.extend(problems);
                true
            }
            None => false,
        };
        let id = match obj.get("id") {
            None => {
                self.problem(path, "missing field \"id\"");
                None
            }
            // A template's id is checked with sample values in its placeholders.
            Some(Value::String(s)) if template => match TaskId::parse(&generate::sample_id(s)) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.problem(&format!("{path}.id"), e);
                    None
                }
            },
            Some(Value::String(s)) => match TaskId::parse(s) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.problem(&format!("{path}.id"), e);
                    None
                }
            },
            Some(other) => {
                self.problem(
                    &format!("{path}.id"),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        };
        let prompt = match self.string(obj, "prompt", path) {
            Some(p) if !p.trim().is_empty() => Some(p),
            Some(_) => {
                self.problem(&format!("{path}.prompt"), "prompt must not be empty");
                None
            }
            None => {
                if !obj.contains_key("prompt") {
                    self.problem(path, "missing field \"prompt\"");
                }
                None
            }
        };
        let agent = self.string(obj, "agent", path);
        if let Some(a) = &agent {
            if !self.known_agents.contains(a) {
                let known = self.agent_list();
                self.problem(
                    &format!("{path}.agent"),
                    format!("unknown agent {a:?}; known agents: {known}"),
                );
            }
        }
        let paths = self.strings(obj, "paths", path).unwrap_or_default();
        for (i, p) in paths.iter().enumerate() {
            if let Err(e) = globset::Glob::new(p) {
                self.problem(&format!("{path}.paths[{i}]"), format!("invalid glob: {e}"));
            }
        }
        let timeout_secs = self.positive(obj, "timeout_secs", path);
        let verify = self.verify(obj, "verify", path);
        let verify_timeout_secs = self.positive(obj, "verify_timeout_secs", path);
        let max_attempts = self.count(obj, "max_attempts", path);
        let max_file_bytes = self.bytes(obj, "max_file_bytes", path);
        let max_change_bytes = self.bytes(obj, "max_change_bytes", path);
        let review = self.review(obj, path);
        let setup = self.verify(obj, "setup", path);
        let setup_timeout_secs = self.positive(obj, "setup_timeout_secs", path);
        let mut depends_on = Vec::new();
        for (i, d) in self
            .strings(obj, "depends_on", path)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match TaskId::parse(d) {
                Ok(_) if obj.get("id").and_then(Value::as_str) == Some(d.as_str()) => self.problem(
                    &format!("{path}.depends_on[{i}]"),
                    "a task cannot depend on itself",
                ),
                Ok(_) if !all_ids.contains(d) => self.problem(
                    &format!("{path}.depends_on[{i}]"),
                    format!("unknown task id {d:?}"),
                ),
                Ok(id) => depends_on.push(id),
                Err(e) => self.problem(&format!("{path}.depends_on[{i}]"), e),
            }
        }
        Some(TaskSpec {
            id: id?,
            prompt: prompt?,
            agent,
            paths,
            timeout_secs,
            verify,
            verify_timeout_secs,
            depends_on,
            max_attempts,
            max_file_bytes,
            max_change_bytes,
            setup,
            setup_timeout_secs,
            template,
            review,
        })
    }

    fn agent_list(&self) -> String {
        self.known_agents
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks that need every task: dependency cycles.
    fn cross_checks(&mut self, file: &TaskFile, tasks_path: &str) {
        if let Some(cycle) = find_cycle(&file.tasks) {
            self.problem(
                tasks_path,
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
        }
    }
}

/// Finds one dependency cycle (longer than a self-loop), returned as ids with the first repeated last.
pub fn find_cycle(tasks: &[TaskSpec]) -> Option<Vec<String>> {
    let index: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut state = vec![0u8; tasks.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        n: usize,
        tasks: &[TaskSpec],
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        state[n] = 1;
        stack.push(n);
        for d in &tasks[n].depends_on {
            let Some(&m) = index.get(d.as_str()) else {
                continue;
            };
            if m == n {
                continue;
            }
            if state[m] == 1 {
                let start = stack.iter().position(|&x| x == m).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..]
                    .iter()
                    .map(|&x| tasks[x].id.to_string())
                    .collect();
                cycle.push(tasks[m].id.to_string());
                return Some(cycle);
            }
            if state[m] == 0 {
                if let Some(c) = visit(m, tasks, index, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[n] = 2;
        None
    }
    for n in 0..tasks.len() {
        if state[n] == 0 {
            if let Some(c) = visit(n, tasks, &index, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn accepts_bare_array_and_object() {
        let f = parse(r#"[{"id":"a","prompt":"x"}]"#).expect("valid");
        assert_eq!(f.tasks.len(), 1);
        let f = parse(
            r#"{"version":1,"base":"HEAD","defaults":{"agent":"e","timeout_secs":5,"verify":["true"]},
                "agents":{"e":{"protocol":"exec","command":"sh","args":["-c","true"]}},
                "tasks":[{"id":"a","prompt":"x","paths":["src/**"]}]}"#,
        )
        .expect("valid");
        assert_eq!(f.agents["e"].protocol, Protocol::Exec);
        assert_eq!(
            f.defaults.verify,
            Some(VerifyCommand::Argv(vec!["true".into()]))
        );
    }

    #[test]
    fn accepts_a_byte_order_mark() {
        let f = parse("\u{feff}[{\"id\":\"a\",\"prompt\":\"x\"}]").expect("valid");
        assert_eq!(f.tasks.len(), 1);
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let p = problems("{\n  \"tasks\": [,]\n}");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("line 2, column"), "{p:?}");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let p = problems(
            r#"{"tasks":[
                {"id":"a","prompt":"x"},
                {"id":"a","prompt":"y"},
                {"id":"../x","prompt":"z"},
                {"id":"b","prompt":"  ","promt":"typo"},
                {"id":"c","prompt":"w","agent":"nope","timeout_secs":0}
            ]}"#,
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("$.tasks[1].id: duplicate task id \"a\""),
            "{joined}"
        );
        assert!(
            joined.contains("$.tasks[2].id: task id \"../x\""),
            "{joined}"
        );
        assert!(
            joined.contains("$.tasks[3].prompt: prompt must not be empty"),
            "{joined}"
        );
        assert!(
            joined.contains("$.tasks[3].promt: unknown field"),
            "{joined}"
        );
        assert!(
            joined.contains("$.tasks[4].agent: unknown agent \"nope\""),
            "{joined}"
        );
        assert!(
            joined.contains("$.tasks[4].timeout_secs: must be a positive number"),
            "{joined}"
        );
    }

    #[test]
    fn a_duplicate_id_is_reported_next_to_other_problems() {
        let p = problems(
            r#"[{"id":"a","prompt":"x","timeout_secs":-1},
                {"id":"a","prompt":""}]"#,
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("$[1].id: duplicate task id \"a\" (first used at $[0])"),
            "{joined}"
        );
        assert!(joined.contains("$[0].timeout_secs"), "{joined}");
    }

    #[test]
    fn detects_cycles_and_unknown_dependencies() {
        let p = problems(
            r#"[{"id":"a","prompt":"x","depends_on":["c"]},
                {"id":"b","prompt":"x","depends_on":["a"]},
                {"id":"c","prompt":"x","depends_on":["b","zz"]}]"#,
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("dependency cycle: a -> c -> b -> a"),
            "{joined}"
        );
        assert!(
            joined.contains("$[2].depends_on[1]: unknown task id \"zz\""),
            "{joined}"
        );
    }

    #[test]
    fn expands_env_and_names_missing_variables() {
        let lookup = |n: &str| (n == "KEY").then(|| "secret".to_string());
        assert_eq!(
            expand_env("Bearer ${KEY}", &lookup).as_deref(),
            Ok("Bearer secret")
        );
        let err = expand_env("${MISSING_ONE}", &lookup).unwrap_err();
        assert!(err.contains("MISSING_ONE"));
    }
}
