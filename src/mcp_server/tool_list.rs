//! The tools `fanout mcp` offers, each with its input and output schema and the hints clients
//! act on (`tools/list`). Claude Code runs tool calls at once only when they are read-only.

use serde_json::{json, Map, Value};

use super::tools::{DEFAULT_WAIT_SECS, MAX_DIFF_BYTES, MAX_WAIT_SECS};

/// `annotations`: what a client may assume of a tool.
fn hints(read_only: bool, destructive: bool, idempotent: bool, open_world: bool) -> Value {
    json!({
        "readOnlyHint": read_only,
        "destructiveHint": destructive,
        "idempotentHint": idempotent,
        "openWorldHint": open_world,
    })
}

/// An `outputSchema`: the tool's result fields, or (`isError: true`) `error` and maybe
/// `problems`; `shapes` are the sets of fields a successful result has.
fn output(mut properties: Map<String, Value>, shapes: &[&[&str]]) -> Value {
    properties.insert("error".into(), json!({"type": ["string", "null"], "description": "Why the call failed (isError: true); a run view's error, or null."}));
    properties.insert(
        "problems".into(),
        json!({"type": "array", "items": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "message": {"type": "string"}},
        "required": ["location", "message"]}}),
    );
    let mut any_of: Vec<Value> = shapes.iter().map(|s| json!({"required": s})).collect();
    any_of.push(json!({"required": ["error"], "properties": {"error": {"type": "string"}}}));
    json!({"type": "object", "properties": properties, "anyOf": any_of})
}

fn props(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A run as `fanout_wait` and `fanout_status` show it.
fn run_view_props() -> Map<String, Value> {
    let nullable_str = json!({"type": ["string", "null"]});
    props(json!({
        "run_id": {"type": "string"},
        "repo": {"type": "string"},
        "status": {"type": "string", "description": "starting, running, finished, interrupted (cancelled or stopped; resumable) or failed."},
        "ended": {"type": "boolean"},
        "integration_branch": {"type": ["string", "null"], "description": "fanout/<run>/merged, null while it does not exist."},
        "integration_commit": nullable_str,
        "tasks_total": {"type": "integer", "minimum": 0},
        "tasks_ended": {"type": "integer", "minimum": 0},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "tasks": {"type": "array", "items": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string"},
                "files": {"type": "array", "items": {"type": "string"}},
                "insertions": {"type": "integer"},
                "deletions": {"type": "integer"},
                "error": nullable_str,
            },
            "required": ["id", "status"]}},
        "resumable": {"type": "boolean"},
        "next": {"type": "string"},
    }))
}

const VIEW_FIELDS: &[&str] = &[
    "run_id",
    "status",
    "ended",
    "tasks_total",
    "tasks_ended",
    "counts",
    "tasks",
];

pub fn list() -> Value {
    let mut tools = tools();
    for (tool, (annotations, schema)) in tools.iter_mut().zip(extras()) {
        tool["annotations"] = annotations;
        tool["outputSchema"] = schema;
    }
    Value::Array(tools)
}

/// Annotations and output schema of each tool, in the order of [`tools`].
fn extras() -> Vec<(Value, Value)> {
    let mut status = run_view_props();
    status.insert(
        "runs".into(),
        json!({"type": "array", "items": {
        "type": "object",
        "properties": {"run_id": {"type": "string"}, "status": {"type": "string"},
                       "ended": {"type": "boolean"}, "counts": {"type": "object"}},
        "required": ["run_id", "status", "ended"]}}),
    );
    vec![
        // Starts agents that reach their model servers, and makes branches: not read-only.
        (
            hints(false, false, false, true),
            output(
                props(json!({
                    "run_id": {"type": "string"}, "repo": {"type": "string"}, "run_dir": {"type": "string"},
                    "integration_branch": {"type": "string"}, "tasks": {"type": "integer"},
                    "jobs": {"type": "integer"}, "next": {"type": "string"},
                })),
                &[&["run_id", "tasks"]],
            ),
        ),
        (
            hints(true, false, true, false),
            output(run_view_props(), &[VIEW_FIELDS]),
        ),
        (
            hints(true, false, true, false),
            output(status, &[VIEW_FIELDS, &["repo", "runs"]]),
        ),
        (
            hints(true, false, true, false),
            output(
                props(json!({
                    "run_id": {"type": "string"}, "task": {"type": "string"},
                    "status": {"type": ["string", "null"]}, "diff": {"type": "string"},
                    "bytes": {"type": "integer"}, "truncated": {"type": "boolean"},
                    "note": {"type": ["string", "null"]},
                })),
                &[&["run_id", "task", "diff", "truncated"]],
            ),
        ),
        // Stops agents; their verified work is kept and the run resumable.
        (
            hints(false, false, true, false),
            output(
                props(json!({
                    "run_id": {"type": "string"}, "cancel_requested": {"type": "boolean"},
                    "ended": {"type": "boolean"}, "next": {"type": "string"},
                })),
                &[&["run_id", "cancel_requested", "ended"]],
            ),
        ),
        // Moves a branch of the user's (and its checkout).
        (
            hints(false, true, true, false),
            output(
                props(json!({
                    "run_id": {"type": "string"}, "from": {"type": "string"}, "into": {"type": "string"},
                    "outcome": {"type": "string"}, "commit": {"type": "string"},
                })),
                &[&["run_id", "from", "into", "outcome"]],
            ),
        ),
    ]
}

