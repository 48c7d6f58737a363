//! fanout's exit codes, in one place (the CLI, the run report and the binary use them).

/// Every task merged or had nothing to change.
pub const OK: i32 = 0;
/// Some task did not end `merged` or `no_changes`, or an output (`--junit`, …) failed.
pub const TASKS_FAILED: i32 = 1;
/// A budget stopped the run (issue 23): a task ended `budget_exceeded`, or the run's budget was
/// spent and tasks were skipped; `fanout resume --budget` continues it.
pub const BUDGET_SPENT: i32 = 3;
/// Bad input or a broken environment: nothing ran (or nothing more will).
pub const USAGE: i32 = 2;
/// `fanout combine`: a shard handed nothing over, so its tasks are `missing` (without
/// `--allow-missing`).
pub const SHARDS_MISSING: i32 = 4;
/// Interrupted (SIGINT, SIGTERM, SIGHUP, or a stop request): the run is resumable.
pub const INTERRUPTED: i32 = 130;
/// stdout was closed by its reader (`fanout diff … | head`): as quiet as SIGPIPE (128 + 13).
pub const BROKEN_PIPE: i32 = 141;
