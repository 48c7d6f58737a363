/*!
Continuing a run in its own folder: `fanout resume RUN` (an interrupted run) and
`fanout retry RUN [ID…]` (tasks that did not succeed, run again).

A run saves its inputs in its folder (`inputs/tasks.json`, a copy of the task file, and
`inputs/run.json`, the resolved base, options and `--only` selection). A continued run reads
them back with `state.json` and decides for each task, from its last phase and status
([`keep`]), whether its outcome is carried over or it runs again, in the same run, on a fresh
workspace and branch. Finished work is never redone or lost: verified commits are integrated
again, in task-file order, with the tasks that ran again.
*/

mod keep;
mod retry;

pub use keep::Decision;
pub use retry::{RetryChoice, RetryError};

use serde::{Deserialize, Serialize};

use crate::git::repo::UserRepo;
use crate::git::worktree;
use crate::ids::{task_branch, RunId};
use crate::plan::{Plan, PlanError, ReadbackMode, RunOptions, SandboxOptions};
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
    /// `--overlap` of the run (issue 21).
    #[serde(default)]
    pub overlap: Option<crate::taskfile::OverlapChoice>,
    #[serde(default)]
    pub squash: bool,
    #[serde(default)]
    pub workspace: crate::plan::WorkspaceChoice,
    /// The tasks `--only` selected (every task of the file when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    // Budgets (issue 23):
    /// The budget the run had (the task file's, with `fanout resume --budget` over it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::usage::budget::Budget>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("no run {0} in this repository")]
    NoRun(String),
    #[error("run {0} finished; there is nothing to resume (`fanout retry {0}` runs the tasks that did not succeed again)")]
    Finished(String),
    #[error("run {run} is still running (pid {pid})")]
    Running { run: String, pid: u32 },
    #[error("run {run} cannot be resumed: {why}")]
    Inputs { run: String, why: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Retry(#[from] RetryError),
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
        overlap: plan.options.overlap,
        squash: plan.options.squash,
        workspace: plan.options.workspace,
        only: plan.only.clone(),
        budget: Some(plan.budget.clone()),
    };
    crate::report::write_json_atomic(
        &crate::run_dir::RunDir::new(&plan.run_dir).input_options(),
        &inputs,
    )
}

/// What a continued run needs besides its saved inputs: where the repository is and what
/// this invocation changes (`--jobs`, `--report`, the free-space floor).
pub struct Continue {
    pub repo_path: std::path::PathBuf,
    pub run: RunId,
    pub jobs: Option<usize>,
    pub report: Option<std::path::PathBuf>,
    pub self_exe: std::path::PathBuf,
    pub min_free_mb: u64,
    /// `fanout resume --budget`: limits over the run's (issue 23).
    pub budget: Option<crate::usage::budget::Budget>,
}

/// The plan of a continued run, and one line per task that runs again saying why.
pub struct Continued {
    pub plan: Plan,
    pub notes: Vec<String>,
}

/// Builds the plan that continues an interrupted run: same id, base, options and tasks
/// (`jobs` may change); each task kept or redone as [`keep::on_resume`] decides.
pub fn plan_resume(c: &Continue) -> Result<Continued, ResumeError> {
    let (mut plan, state) = load_run(c)?;
    // A finished run continues only with a new budget: what a budget stopped runs again.
    let finished = state.status == "finished";
    if finished && c.budget.is_none() {
        return Err(ResumeError::Finished(c.run.to_string()));
    }
    let decide = if finished {
        keep::on_budget_resume
    } else {
        keep::on_resume
    };
    let mut notes = Vec::new();
    for task in &plan.tasks {
        let id = task.id().as_str();
        let decision = state
            .tasks
            .get(id)
            .map_or(Decision::Redo("never started".into()), decide);
        match decision {
            Decision::Keep(prior) => {
                plan.priors.insert(id.to_string(), prior);
            }
            Decision::Redo(why) => notes.push(format!("{id}: {why}; it runs again")),
        }
    }
    clean_unfinished(&plan)?;
    if finished {
        keep_earlier_report(&plan.run_dir);
    }
    Ok(Continued { plan, notes })
}