fn tools() -> Vec<Value> {
    let repo = json!({"type": "string", "description": "The git repository (default: the server's working directory)."});
    let run_id = json!({"type": "string", "description": "A run id as fanout_start returned it (or `last`)."});
    vec![
        json!({
            "name": "fanout_start",
            "title": "Start a fanout run",
            "description": "Validate a task list and start a run in the background: one agent per task, each in its own git worktree, sandboxed; verified changes are merged onto fanout/<run>/merged. Returns run_id at once; then call fanout_wait. Give either the task-file fields inline (tasks, agents, defaults, base, verifier) or tasks_file. All validation problems are returned at once.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "repo": repo,
                    "tasks": {"type": "array", "description": "The tasks, as in tasks.json (`fanout schema tasks`): each {id, prompt, paths?, agent?, verify?, depends_on?, …}.", "items": {"type": "object"}},
                    "agents": {"type": "object", "description": "Agent profiles by name, as in tasks.json."},
                    "defaults": {"type": "object", "description": "Defaults for every task, as in tasks.json."},
                    "base": {"type": "string", "description": "Base revision (default HEAD)."},
                    "verifier": {"type": "object", "description": "The read-back verifier profile, as in tasks.json."},
                    "tasks_file": {"type": "string", "description": "A task file to read instead of inline tasks (relative to the server's working directory)."},
                    "jobs": {"type": "integer", "minimum": 1, "maximum": 256, "description": "At most this many agents at once (default: CPUs)."},
                    "workspace": {"type": "string", "enum": ["auto", "overlay", "worktree"], "description": "How task workspaces are made: auto (overlay where this machine allows it, else worktree), overlay or worktree; default: the task file's defaults.workspace, else auto. See docs/workspaces.md."},
                    "readback": {"type": "string", "enum": ["auto", "require", "off"], "description": "Read-back of changed files through Claude Code (default auto)."}
                },
                "additionalProperties": false
            }
        }),
        json!({
            "name": "fanout_wait",
            "title": "Wait for a run",
            "description": format!("Wait until a run ends or timeout_secs passed (default {DEFAULT_WAIT_SECS} s, inside common client timeouts; ask for up to {MAX_WAIT_SECS} s with timeout_secs if your client allows longer calls), then return its report as it stands (`ended` says which). With a progressToken, sends progress notifications (tasks ended / tasks, latest event) when a task ends and at least every 10 s. Call again while `ended` is false. Read-only: several waits may run at once."),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "run_id": run_id, "repo": repo,
                    "timeout_secs": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECS, "description": format!("Longest wait in seconds (default {DEFAULT_WAIT_SECS}, at most {MAX_WAIT_SECS}).")}
                },
                "required": ["run_id"],
                "additionalProperties": false
            }
        }),
        json!({
            "name": "fanout_status",
            "title": "Show runs",
            "description": "Without run_id: the repository's runs and their status. With run_id: that run's report as it stands.",
            "inputSchema": {
                "type": "object",
                "properties": {"repo": repo, "run_id": run_id},
                "additionalProperties": false
            }
        }),
        json!({
            "name": "fanout_diff",
            "title": "One task's diff",
            "description": "The change one task made (the patch that was verified), cut after max_bytes with a note.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "repo": repo, "run_id": run_id,
                    "task": {"type": "string", "description": "The task id."},
                    "stat": {"type": "boolean", "description": "Per-file summary instead of the patch."},
                    "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_DIFF_BYTES, "description": "Cut the diff after this many bytes (default 65536)."}
                },
                "required": ["run_id", "task"],
                "additionalProperties": false
            }
        }),
        json!({
            "name": "fanout_cancel",
            "title": "Cancel a run",
            "description": "Ask a run this server started to stop at its next safe point. Agents are stopped; verified work is kept and the run ends `interrupted`, resumable with `fanout resume`. Returns at once; fanout_wait shows the end.",
            "inputSchema": {
                "type": "object",
                "properties": {"repo": repo, "run_id": run_id},
                "required": ["run_id"],
                "additionalProperties": false
            }
        }),
        json!({
            "name": "fanout_merge",
            "title": "Merge a run's result into a branch",
            "description": "Bring a finished run's integration branch (fanout/<run>/merged) into the branch `into`: fast-forward, or a merge commit when the merge is clean. Refuses conflicts, and uncommitted changes of a worktree that has `into` checked out; creates `into` when it does not exist.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "repo": repo, "run_id": run_id,
                    "into": {"type": "string", "description": "The local branch to update (e.g. main)."}
                },
                "required": ["run_id", "into"],
                "additionalProperties": false
            }
        }),
    ]
}
