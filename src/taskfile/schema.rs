/*!
The fields of the task file, in one table that both the validator (which fields are known) and
`fanout schema tasks` (the JSON Schema, draft 2020-12) read, so the two cannot drift apart.
Checks the schema cannot express (unique ids, known agent names, dependency cycles, globs that
compile, `${VAR}` that expand) stay the validator's.
*/

use serde_json::{json, Map, Value};

/// What values a field takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The file format version: `1`.
    Version,
    String,
    /// A string with something besides whitespace.
    NonEmptyString,
    Strings,
    /// A number above 0 (seconds).
    Positive,
    /// A whole number of bytes, at least 1.
    Bytes,
    /// A whole number from 1 to 100.
    Count,
    /// A whole number from 0 to `MAX_RETRIES`.
    Retries,
    Bool,
    /// An argv array or a `sh -c` string.
    Verify,
    /// A setup command: a [`Kind::Verify`] or the long form object.
    Setup,
    TaskId,
    TaskIds,
    Protocol,
    /// Environment variables: name → string.
    Env,
    /// Any JSON object.
    Object,
    /// TCP ports, 1–65535.
    Ports,
    Defaults,
    /// Named agent profiles.
    Agents,
    Profile,
    Tasks,
    /// Named shared caches: preset names or `{name, env}` objects.
    Caches,
    /// A template's `for_each`.
    ForEach,
    /// A task id, or a template's id with placeholders.
    TaskIdTemplate,
    /// MCP servers for a Codex agent's `config.toml`: name → entry (or `true`/`false`).
    McpServers,
    /// The review gate.
    Review,
    /// `integrate`.
    Integrate,
    /// `fail`, `retry` or `retry=N`.
    OnConflict,
    /// `auto`, `overlay` or `worktree`.
    Workspace,
    /// `commit`: how task commits are written (`author`).
    Commit,
    /// `merge`: rules resolving integration conflicts in the files they name.
    Merge,
    /// A task's `group`: a name, or `true` on a template.
    Group,
    /// `network`: each phase's destinations through the egress proxy.
    Network,
    // Accounting and budgets (issue 23):
    /// `pricing`: model → US dollars per million tokens.
    Pricing,
    /// `budget`: what a task and the run may spend.
    Budget,
    /// `candidates`: a count, or a list of `{agent}` profiles.
    Candidates,
    /// `select`: how a candidate is chosen.
    Select,
    // Overlap before dispatch (issue 21).
    /// `serialize` or `parallel`.
    Overlap,
}

/// `commit.author`: `Name <email>`, neither part empty nor holding angle brackets.
pub const AUTHOR_PATTERN: &str = r"^[^<>]*[^<>\s][^<>]* <[^<>\s]+>$";

/// One field of an object of the task file.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub description: &'static str,
}

const fn field(name: &'static str, kind: Kind, description: &'static str) -> Field {
    Field {
        name,
        kind,
        required: false,
        description,
    }
}

const fn required(name: &'static str, kind: Kind, description: &'static str) -> Field {
    Field {
        name,
        kind,
        required: true,
        description,
    }
}

