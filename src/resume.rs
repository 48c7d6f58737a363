/*!
Resuming an interrupted run (`fanout resume RUN`).

A run saves its inputs in its folder (`inputs/tasks.json`, a copy of the task file, and
`inputs/run.json`, the resolved base and options). Resuming reads them back with `state.json`:
tasks that were verified keep their commit, tasks that ended (no changes, failed, timed out,
verify failed) keep their outcome, and only tasks that never finished — pending, interrupted,
or skipped because of one of those — run again, in the same run, on fresh worktrees and branches.
Finished tasks are never redone or lost.
*/

use std::collections::BTreeMap;
use std::path::Path;

use crate::state::Prior;
use serde::{Deserialize, Serialize};

use crate::git::repo::UserRepo;
use crate::git::worktree;
use crate::ids::{task_branch, RunId};
use crate::plan::{Plan, PlanError, ReadbackMode, RunOptions, SandboxOptions};
use crate::report::TaskStatus;
use crate::state::{RunState, StateFile};

/// The resolved inputs of a run, saved so it can be resumed exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedInputs {
    pub base: String,
    pub base_rev: String,
    pub jobs: usize,
    pub agent: Option<String>,
    pub keep_worktrees: bool,
    pub sandbox: SandboxOptions,
    pub readback: ReadbackMode,
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    #[serde(default)]
    pub max_change_bytes: Option<u64>,
    #[serde(default)]
    pub allow_unfiltered: bool,
    #[serde(default)]
    pub on_conflict: Option<crate::taskfile::OnConflict>,
    #[serde(default)]
    pub squash: bool,
    #[serde(default)]
    pub workspace: crate::plan::WorkspaceChoice,
}

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("no run {0} in this repository")]
    NoRun(String),
    #[error("run {0} finished; there is nothing to resume")]
    Finished(String),
    #[error("run {run} is still running (pid {pid})")]
    Running { run: String, pid: u32 },
    #[error("run {run} cannot be resumed: {why}")]
    Inputs { run: String, why: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Saves what a later `fanout resume` needs (owner-only: the task file may hold settings).
pub fn save_inputs(plan: &Plan, task_file_text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::run_dir::RunDir::new(&plan.run_dir).inputs();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(
        crate::run_dir::RunDir::new(&plan.run_dir).input_tasks(),
        task_file_text,
    )?;
    let inputs = SavedInputs {
        base: plan.base.to_string(),
        base_rev: plan.base_rev.clone(),
        jobs: plan.options.jobs,
        agent: plan.options.agent.clone(),
        keep_worktrees: plan.options.keep_worktrees,
        sandbox: plan.options.sandbox.clone(),
        readback: plan.options.readback,
        max_file_bytes: plan.options.max_file_bytes,
        max_change_bytes: plan.options.max_change_bytes,
        allow_unfiltered: plan.options.allow_unfiltered,
        on_conflict: plan.options.on_conflict,
        squash: plan.options.squash,
        workspace: plan.options.workspace,
    };
    crate::report::write_json_atomic(
        &crate::run_dir::RunDir::new(&plan.run_dir).input_options(),
        &inputs,
    )
}

/// Builds the plan that continues `run`: same id, base and options (`jobs` may change).
pub fn plan_resume(
    repo_path: &Path,
    run: &RunId,
    jobs: Option<usize>,
    report: Option<std::path::PathBuf>,
    self_exe: std::path::PathBuf,
    min_free_mb: u64,
) -> Result<Plan, ResumeError> {
    let repo = UserRepo::open(repo_path).map_err(PlanError::from)?;
    let run_dir = repo.runs_dir().join(run.as_str());
    let state = StateFile::read(&crate::run_dir::RunDir::new(&run_dir).state())
        .ok_or_else(|| ResumeError::NoRun(run.to_string()))?;
    if state.status == "finished" {
        return Err(ResumeError::Finished(run.to_string()));
    }
    if state.status == "running" && !state.is_orphaned() {
        return Err(ResumeError::Running {
            run: run.to_string(),
            pid: state.pid,
        });
    }
    let inputs_err = |why: String| ResumeError::Inputs {
        run: run.to_string(),
        why,
    };
    let text = std::fs::read_to_string(crate::run_dir::RunDir::new(&run_dir).input_tasks())
        .map_err(|e| inputs_err(format!("its saved task file is missing ({e})")))?;
    let saved: SavedInputs = std::fs::read(crate::run_dir::RunDir::new(&run_dir).input_options())
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| inputs_err(format!("its saved options are unreadable ({e})")))?;
    let file = crate::taskfile::parse(&text).map_err(|problems| {
        inputs_err(format!(
            "its saved task file is invalid: {}",
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    let options = RunOptions {
        repo: repo_path.to_path_buf(),
        tasks_file: crate::run_dir::RunDir::new(&run_dir).input_tasks(),
        jobs: jobs.unwrap_or(saved.jobs),
        base: Some(saved.base.clone()),
        agent: saved.agent.clone(),
        keep_worktrees: saved.keep_worktrees,
        report,
        sandbox: saved.sandbox.clone(),
        readback: saved.readback,
        self_exe,
        max_file_bytes: saved.max_file_bytes,
        max_change_bytes: saved.max_change_bytes,
        allow_unfiltered: saved.allow_unfiltered,
        min_free_mb,
        on_conflict: saved.on_conflict,
        squash: saved.squash,
        workspace: saved.workspace,
        // The run's own choice, whatever the task file says now.
        workspace_source: Some("the resumed run".into()),
    };
    let mut plan = Plan::from_parts(file, repo, options)?;
    plan.base_rev = saved.base_rev;
    plan.run_id = run.clone();
    plan.run_dir = run_dir;
    plan.priors = priors(&state);
    clean_unfinished(&plan)?;
    Ok(plan)
}

/// Outcomes that survive an interruption.
fn priors(state: &RunState) -> BTreeMap<String, Prior> {
    let mut out = BTreeMap::new();
    for (id, t) in &state.tasks {
        let ended = |status| Prior::Ended {
            status,
            commit: t.commit.clone(),
            error: t.error.clone(),
        };
        let prior = match t.status.as_str() {
            "verified" | "merged" => match t
                .commit
                .as_deref()
                .and_then(|c| git2::Oid::from_str(c).ok())
            {
                Some(oid) => Prior::Verified(oid),
                None => continue,
            },
            "no_changes" => ended(TaskStatus::NoChanges),
            "failed" => ended(TaskStatus::Failed),
            "timed_out" => ended(TaskStatus::TimedOut),
            "verify_failed" => ended(TaskStatus::VerifyFailed),
            // pending, interrupted, skipped (a dependency may rerun now): run again.
            _ => continue,
        };
        out.insert(id.clone(), prior);
    }
    out
}

/// Removes what an unfinished task left (worktree, scratch, branch) so it can start afresh.
fn clean_unfinished(plan: &Plan) -> Result<(), ResumeError> {
    let repo = &plan.repo.repo;
    for task in &plan.tasks {
        let id = task.id().as_str();
        if plan.priors.contains_key(id) {
            continue;
        }
        let name = worktree::worktree_name(plan.run_id.as_str(), id);
        worktree::remove(&plan.repo.common_dir, &name, &plan.worktree_path(task.id()))
            .map_err(PlanError::from)?;
        let _ = worktree::remove_tree(&plan.scratch_path(task.id()));
        // The run is not running (checked above), so a leftover ref lock is stale.
        crate::git::repo::delete_branch_of_dead_run(repo, &task_branch(&plan.run_id, task.id()))
            .map_err(PlanError::from)?;
    }
    Ok(())
}
