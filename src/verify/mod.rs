/*!
Verification gates a task's diff must pass before it is merged: the path scope, an optional
verify command run inside the task's sandbox (run again on failure up to `verify_retries`
times: `rerun`), a read-back of the changed files through a verifier MCP server (Claude Code's
`claude mcp serve` `Read` tool) and an optional review by Claude Code. The judges (read-back,
review, diagnosis) read a snapshot of the commit and run confined (`judges`).
*/

pub mod claude;
pub mod command;
pub mod diagnose;
pub mod exit;
pub mod judge_net;
pub mod judges;
pub mod readback;
pub mod rerun;
pub mod review;
pub mod scope;
pub mod select_review;
pub mod summary;