/// The top-level object.
pub const FILE_FIELDS: &[Field] = &[
    field("version", Kind::Version, "The format version: 1."),
    field(
        "base",
        Kind::String,
        "The revision every task starts from (default HEAD; --base overrides).",
    ),
    field(
        "defaults",
        Kind::Defaults,
        "Values every task inherits unless it sets its own.",
    ),
    field(
        "agents",
        Kind::Agents,
        "Named agent profiles; the built-in `codex` needs no entry.",
    ),
    field(
        "caches",
        Kind::Caches,
        "Named caches kept across tasks and runs under <git-dir>/fanout/caches/<name>: presets (`cargo`, `pip`, `uv`, `npm`, `yarn`, `go`) set the tool's cache variable, `{\"name\": …, \"env\": [\"VAR\"]}` points VAR at the cache. Tasks see them through a private copy-on-write layer (their writes are discarded); only `caches_fill` writes them.",
    ),
    field(
        "caches_fill",
        Kind::Verify,
        "Fills the shared caches once per run, before any agent: an argv list, or a string run with `sh -c`, in a sandboxed checkout of the base commit with the caches writable (log: logs/caches-fill.log; time: defaults.setup_timeout_secs).",
    ),
    field(
        "verifier",
        Kind::Profile,
        "The read-back verifier profile (default `claude mcp serve`, tool `Read`).",
    ),
    field(
        "integrate",
        Kind::Integrate,
        "A gate on the integration result: its verify command runs on the merged commit; tasks that break it are found by bisection and taken out.",
    ),
    field(
        "include",
        Kind::Strings,
        "Globs of ignored files of the checkout (`.env`, local configuration) copied into every workspace before setup and agent; `.worktreeinclude` at the repository root adds more. Symlinks are never followed, `.git` never copied.",
    ),
    field(
        "commit",
        Kind::Commit,
        "How task commits are written: `author` (\"Name <email>\") authors task commits unless the repository's own configuration (.git/config) sets user.name/user.email; it wins over a global or system identity; the committer is always fanout.",
    ),
    field(
        "merge",
        Kind::Merge,
        "Rules for files many tasks edit (lists, allowlists, lint configurations): `[{\"paths\": [GLOB, …], \"strategy\": \"union\"}]`. On a conflict in a matching file, `union` keeps both sides' lines (ours then theirs, no markers; removals by either side apply, also of neighbouring lines), `ours` keeps what is integrated, `theirs` takes the task's file. First matching rule wins; a glob without `/` matches the name in any folder.",
    ),
    // Accounting and budgets (issue 23):
    field(
        "pricing",
        Kind::Pricing,
        "Prices in US dollars per million tokens, per model as the agent names it: `{\"gpt-5\": {\"input\": 1.25, \"cached_input\": 0.125, \"output\": 10}}` (`cached_input` defaults to `input`). fanout ships no prices; tokens of a model not named here are counted, not priced (the run warns).",
    ),
    field(
        "budget",
        Kind::Budget,
        "What may be spent: `{\"task\": {\"tokens\": N, \"usd\": X, \"seconds\": S}, \"run\": {\"tokens\": N, \"usd\": X}}`, each limit optional (`usd` needs `pricing`). A task over its budget is stopped and ends `budget_exceeded`, its work kept on its branch, not merged; once the run's is spent no new task or turn starts and the tasks not started end `skipped`. `fanout resume --budget` continues with a larger one.",
    ),
    required("tasks", Kind::Tasks, "The tasks, at least one."),
];

/// One rule of `merge`.
pub const MERGE_RULE_FIELDS: &[Field] = &[
    required(
        "paths",
        Kind::Strings,
        "Globs of the files the rule covers (`*` stays within a folder; a glob without `/` matches the name anywhere).",
    ),
    required(
        "strategy",
        Kind::String,
        "`union`, `ours` or `theirs`.",
    ),
];

/// `integrate`.
pub const INTEGRATE_FIELDS: &[Field] = &[
    required(
        "verify",
        Kind::Verify,
        "Verify command run on the integration result, in a sandboxed checkout of it: an argv list, or a string run with `sh -c`.",
    ),
    field("timeout_secs", Kind::Positive, "The command's time in seconds (default 600)."),
    field(
        "verify_retries",
        Kind::Retries,
        "How many times a failing run of the command runs again, on the integration and on each bisection step (0-10, default 0); a pass after a failure is reported `flaky`.",
    ),
    field(
        "repair",
        Kind::Retries,
        "Integration repair (0-10, default 0): when the gate fails and bisection names a task, that task's own agent gets the gate's output and a workspace at the failing integration, and makes a fix commit, up to this many rounds, before the task is taken out. A repair may change only the paths the task already changed or its `paths`, never a `protect` glob.",
    ),
];