/// Builds the plan that runs tasks of a finished (or interrupted) run again: the chosen tasks
/// ([`retry::retry_set`]) and any the run never finished run on fresh workspaces and branches;
/// every other outcome is carried over ([`keep::on_retry`]).
pub fn plan_retry(c: &Continue, choice: &RetryChoice) -> Result<Continued, ResumeError> {
    let (mut plan, state) = load_run(c)?;
    let deps: Vec<(String, Vec<String>)> = plan
        .tasks
        .iter()
        .map(|t| {
            let d = t.spec.depends_on.iter().map(|d| d.to_string()).collect();
            (t.id().to_string(), d)
        })
        .collect();
    let set = retry::retry_set(&state, &deps, choice)?;
    let mut notes = Vec::new();
    for task in &plan.tasks {
        let id = task.id().as_str();
        let Some(t) = state.tasks.get(id) else {
            notes.push(format!("{id}: never started; it runs"));
            continue;
        };
        if set.contains(id) {
            // A task the run never finished says where it was cut off.
            let why = match keep::on_retry(t) {
                Decision::Redo(why) => why,
                Decision::Keep(_) => t.status.clone(),
            };
            notes.push(format!("{id}: {why}; it runs again"));
            continue;
        }
        match keep::on_retry(t) {
            Decision::Keep(prior) => {
                plan.priors.insert(id.to_string(), prior);
            }
            Decision::Redo(why) => notes.push(format!("{id}: {why}; it runs again")),
        }
    }
    clean_unfinished(&plan)?;
    keep_earlier_report(&plan.run_dir);
    Ok(Continued { plan, notes })
}

/// Keeps the run's report as it was before a retry (`report.<n>.json`, the first free n),
/// so the earlier attempt's outcomes stay readable.
fn keep_earlier_report(run_dir: &std::path::Path) {
    let layout = crate::run_dir::RunDir::new(run_dir);
    let Some(to) = (1..)
        .map(|n| layout.earlier_report(n))
        .find(|p| !p.exists())
    else {
        return;
    };
    // Best effort: a run killed before its first report has none to keep.
    let _ = std::fs::copy(layout.report(), to);
}

/// The saved run as a plan (its id, folder, base, options and `--only` selection), and its
/// state; refused when there is no such run or it is still running.
fn load_run(c: &Continue) -> Result<(Plan, RunState), ResumeError> {
    let run = &c.run;
    let repo = UserRepo::open(&c.repo_path).map_err(PlanError::from)?;
    let run_dir = repo.runs_dir().join(run.as_str());
    let layout = crate::run_dir::RunDir::new(&run_dir);
    let state =
        StateFile::read(&layout.state()).ok_or_else(|| ResumeError::NoRun(run.to_string()))?;
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
    let text = std::fs::read_to_string(layout.input_tasks())
        .map_err(|e| inputs_err(format!("its saved task file is missing ({e})")))?;
    let saved: SavedInputs = std::fs::read(layout.input_options())
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
    let options = saved_options(c, &saved, layout.input_tasks());
    let mut plan = Plan::from_parts(file, repo, options)?;
    if let Some(budget) = &saved.budget {
        plan.budget = budget.clone();
    }
    if let Some(budget) = &c.budget {
        plan.budget = plan.budget.clone().overridden_by(budget);
    }
    if let Some(only) = &saved.only {
        plan.select(only, false)?;
    }
    plan.base_rev = saved.base_rev;
    plan.run_id = run.clone();
    plan.run_dir = run_dir;
    // Saved again as it was when the run starts: a continued run of a continued run reads it.
    plan.task_file_text = text;
    // The integration branch only moves forward: what an earlier attempt integrated (and
    // `fanout merge` may have brought into a branch) is an ancestor of the new integration.
    plan.earlier_reports = earlier_reports(&layout.report());
    plan.earlier_integration = plan
        .repo
        .repo
        .find_branch(&crate::ids::merged_branch(run), git2::BranchType::Local)
        .ok()
        .and_then(|b| b.get().target());
    Ok((plan, state))
}

/// The tasks' reports in the run's last report.json (none when it was killed before writing one).
fn earlier_reports(
    path: &std::path::Path,
) -> std::collections::BTreeMap<String, crate::report::TaskReport> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::report::RunReport>(&b).ok())
        .map(|r| r.tasks.into_iter().map(|t| (t.id.clone(), t)).collect())
        .unwrap_or_default()
}

