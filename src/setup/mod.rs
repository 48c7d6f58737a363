/*!
Workspace setup (`setup` in the task file). By default it runs **once** per distinct start
tree and inputs ([`key`]), in a sandboxed checkout of its own; what it creates ([`harvest`])
becomes a read-only layer shared by every workspace — an overlay lower above the checkout, or
a copy ([`copy`]) in a plain worktree (see `runner::setup_run`). With `"once": false` it runs
in each task's worktree before the agent ([`run`]), with the agent's own sandbox,
environment and caches (the same [`SpawnSpec`] a verify command gets), logged to
`logs/<task>.setup.log`. A failing setup fails the tasks that need it.
*/

pub mod copy;
pub mod harvest;
pub mod key;

/// Why a shared setup layer could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Harvest(String),
    #[error("cannot copy the setup layer: {0}")]
    Copy(String),
}

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
