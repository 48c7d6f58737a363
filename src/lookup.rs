/*!
Finding a run and a task of it as a user names them (`fanout diff RUN TASK`, `fanout_diff`): a
run id or `last`, a task id; errors that say which part was wrong — the run, or the task (then
the run's tasks are listed). The command line and the MCP server both use it.
*/

use std::path::{Path, PathBuf};

use crate::git::repo::UserRepo;
use crate::ids::{RunId, TaskId};
use crate::state::StateFile;

/// Why a run or a task could not be found; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{0}")]
    Repo(String),
    #[error("{0}")]
    BadId(String),
    #[error("`last`: no runs in {0}")]
    NoRuns(String),
    #[error("no run {run} in {dir} (`fanout status` lists the runs)")]
    NoRun { run: String, dir: String },
    #[error("run {run} has no task {task}; its tasks: {tasks}")]
    NoTask {
        run: String,
        task: String,
        tasks: String,
    },
}

/// The run alias [`resolve_run`] understands.
pub const LAST_RUN: &str = "last";

/// At most this many task ids are named when a task is not found.
const LISTED_TASKS: usize = 20;

/// The user's repository at `repo`.
pub fn open_repo(repo: &Path) -> Result<UserRepo, LookupError> {
    UserRepo::open(repo).map_err(|e| LookupError::Repo(crate::error_chain(&e)))
}

/// Run ids found in the repository's run folder, oldest first.
pub fn list_runs(repo: &UserRepo) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(repo.runs_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs
}

/// What a user may type where a run is expected: a run id, or `last` for the newest run of
/// the repository (run ids start with their UTC start time, so the largest is the newest).
pub fn resolve_run(repo: &Path, raw: &str) -> Result<RunId, LookupError> {
    if raw != LAST_RUN {
        return RunId::parse(raw).map_err(|e| LookupError::BadId(e.to_string()));
    }
    let user_repo = open_repo(repo)?;
    let runs_dir = user_repo.runs_dir();
    // Only folders named like run ids count: a stray file must not become "the last run".
    let runs: Vec<RunId> = list_runs(&user_repo)
        .iter()
        .filter(|r| runs_dir.join(r).is_dir())
        .filter_map(|r| RunId::parse(r).ok())
        .collect();
    // Ids tell the second a run started; runs started within the same second are told apart
    // by the start time in their state.
    let second = |r: &RunId| r.as_str().get(..15).unwrap_or(r.as_str()).to_string();
    let newest = runs.iter().map(second).max();
    runs.into_iter()
        .filter(|r| Some(second(r)) == newest)
        .max_by_key(|r| {
            let started =
                StateFile::read(&crate::run_dir::RunDir::new(runs_dir.join(r.as_str())).state())
                    .map(|s| s.started_at_ms)
                    .unwrap_or(0);
            (started, r.clone())
        })
        .ok_or_else(|| LookupError::NoRuns(runs_dir.display().to_string()))
}

/// A task known to belong to a run.
pub struct RunTask {
    pub repo: UserRepo,
    pub run: RunId,
    pub task: TaskId,
    pub run_dir: PathBuf,
    /// The task's status in `state.json`, when the run has one.
    pub status: Option<String>,
}

/// Resolves `RUN TASK` as the user typed them.
pub fn run_task(repo: &Path, run: &str, task: &str) -> Result<RunTask, LookupError> {
    let task = TaskId::parse(task).map_err(|e| LookupError::BadId(e.to_string()))?;
    let run = resolve_run(repo, run)?;
    let user_repo = open_repo(repo)?;
    let runs_dir = user_repo.runs_dir();
    let run_dir = runs_dir.join(run.as_str());
    if !run_dir.is_dir() {
        return Err(LookupError::NoRun {
            run: run.to_string(),
            dir: runs_dir.display().to_string(),
        });
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
        return Err(LookupError::NoTask {
            run: run.to_string(),
            task: task.to_string(),
            tasks: format!("{}{more}", shown.join(", ")),
        });
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