/// The run's saved options, with what this invocation changes.
fn saved_options(c: &Continue, saved: &SavedInputs, tasks_file: std::path::PathBuf) -> RunOptions {
    RunOptions {
        repo: c.repo_path.clone(),
        tasks_file,
        jobs: c.jobs.unwrap_or(saved.jobs),
        base: Some(saved.base.clone()),
        agent: saved.agent.clone(),
        keep_worktrees: saved.keep_worktrees,
        report: c.report.clone(),
        sandbox: saved.sandbox.clone(),
        readback: saved.readback,
        self_exe: c.self_exe.clone(),
        max_file_bytes: saved.max_file_bytes,
        max_change_bytes: saved.max_change_bytes,
        allow_unfiltered: saved.allow_unfiltered,
        min_free_mb: c.min_free_mb,
        on_conflict: saved.on_conflict,
        overlap: saved.overlap,
        squash: saved.squash,
        workspace: saved.workspace,
        // The run's own choice, whatever the task file says now.
        workspace_source: Some("the resumed run".into()),
    }
}

/// Removes what a task that runs again left (worktree, scratch, branch) so it starts afresh,
/// and the lower checkouts of overlay workspaces an attempt killed with -9 left.
fn clean_unfinished(plan: &Plan) -> Result<(), ResumeError> {
    remove_left_lowers(plan)?;
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
        clean_unfinished_candidates(plan, task)?;
    }
    Ok(())
}

/// Candidates: a task that runs again reruns every candidate, afresh (their workspaces,
/// scratch folders, overlay layers and branches go).
fn clean_unfinished_candidates(
    plan: &Plan,
    task: &crate::plan::PlannedTask,
) -> Result<(), ResumeError> {
    let layout = crate::run_dir::RunDir::new(&plan.run_dir);
    for k in 1..=task.candidates.len() as u32 {
        let key = crate::ids::candidate_key(task.id().as_str(), k);
        let name = worktree::worktree_name(plan.run_id.as_str(), &key);
        worktree::remove(
            &plan.repo.common_dir,
            &name,
            &layout.worktrees_link().join(&key),
        )
        .map_err(PlanError::from)?;
        let _ = worktree::remove_tree(&layout.scratch_link().join(&key));
        let branch = crate::ids::candidate_branch(&plan.run_id, task.id(), k);
        crate::git::repo::delete_branch_of_dead_run(&plan.repo.repo, &branch)
            .map_err(PlanError::from)?;
    }
    Ok(())
}

/// The lower checkouts (and their registrations) an earlier attempt of the run left: a
/// continued run checks out its own when a task needs one.
fn remove_left_lowers(plan: &Plan) -> Result<(), ResumeError> {
    crate::git::memory_lower::remove_run_lowers(&plan.run_dir);
    let lower_dir = crate::run_dir::RunDir::new(&plan.run_dir)
        .worktrees_link()
        .join(".lower");
    let prefix = format!("fanout-{}-lower-", plan.run_id);
    let names = worktree::registered_with_prefix(&plan.repo.common_dir, &prefix);
    for name in names {
        let commit = &name[prefix.len()..];
        worktree::remove(&plan.repo.common_dir, &name, &lower_dir.join(commit))
            .map_err(PlanError::from)?;
    }
    Ok(())
}

/// The user's branches (not fanout's) that already contain the run's integration branch:
/// `fanout merge` brought it in before a retry.
pub fn merged_into(repo_path: &std::path::Path, run: &RunId) -> Vec<String> {
    let Ok(repo) = git2::Repository::open(repo_path) else {
        return Vec::new();
    };
    let Ok(head) = repo
        .find_branch(&crate::ids::merged_branch(run), git2::BranchType::Local)
        .and_then(|b| b.get().peel_to_commit())
        .map(|c| c.id())
    else {
        return Vec::new();
    };
    let Ok(branches) = repo.branches(Some(git2::BranchType::Local)) else {
        return Vec::new();
    };
    branches
        .flatten()
        .filter_map(|(b, _)| {
            let name = b.name().ok().flatten()?.to_string();
            let tip = b.get().target()?;
            let contains = tip == head || repo.graph_descendant_of(tip, head).unwrap_or(false);
            (!name.starts_with("fanout/") && contains).then_some(name)
        })
        .collect()
}

/// After a continued run whose integration is just the base (nothing merged now): the
/// integration branch of an earlier attempt no longer says what the run merged, so it goes.
pub fn drop_stale_integration(
    repo_path: &std::path::Path,
    run: &RunId,
    report: &crate::report::RunReport,
) -> Result<(), git2::Error> {
    if report.integration_commit != report.base {
        return Ok(());
    }
    let repo = git2::Repository::open(repo_path)?;
    let found = repo.find_branch(&crate::ids::merged_branch(run), git2::BranchType::Local);
    match found {
        Ok(mut b) => b.delete(),
        Err(_) => Ok(()),
    }
}
