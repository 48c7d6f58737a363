//! The tools `fanout mcp` offers, each with its input schema (`tools/list`).

use serde_json::{json, Value};

use super::tools::{MAX_DIFF_BYTES, MAX_WAIT_SECS};

pub fn list() -> Value {
    let repo = json!({"type": "string", "description": "The git repository (default: the server's working directory)."});
    let run_id = json!({"type": "string", "description": "A run id as fanout_start returned it (or `last`)."});
    json!([
        {
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
        },
        {
            "name": "fanout_wait",
            "title": "Wait for a run",
            "description": "Wait until a run ends or timeout_secs passed, then return its report as it stands (`ended` says which). Sends progress notifications (tasks ended / tasks) when the call has a progressToken. Call again while `ended` is false.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "run_id": run_id, "repo": repo,
                    "timeout_secs": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECS, "description": "Longest wait (default 60, at most 300)."}
                },
                "required": ["run_id"],
                "additionalProperties": false
            }
        },
        {
            "name": "fanout_status",
            "title": "Show runs",
            "description": "Without run_id: the repository's runs and their status. With run_id: that run's report as it stands.",
            "inputSchema": {
                "type": "object",
                "properties": {"repo": repo, "run_id": run_id},
                "additionalProperties": false
            }
        },
        {
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
        },
        {
            "name": "fanout_cancel",
            "title": "Cancel a run",
            "description": "Ask a run this server started to stop at its next safe point. Agents are stopped; verified work is kept and the run ends `interrupted`, resumable with `fanout resume`. Returns at once; fanout_wait shows the end.",
            "inputSchema": {
                "type": "object",
                "properties": {"run_id": run_id},
                "required": ["run_id"],
                "additionalProperties": false
            }
        },
        {
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
        }
    ])
}