/// `defaults`.
/// The table of a task's fields that `defaults` sets for every task too: one description each.
/// `with_shared_fields!([before…], [after…])` is a field table with these between.
macro_rules! with_shared_fields {
    ([$($before:expr),* $(,)?], [$($after:expr),* $(,)?]) => {
        &[
            $($before,)*
            field("timeout_secs", Kind::Positive, "A task's whole time in seconds (default 900)."),
            field(
                "verify",
                Kind::Verify,
                "Verify command: an argv list, or a string run with `sh -c`, in the worktree inside the sandbox.",
            ),
            field("verify_timeout_secs", Kind::Positive, "The verify command's time in seconds (default 600)."),
            field(
                "verify_retries",
                Kind::Retries,
                "How many times a failing verify command runs again before the gate fails (0-10, default 0); a pass after a failure is reported `flaky`. Timeouts are not run again.",
            ),
            field(
                "setup",
                Kind::Setup,
                "Workspace setup, run once per distinct start tree and inputs inside the sandbox; what it creates (ignored files: node_modules, .venv, target) becomes a read-only layer under every workspace and the integration gate's checkout. An argv list, a string run with `sh -c`, or {run, inputs, timeout_secs, once}; failing fails the tasks that need it (log: logs/setup-<key>.log, copied to logs/<task>.setup.log).",
            ),
            field("setup_timeout_secs", Kind::Positive, "The setup command's time in seconds (default 600)."),
            field(
                "max_attempts",
                Kind::Count,
                "Agent attempts including feedback rounds (1-100, default 2).",
            ),
            field(
                "max_file_bytes",
                Kind::Bytes,
                "Largest new or changed file a task may commit (default 50 MiB).",
            ),
            field(
                "max_change_bytes",
                Kind::Bytes,
                "Largest total size of a task's new and changed files (default 500 MiB).",
            ),
            field(
                "review",
                Kind::Review,
                "A review gate: Claude Code (`claude -p`, confined) reads the diff and answers APPROVE or REJECT.",
            ),
            field(
                "network",
                Kind::Network,
                "Under --net isolated, what each phase reaches through fanout's egress proxy: {\"agent\": \"model\"|\"none\"|[\"host:port\"…], \"setup\": …, \"verify\": …}; defaults: agent = model API only, setup and verify = none.",
            ),
            field(
                "protect",
                Kind::Strings,
                "Globs of paths an integration repair round may never change (the tests and the verify configuration that judge it); a repair touching one fails its gates. A task's list replaces the defaults'.",
            ),
            field(
                "candidates",
                Kind::Candidates,
                "Best-of-N: N candidates (1-20), or a list of profiles ([{\"agent\": \"codex-high\"}, {\"agent\": \"codex-mini\"}]); each runs in its own workspace on the branch `fanout/<run>/task/<id>/candidate-<k>` (FANOUT_CANDIDATE=k in its environment), every gate runs on each, and `select` picks the task's commit.",
            ),
            field(
                "select",
                Kind::Select,
                "How the task's commit is chosen among its passing candidates: `smallest` (default: fewest changed lines), `first` (the first to pass; the others are stopped) or `review` (Claude Code reads the passing diffs and names the best, with a reason).",
            ),
            $($after,)*
        ]
    };
}

pub const DEFAULTS_FIELDS: &[Field] = with_shared_fields!(
    [field("agent", Kind::String, "The agent profile of tasks that name none (default `codex`).")],
    [
        field(
            "diagnose",
            Kind::Bool,
            "Before each feedback turn, ask Claude Code for a root-cause diagnosis of the failed gates and send it along.",
        ),
        field(
            "workspace",
            Kind::Workspace,
            "How task workspaces are made: `auto` (default: overlay where this machine allows it, else worktree), `overlay` or `worktree`; --workspace overrides. See docs/workspaces.md.",
        ),
        field(
            "on_conflict",
            Kind::OnConflict,
            "A task that conflicts with what was merged before it: `fail` (default), `retry` / `retry=N` to run it again from the integration head in a fresh session (N times, default 1), or `resolve` / `resolve=N` to give it back to its own agent with the conflicting hunks marked in its workspace (N rounds, default 1); --on-conflict overrides.",
        ),
        // Overlap before dispatch (issue 21).
        field(
            "overlap",
            Kind::Overlap,
            "Tasks whose `paths` overlap: `serialize` (default: they run one after another in a lane, each from the verified result of the one before) or `parallel` (at the same time; they may conflict); --overlap overrides.",
        ),
    ]
);

/// An entry of a profile's `mcp_servers` (Codex's own field names).
pub const MCP_SERVER_FIELDS: &[Field] = &[
    field(
        "command",
        Kind::NonEmptyString,
        "The server's program (a server started by Codex; give `command` or `url`, neither for the built-in `claude-code`).",
    ),
    field(
        "url",
        Kind::NonEmptyString,
        "The server's streamable HTTP endpoint (http:// or https://), instead of `command`.",
    ),
    field(
        "bearer_token_env_var",
        Kind::NonEmptyString,
        "With `url`: the environment variable of fanout holding the bearer token; Codex reads it from its environment, it is never written to the config.",
    ),
    field(
        "http_headers",
        Kind::Env,
        "With `url`: extra HTTP headers sent to the server.",
    ),
    field("args", Kind::Strings, "The program's arguments."),
    field(
        "env",
        Kind::Env,
        "Environment of the server; `${VAR}` expands from fanout's environment.",
    ),
    field(
        "startup_timeout_sec",
        Kind::Positive,
        "Seconds Codex waits for the server to start.",
    ),
    field(
        "tool_timeout_sec",
        Kind::Positive,
        "Seconds Codex waits for one tool call.",
    ),
    field(
        "enabled_tools",
        Kind::Strings,
        "Only these tools of the server are offered to the model.",
    ),
    field(
        "enabled",
        Kind::Bool,
        "`false` keeps the entry but does not start the server.",
    ),
];

