//! The pipeline's smaller steps: collecting and committing a workspace, keeping it when
//! that fails, recording what the sandbox and the agent reported.

use std::path::Path;
use std::sync::Arc;

use super::outcome::{stop, Stop};
use super::paths::Paths;
use super::shared::Shared;
use crate::agent::AgentError;
use crate::git::collect::{self, Collected};
use crate::git::worktree;
use crate::plan::PlannedTask;
use crate::report::{TaskReport, TaskStatus};

/// The agent's work could not be committed: the task fails with the reason and its workspace
/// stays (nothing removes a workspace whose report names it) for `fanout collect`.
pub(super) fn keep_workspace(
    shared: &Shared,
    paths: &Paths,
    report: &mut TaskReport,
    why: &str,
) -> Stop {
    // An overlay's work is its upper folder (the view exists only while the task runs).
    let kept = paths.readable_root();
    report.workspace = Some(kept.display().to_string());
    stop(
        TaskStatus::Failed,
        format!(
            "{why}; the agent's work is kept in {} (`fanout collect {} {}` commits it again)",
            kept.display(),
            shared.run_id,
            report.id
        ),
    )
}

pub(super) fn agent_stop(e: AgentError) -> Stop {
    let status = if e.is_timeout() {
        TaskStatus::TimedOut
    } else {
        TaskStatus::Failed
    };
    stop(status, e.to_string())
}

pub(super) fn record_sandbox(
    report: &mut TaskReport,
    from_session: Option<crate::sandbox::SandboxReport>,
    status_file: &Path,
) {
    let sandbox = from_session.or_else(|| crate::sandbox::read_report(status_file).ok());
    if let Some(s) = sandbox {
        report.sandbox = serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        report.sandbox_abi = s.abi;
        report.network = s.network.map(|n| n.as_str().to_string());
        if report.agent.sandbox.is_none() {
            report.agent.sandbox = Some(s);
        }
    }
}

pub(super) fn fill_change(report: &mut TaskReport, c: &Collected, paths: &Paths) {
    report.files = c.summary.files.clone();
    report.changes = c.summary.changes.clone();
    report.insertions = c.summary.insertions;
    report.deletions = c.summary.deletions;
    report.risky = c.summary.risky.clone();
    if c.commit.is_some() && std::fs::write(&paths.patch, &c.patch).is_ok() {
        report.patch = Some(paths.patch.display().to_string());
    }
}

pub(super) async fn collect_blocking(
    shared: &Arc<Shared>,
    paths: &Paths,
    start: git2::Oid,
    task: &PlannedTask,
) -> Result<Collected, String> {
    let (repo_path, name, branch) = (
        shared.repo_path.clone(),
        paths.wt_name.clone(),
        paths.branch.clone(),
    );
    let message = commit_message(task, shared.run_id.as_str());
    let author = task.author.clone();
    let overlay = paths.overlay.clone();
    let opts = collect_options(shared, task);
    blocking(move || {
        if let Some(layers) = &overlay {
            let author = author.as_ref().map(|(n, e)| (n.as_str(), e.as_str()));
            return super::workspace::collect_overlay(
                &repo_path,
                &name,
                layers,
                start,
                &branch,
                (&message, author),
                &opts,
            );
        }
        let repo = git2::Repository::open(&repo_path)
            .map_err(|e| format!("cannot open the repository: {e}"))?;
        let task_repo =
            worktree::open_task_repo(&repo, &name).map_err(|e| crate::error_chain(&e))?;
        let author = author.as_ref().map(|(n, e)| (n.as_str(), e.as_str()));
        collect::collect_and_commit_as(&task_repo, start, &branch, &message, &opts, author)
            .map_err(|e| format!("cannot collect the change: {}", crate::error_chain(&e)))
    })
    .await
}

/// An overlay task's index brought to its view before another turn (see
/// `workspace::refresh_overlay_index`); a failure only costs the agent a clean `git status`.
pub(super) async fn refresh_index(
    shared: &Arc<Shared>,
    paths: &Paths,
    start: git2::Oid,
    task: &PlannedTask,
) {
    let Some(layers) = paths.overlay.clone() else {
        return;
    };
    let (repo_path, name) = (shared.repo_path.clone(), paths.wt_name.clone());
    let opts = collect_options(shared, task);
    let _ = blocking(move || {
        super::workspace::refresh_overlay_index(&repo_path, &name, &layers, start, &opts)
    })
    .await;
}

fn collect_options(shared: &Shared, task: &PlannedTask) -> collect::CollectOptions {
    collect::CollectOptions {
        // Confined agents cannot write the worktree's index (it lives in the main .git).
        trust_index: shared.options.sandbox.enabled,
        limits: task.limits,
        allow_unfiltered: shared.options.allow_unfiltered,
    }
}

/// `<id>: <first prompt line>`, then the trailers `fanout collect` and people look for.
pub(super) fn commit_message(task: &PlannedTask, run: &str) -> String {
    crate::git::collect::task_message(task.id().as_str(), &task.spec.prompt, run)
}

/// Runs a blocking closure on the blocking pool, flattening a panic into an error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("internal error: {e}")))
}
