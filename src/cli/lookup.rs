//! Finding one task of one run for `fanout diff` and `fanout log`, with messages that say
//! which part was wrong: the run, or the task (then the run's tasks are listed).

use std::path::PathBuf;

use super::args::RepoArg;
use crate::git::repo::UserRepo;
use crate::ids::{RunId, TaskId};
use crate::state::StateFile;

/// A task known to belong to a run.
pub(super) struct RunTask {
    pub repo: UserRepo,
    pub run: RunId,
    pub task: TaskId,
    pub run_dir: PathBuf,
    /// The task's status in `state.json`, when the run has one.
    pub status: Option<String>,
}

/// At most this many task ids are named when a task is not found.
const LISTED_TASKS: usize = 20;

/// Resolves `RUN TASK` as the user typed them; errors are usage errors (exit 2).
pub(super) fn run_task(repo: &RepoArg, run: &str, task: &str) -> anyhow::Result<RunTask> {
    let task = TaskId::parse(task).map_err(super::common::usage)?;
    let run = super::common::resolve_run(repo, run)?;
    let user_repo = super::common::open_repo(repo)?;
    let runs_dir = user_repo.runs_dir();
    let run_dir = runs_dir.join(run.as_str());
    if !run_dir.is_dir() {
        return Err(super::common::usage(format!(
            "no run {run} in {} (`fanout status` lists the runs)",
            runs_dir.display()
        )));
    }
    let state = StateFile::read(&crate::run_dir::RunDir::new(&run_dir).state());
    let status = state
        .as_ref()
        .and_then(|s| s.tasks.get(task.as_str()))
        .map(|t| t.status.clone());
    let ids = task_ids(&run_dir, state.as_ref());
    // With no record of the run's tasks at all, let the caller look for the task's files.
    if status.is_none() && !ids.is_empty() && !ids.iter().any(|i| i == task.as_str()) {
        let shown: Vec<&str> = ids.iter().take(LISTED_TASKS).map(String::as_str).collect();
        let more = match ids.len().saturating_sub(LISTED_TASKS) {
            0 => String::new(),
            n => format!(" … ({n} more)"),
        };
        return Err(super::common::usage(format!(
            "run {run} has no task {task}; its tasks: {}{more}",
            shown.join(", ")
        )));
    }
    Ok(RunTask {
        repo: user_repo,
        run,
        task,
        run_dir,
        status,
    })
}

/// The run's task ids in task-file order: from `state.json`, else from the saved task file.
fn task_ids(run_dir: &std::path::Path, state: Option<&crate::state::RunState>) -> Vec<String> {
    if let Some(s) = state {
        if !s.order.is_empty() {
            return s.order.clone();
        }
        if !s.tasks.is_empty() {
            return s.tasks.keys().cloned().collect();
        }
    }
    std::fs::read_to_string(crate::run_dir::RunDir::new(run_dir).input_tasks())
        .ok()
        .and_then(|text| crate::taskfile::parse(&text).ok())
        .map(|f| f.tasks.iter().map(|t| t.id.to_string()).collect())
        .unwrap_or_default()
}