/// `setup`'s long form (in `defaults` or a task).
pub const SETUP_FIELDS: &[Field] = &[
    required(
        "run",
        Kind::Verify,
        "The setup command: an argv list, or a string run with `sh -c`.",
    ),
    field(
        "inputs",
        Kind::Strings,
        "Globs of tracked files the setup depends on (`package-lock.json`): the layer is made again only when their content changes; without them, for every distinct start tree.",
    ),
    field("timeout_secs", Kind::Positive, "The setup command's time in seconds (default: setup_timeout_secs, else 600)."),
    field(
        "once",
        Kind::Bool,
        "`true` (default): run once and share the result read-only; `false`: run in every workspace, as a task's own step.",
    ),
];

/// `review` (in `defaults` or a task).
pub const REVIEW_FIELDS: &[Field] = &[
    required(
        "prompt",
        Kind::NonEmptyString,
        "What the reviewer checks; fanout adds the diff and asks for `APPROVE` or `REJECT: <reason>` on the first line.",
    ),
    field("timeout_secs", Kind::Positive, "Seconds the reviewer may take (default 300)."),
];

/// An entry of `agents`, and `verifier`.
pub const PROFILE_FIELDS: &[Field] = &[
    field(
        "protocol",
        Kind::Protocol,
        "How fanout talks to the agent (default `mcp`; `auto` detects it from `codex --version`).",
    ),
    required("command", Kind::NonEmptyString, "The program to run."),
    field("args", Kind::Strings, "The program's arguments."),
    field(
        "cwd",
        Kind::String,
        "The agent's working folder, relative to the worktree (default: the worktree).",
    ),
    field(
        "env",
        Kind::Env,
        "Extra environment; `${VAR}` expands from fanout's environment, a missing variable is an error.",
    ),
    field(
        "tool",
        Kind::String,
        "The MCP tool to call (default `codex`; `Read` for the verifier).",
    ),
    field(
        "arguments",
        Kind::Object,
        "Extra tool arguments, merged under {\"prompt\", \"cwd\"}.",
    ),
    field(
        "startup_timeout_sec",
        Kind::Positive,
        "Seconds from spawn until `initialize` is answered (default 30).",
    ),
    field(
        "tool_timeout_sec",
        Kind::Positive,
        "Seconds for one tool call or turn (default 900).",
    ),
    field("enabled", Kind::Bool, "`false` refuses tasks that use this profile."),
    field(
        "connect_ports",
        Kind::Ports,
        "TCP ports the sandbox lets the agent connect to besides 443.",
    ),
    field(
        "env_pass",
        Kind::Strings,
        "Names of fanout's environment variables the agent gets besides PATH, HOME, TMPDIR, LANG, LC_*, TERM, TZ, USER, LOGNAME, SHELL and FANOUT_* (nothing else is inherited).",
    ),
    field(
        "mcp_servers",
        Kind::McpServers,
        "Codex agents: MCP servers written into the task's private config.toml; `claude-code` (true or {}) runs `claude mcp serve`.",
    ),
];

/// An entry of `tasks`.
pub const TASK_FIELDS: &[Field] = with_shared_fields!(
    [
        required(
            "id",
            Kind::TaskIdTemplate,
            "Unique slug naming the branch `fanout/<run>/task/<id>` and the worktree folder.",
        ),
        required("prompt", Kind::NonEmptyString, "What the agent is asked to do."),
        field(
            "agent",
            Kind::String,
            "An agent profile name (default: defaults.agent, else `codex`).",
        ),
        field(
            "paths",
            Kind::Strings,
            "Globs bounding what the task may change (the scope gate).",
        ),
    ],
    [
        field(
            "depends_on",
            Kind::TaskIds,
            "Ids of tasks that must be verified first; the task starts from a commit that contains them.",
        ),
        field(
            "group",
            Kind::Group,
            "Tasks of one group land together or not at all: integrated as a unit once all are verified; if one fails, conflicts or times out, none lands (the others end `skipped`, naming it), and the integration gate takes the group out as a unit. A name (a task id's shape), or `true` on a template: its generated tasks form one group.",
        ),
        field(
            "for_each",
            Kind::ForEach,
            "Makes the task a template, expanded over tracked files at the base commit (`{\"files\": GLOB, \"batch\": N}`), folders holding a marker file (`{\"dirs_with\": NAME}`) or a list (`{\"items\": [...]}`); placeholders {path} {dir} {stem} {name} {item} {paths} {n} in id, prompt, paths and verify.",
        ),
    ]
);

