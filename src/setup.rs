/*!
Workspace setup (`setup` in the task file): a command run in the task's worktree before the
agent starts, with the agent's own sandbox, environment and caches (the same [`SpawnSpec`] a
verify command gets), logged to `logs/<task>.setup.log`. Installing dependencies or
generating files the agent needs belongs here; a failing setup fails the task.
*/

use std::path::Path;
use std::time::Duration;

use crate::process::SpawnSpec;
use crate::taskfile::VerifyCommand;

/// Runs the setup command; `Err` is the task's error: the exit and the log's tail.
pub async fn run(
    spawn: &SpawnSpec,
    worktree: &Path,
    cmd: &VerifyCommand,
    timeout_secs: f64,
    log: &Path,
) -> Result<(), String> {
    let mut spec = spawn.clone();
    spec.cwd = worktree.to_path_buf();
    // Its own stderr and enforcement files, so the agent's are not mixed with it.
    spec.stderr_log = spawn.stderr_log.with_extension("setup-stderr.log");
    spec.status_file = spawn.status_file.with_extension("setup.json");
    // The setup phase's own allow-list (the task file's `network.setup`).
    spec.policy.egress = spawn.policy.egress.as_ref().map(|l| l.for_phase("setup"));
    let argv = cmd.argv();
    let out = crate::verify::command::run_logged(
        &spec,
        &argv,
        Duration::from_secs_f64(timeout_secs),
        Some(log),
    )
    .await;
    if out.passed {
        return Ok(());
    }
    let tail = crate::process::tail_of_file(log, 2000);
    Err(format!(
        "setup `{}` failed: {}; log {}:\n{}",
        argv.join(" "),
        out.summary,
        log.display(),
        tail.trim_end()
    ))
}