/// The protocols a profile may name.
pub const PROTOCOLS: &[&str] = &["mcp", "codex-app-server", "exec", "auto"];

/// Task ids: 1-64 of `[A-Za-z0-9._-]`, no leading dot, no `..`, not ending in `.lock`
/// (see [`crate::ids::TaskId::parse`]).
pub const TASK_ID_PATTERN: &str = r"^(?!\.)(?!.*\.\.)(?!.*\.lock$)[A-Za-z0-9._-]{1,64}$";

/// Agent profile names.
pub const AGENT_NAME_PATTERN: &str = r"^[A-Za-z0-9._-]+$";

/// The names of `fields`, for the validator's unknown-field check.
pub fn names(fields: &[Field]) -> Vec<&'static str> {
    fields.iter().map(|f| f.name).collect()
}

/// The JSON Schema (draft 2020-12) of tasks.json version 1.
pub fn tasks_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "fanout task file (tasks.json, version 1)",
        "description": "An object with `tasks`, or a bare array of tasks. Unknown fields are errors. \
            `fanout validate` also checks what a schema cannot: unique ids, known agent names, \
            dependencies that exist and form no cycle, globs, and `${VAR}` in env.",
        "oneOf": [{"$ref": "#/$defs/file"}, {"$ref": "#/$defs/tasks"}],
        "$defs": {
            "file": object(FILE_FIELDS, "The task file as an object."),
            "integrate": object(INTEGRATE_FIELDS, "A gate on the integration result."),
            "defaults": object(DEFAULTS_FIELDS, "Values every task inherits unless it sets its own."),
            "profile": object(PROFILE_FIELDS, "An agent profile; field names follow Codex's `mcp_servers` table where they overlap."),
            "task": object(TASK_FIELDS, "One task: one agent in its own worktree on its own branch."),
            "mcpServer": object(MCP_SERVER_FIELDS, "An MCP server for a Codex agent (Codex's `[mcp_servers.NAME]` table)."),
            "review": object(REVIEW_FIELDS, "The review gate."),
            "setup": object(SETUP_FIELDS, "Setup, long form: the command and what its layer depends on."),
            "tasks": {
                "description": "The tasks, at least one, ids unique.",
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/task"}
            },
            "taskId": {
                "description": "1-64 of [A-Za-z0-9._-], no leading dot, no `..`, not ending in `.lock`.",
                "type": "string",
                "pattern": TASK_ID_PATTERN
            },
            "verify": {
                "description": "An argv list, or a string run with `sh -c`.",
                "oneOf": [
                    {"type": "string", "pattern": r"\S"},
                    {
                        "type": "array",
                        "minItems": 1,
                        "prefixItems": [{"type": "string", "minLength": 1}],
                        "items": {"type": "string"}
                    }
                ]
            }
        }
    })
}

fn object(fields: &[Field], description: &str) -> Value {
    let mut properties = Map::new();
    for f in fields {
        let mut s = kind_schema(f.kind);
        if let Value::Object(m) = &mut s {
            m.insert("description".into(), json!(f.description));
        }
        properties.insert(f.name.into(), s);
    }
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    let mut o = json!({
        "description": description,
        "type": "object",
        "properties": properties,
        "additionalProperties": false
    });
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::Version => json!({"const": 1}),
        Kind::String => json!({"type": "string"}),
        Kind::NonEmptyString => json!({"type": "string", "pattern": r"\S"}),
        Kind::Strings => json!({"type": "array", "items": {"type": "string"}}),
        Kind::Positive => json!({"type": "number", "exclusiveMinimum": 0}),
        Kind::Bytes => json!({"type": "integer", "minimum": 1}),
        Kind::Count => json!({"type": "integer", "minimum": 1, "maximum": 100}),
        Kind::Retries => {
            json!({"type": "integer", "minimum": 0, "maximum": super::model::MAX_RETRIES})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Verify => json!({"$ref": "#/$defs/verify"}),
        Kind::Setup => json!({"oneOf": [
            {"$ref": "#/$defs/verify"},
            {"$ref": "#/$defs/setup"}
        ]}),
        Kind::TaskId => json!({"$ref": "#/$defs/taskId"}),
        Kind::TaskIds => json!({"type": "array", "items": {"$ref": "#/$defs/taskId"}}),
        Kind::Protocol => json!({"enum": PROTOCOLS}),
        Kind::Env => json!({"type": "object", "additionalProperties": {"type": "string"}}),
        Kind::Object => json!({"type": "object"}),
        Kind::Commit => json!({
            "type": "object",
            "properties": {"author": {"type": "string", "pattern": AUTHOR_PATTERN,
                "description": "The author of task commits, \"Name <email>\"."}},
            "additionalProperties": false
        }),
        Kind::Ports => {
            json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}})
        }
        Kind::Defaults => json!({"$ref": "#/$defs/defaults"}),
        Kind::Integrate => json!({"$ref": "#/$defs/integrate"}),
        Kind::OnConflict => {
            json!({"type": "string", "pattern": "^(fail|(retry|resolve)(=([1-9][0-9]?|100))?)$"})
        }
        Kind::Workspace => json!({"enum": super::model::WorkspaceChoice::NAMES}),
        Kind::Candidates => json!({"oneOf": [
            {"type": "integer", "minimum": 1, "maximum": super::model::MAX_CANDIDATES},
            {"type": "array", "minItems": 1, "maxItems": super::model::MAX_CANDIDATES, "items": {
                "type": "object",
                "properties": {"agent": {"type": "string", "description": "The candidate's agent profile (default: the task's)."}},
                "additionalProperties": false
            }}
        ]}),
        Kind::Select => json!({"enum": super::model::SelectMode::NAMES}),
        Kind::Overlap => json!({"enum": super::model::OverlapChoice::NAMES}),
        Kind::Network => {
            let hosts =
                json!({"type": "array", "items": {"type": "string", "pattern": "^.+:[0-9]+$"}});
            json!({
                "type": "object",
                "properties": {
                    "agent": {"oneOf": [{"enum": ["model", "none"]}, hosts]},
                    "setup": {"oneOf": [{"enum": ["none"]}, hosts]},
                    "verify": {"oneOf": [{"enum": ["none"]}, hosts]}
                },
                "additionalProperties": false
            })
        }
        Kind::Agents => json!({
            "type": "object",
            "propertyNames": {"pattern": AGENT_NAME_PATTERN},
            "additionalProperties": {"$ref": "#/$defs/profile"}
        }),
        Kind::Profile => json!({"$ref": "#/$defs/profile"}),
        Kind::Tasks => json!({"$ref": "#/$defs/tasks"}),
        Kind::TaskIdTemplate => json!({"anyOf": [
            {"$ref": "#/$defs/taskId"},
            {"type": "string", "pattern": r"\{[a-z][a-z0-9_]*\}"}
        ]}),
        Kind::ForEach => json!({
            "type": "object",
            "properties": {
                "files": {"type": "string", "minLength": 1},
                "dirs_with": {"type": "string", "pattern": "^[^/]+$"},
                "items": {"type": "array", "minItems": 1, "items": {"anyOf": [
                    {"type": "string"},
                    {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}
                ]}},
                "batch": {"type": "integer", "minimum": 1, "maximum": 10000},
                "contains": {"type": "string", "minLength": 1}
            },
            "oneOf": [
                {"required": ["files"]},
                {"required": ["dirs_with"], "not": {"anyOf": [{"required": ["batch"]}, {"required": ["contains"]}]}},
                {"required": ["items"], "not": {"anyOf": [{"required": ["batch"]}, {"required": ["contains"]}]}}
            ],
            "additionalProperties": false
        }),
        Kind::Caches => json!({
            "type": "array",
            "items": {"oneOf": [
                {"enum": super::caches::PRESETS},
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "pattern": TASK_ID_PATTERN},
                        "env": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[A-Za-z0-9_]+$"}}
                    },
                    "required": ["name", "env"],
                    "additionalProperties": false
                }
            ]}
        }),
        Kind::McpServers => json!({
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
            "additionalProperties": {"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/mcpServer"}]}
        }),
        Kind::Review => json!({"$ref": "#/$defs/review"}),
        Kind::Group => json!({"anyOf": [{"$ref": "#/$defs/taskId"}, {"type": "boolean"}]}),
        Kind::Pricing => json!({
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "input": {"type": "number", "minimum": 0},
                    "cached_input": {"type": "number", "minimum": 0},
                    "output": {"type": "number", "minimum": 0}
                },
                "required": ["input", "output"],
                "additionalProperties": false
            }
        }),
        Kind::Budget => json!({
            "type": "object",
            "properties": {
                "task": {"type": "object", "properties": {
                    "tokens": {"type": "integer", "minimum": 1},
                    "usd": {"type": "number", "exclusiveMinimum": 0},
                    "seconds": {"type": "number", "exclusiveMinimum": 0}
                }, "additionalProperties": false},
                "run": {"type": "object", "properties": {
                    "tokens": {"type": "integer", "minimum": 1},
                    "usd": {"type": "number", "exclusiveMinimum": 0}
                }, "additionalProperties": false}
            },
            "additionalProperties": false
        }),
        Kind::Merge => json!({
            "type": "array",
            "items": {
                "description": "One rule.",
                "type": "object",
                "properties": {
                    "paths": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
                        "description": MERGE_RULE_FIELDS[0].description},
                    "strategy": {"enum": crate::git::merge_rules::MergeStrategy::NAMES,
                        "description": MERGE_RULE_FIELDS[1].description}
                },
                "required": ["paths", "strategy"],
                "additionalProperties": false
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of `kind` the parser accepts.
    fn good(kind: Kind) -> Value {
        match kind {
            Kind::Version => json!(1),
            Kind::String => json!("x"),
            Kind::NonEmptyString => json!("true"),
            Kind::Strings => json!(["a"]),
            Kind::Positive => json!(1.5),
            Kind::Bytes => json!(10),
            Kind::Count => json!(3),
            Kind::Retries => json!(2),
            Kind::Bool => json!(true),
            Kind::Verify => json!(["true"]),
            Kind::Setup => json!({"run": "true", "inputs": ["package-lock.json"], "once": true}),
            Kind::TaskId => json!("t1"),
            Kind::TaskIds => json!(["t0"]),
            Kind::Protocol => json!("exec"),
            Kind::Env => json!({"A": "b"}),
            Kind::Object => json!({"k": 1}),
            Kind::Commit => json!({"author": "Nightly Bot <bot@example.com>"}),
            Kind::Ports => json!([8080]),
            Kind::Defaults => json!({"timeout_secs": 5}),
            Kind::Agents => json!({"e": {"protocol": "exec", "command": "true"}}),
            Kind::Profile => json!({"command": "claude"}),
            Kind::Tasks => json!([{"id": "t0", "prompt": "x"}, {"id": "t1", "prompt": "y"}]),
            Kind::Caches => json!(["pip", {"name": "tool", "env": ["TOOL_CACHE"]}]),
            Kind::ForEach => json!({"items": ["a", "b"]}),
            Kind::TaskIdTemplate => json!("t1"),
            Kind::McpServers => json!({"claude-code": true, "other": {"command": "srv"}}),
            Kind::Review => json!({"prompt": "check it"}),
            Kind::Integrate => json!({"verify": ["true"], "timeout_secs": 5}),
            Kind::OnConflict => json!("retry=2"),
            Kind::Workspace => json!("worktree"),
            Kind::Overlap => json!("parallel"),
            Kind::Group => json!("rename-foo"),
            Kind::Merge => {
                json!([{"paths": ["allowlist.txt", "lists/*.txt"], "strategy": "union"}])
            }
            Kind::Network => {
                json!({"agent": "model", "setup": ["localhost:8080"], "verify": "none"})
            }
            Kind::Pricing => json!({"gpt-5": {"input": 1.25, "cached_input": 0.125, "output": 10}}),
            Kind::Budget => json!({"task": {"tokens": 1000, "seconds": 60}, "run": {"usd": 5}}),
            Kind::Candidates => json!([{"agent": "e"}, {}]),
            Kind::Select => json!("first"),
        }
    }

    /// A value of the wrong type for `kind`, which both the parser and the schema refuse.
    fn bad(kind: Kind) -> Value {
        match kind {
            Kind::String
            | Kind::NonEmptyString
            | Kind::TaskId
            | Kind::TaskIdTemplate
            | Kind::Protocol
            | Kind::OnConflict
            | Kind::Workspace
            | Kind::Select
            | Kind::Overlap => json!(7),
            Kind::Object => json!("not an object"),
            _ => json!({"surely": ["not", "this"]}),
        }
    }

    /// A file using every field, with field `name` of object `which` set to `value`.
    fn file_with(which: &str, name: &str, value: Value) -> Value {
        let all = |fields: &[Field]| -> Map<String, Value> {
            fields
                .iter()
                .map(|f| (f.name.to_string(), good(f.kind)))
                .collect()
        };
        let mut defaults = all(DEFAULTS_FIELDS);
        defaults.insert("agent".into(), json!("e"));
        let profile = all(PROFILE_FIELDS);
        let mut task = all(TASK_FIELDS);
        task.insert("agent".into(), json!("e"));
        let mut file = all(FILE_FIELDS);
        file.insert("defaults".into(), Value::Object(defaults));
        file.insert("agents".into(), json!({"e": profile}));
        file.insert(
            "tasks".into(),
            json!([{"id": "t0", "prompt": "first"}, task]),
        );
        file.insert("integrate".into(), Value::Object(all(INTEGRATE_FIELDS)));
        let mut v = Value::Object(file);
        let target = match which {
            "defaults" => &mut v["defaults"],
            "integrate" => &mut v["integrate"],
            "profile" => &mut v["agents"]["e"],
            "task" => &mut v["tasks"][1],
            _ => &mut v,
        };
        if let Some(m) = target.as_object_mut() {
            m.insert(name.into(), value);
        }
        v
    }

    fn schema_accepts(v: &Value) -> bool {
        let validator = jsonschema::draft202012::new(&tasks_schema()).expect("the schema compiles");
        validator.is_valid(v)
    }

    fn parser_problems(v: &Value) -> Vec<String> {
        match crate::taskfile::parse(&v.to_string()) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    const TABLES: [(&str, &str, &[Field]); 5] = [
        ("file", "$", FILE_FIELDS),
        ("integrate", "$.integrate", INTEGRATE_FIELDS),
        ("defaults", "$.defaults", DEFAULTS_FIELDS),
        ("profile", "$.agents.e", PROFILE_FIELDS),
        ("task", "$.tasks[1]", TASK_FIELDS),
    ];

    #[test]
    fn a_file_with_every_field_passes_both() {
        let v = file_with("file", "version", json!(1));
        assert_eq!(parser_problems(&v), Vec::<String>::new(), "{v:#}");
        assert!(schema_accepts(&v), "{v:#}");
    }

    /// Every field the schema lists is one the parser reads (a wrong type there is reported
    /// at its path), and the schema refuses the same wrong type.
    #[test]
    fn every_field_is_checked_by_both() {
        for (which, path, fields) in TABLES {
            for f in fields {
                let v = file_with(which, f.name, bad(f.kind));
                let problems = parser_problems(&v);
                let at = format!("{path}.{}", f.name);
                assert!(
                    problems.iter().any(|p| p.starts_with(&at)),
                    "the parser does not check {at}: {problems:?}"
                );
                assert!(!schema_accepts(&v), "the schema accepts a bad {at}");
            }
        }
    }

    /// Fields the parser does not know are refused by both, everywhere.
    #[test]
    fn unknown_fields_are_refused_by_both() {
        for (which, path, _) in TABLES {
            let v = file_with(which, "no_such_field", json!(1));
            let problems = parser_problems(&v);
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{path}.no_such_field: unknown field"))),
                "{which}: {problems:?}"
            );
            assert!(!schema_accepts(&v), "{which}");
        }
    }

    /// The schema's properties are exactly the table's, and required ones are required by both.
    #[test]
    fn schema_properties_match_the_tables() {
        let schema = tasks_schema();
        for (def, fields) in [
            ("file", FILE_FIELDS),
            ("integrate", INTEGRATE_FIELDS),
            ("defaults", DEFAULTS_FIELDS),
            ("profile", PROFILE_FIELDS),
            ("task", TASK_FIELDS),
        ] {
            let props: Vec<&str> = schema["$defs"][def]["properties"]
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(props, names(fields), "{def}");
            for f in fields {
                assert!(
                    schema["$defs"][def]["properties"][f.name]["description"].is_string(),
                    "{def}.{} has no description",
                    f.name
                );
            }
        }
        for (which, path, fields) in TABLES {
            for f in fields.iter().filter(|f| f.required) {
                let mut v = file_with(which, f.name, Value::Null);
                let target = match which {
                    "defaults" => &mut v["defaults"],
                    "integrate" => &mut v["integrate"],
                    "profile" => &mut v["agents"]["e"],
                    "task" => &mut v["tasks"][1],
                    _ => &mut v,
                };
                if let Some(m) = target.as_object_mut() {
                    m.remove(f.name);
                }
                let problems = parser_problems(&v);
                assert!(
                    problems
                        .iter()
                        .any(|p| p.contains(&format!("missing field \"{}\"", f.name))),
                    "{path}: {problems:?}"
                );
                assert!(!schema_accepts(&v), "{path}.{} not required", f.name);
            }
        }
    }

    #[test]
    fn task_ids_agree_with_the_parser() {
        let validator = jsonschema::draft202012::new(&tasks_schema()["$defs"]["taskId"].clone())
            .expect("compiles");
        for id in [
            "a",
            "users-route",
            "v1.2_x",
            "x.lock",
            "a..b",
            ".hidden",
            "a/b",
            "",
            "é",
            "a b",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["x".repeat(64), "x".repeat(65)])
        {
            assert_eq!(
                validator.is_valid(&json!(id)),
                crate::ids::TaskId::parse(&id).is_ok(),
                "{id:?}"
            );
        }
    }
}
