//! A task's phases before its agent: the workspace (made, or a parked one taken and reset) and
//! the setup (environment, sandbox, `setup` command).

use std::path::Path;
use std::sync::Arc;

use super::outcome::Rerun;
use super::outcome::{stop, Stop};
use super::paths::Paths;
use super::shared::Shared;
use super::steps::blocking;
use crate::git::worktree;
use crate::plan::PlannedTask;
use crate::process::SpawnSpec;
use crate::report::TaskStatus;

/// What the workspace phase made.
pub(super) struct Made {
    /// The commit the task starts from (the base, the base plus its dependencies' commits, or
    /// the integration head for a re-run).
    pub start: git2::Oid,
    /// A parked worktree taken from the pool, still to be reset (inside the task's sandbox).
    pub taken: Option<super::pool::Taken>,
}

/// The workspace phase: the task's workspace on its branch at its start commit, its scratch
/// folder, and (for a fresh workspace) its `include` files. Sets `paths.overlay`.
pub(super) async fn make(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    paths: &mut Paths,
    dep_commits: Vec<git2::Oid>,
    rerun: Option<&Rerun>,
) -> Result<Made, Stop> {
    let (shared2, id, key) = (shared.clone(), task.id().to_string(), paths.key.clone());
    let (wt, name, branch, scratch) = (
        paths.worktree.clone(),
        paths.wt_name.clone(),
        paths.branch.clone(),
        paths.scratch.clone(),
    );
    let rerun_start = rerun.map(|r| r.start);
    let include = task.include.clone();
    let (start, layers, taken) = blocking(move || {
        let s = &shared2;
        let repo = git2::Repository::open(&s.repo_path)
            .map_err(|e| format!("cannot open the repository: {e}"))?;
        let start = match rerun_start {
            Some(start) => {
                clear_first_run(s, &repo, (&name, &wt), &scratch, &branch)?;
                start
            }
            None => match super::lanes::descendant_of_all(&repo, s.base, &dep_commits) {
                Some(c) => c,
                None => {
                    super::integrate::dependency_base(&repo, s.base, &dep_commits, &s.merge_rules)?
                }
            },
        };
        let ws = &s.workspaces;
        let mut taken = None;
        let layers = if ws.overlay() {
            Some(ws.create_overlay(
                &repo,
                (&branch, start),
                &wt,
                &key,
                super::identity::task_user(s, &id),
            )?)
        } else {
            // A parked worktree is only registered here; the reset (setup phase, once the
            // task's sandbox is known) brings it to `start`. Whatever was recorded of an
            // earlier worktree at this path (a run again) is not this one's.
            ws.pool.forget(&wt);
            taken = ws.pool.take(&wt);
            match &taken {
                Some(_) => worktree::adopt(&repo, &name, &branch, start, &wt),
                None => worktree::create(&repo, &name, &branch, start, &wt),
            }
            .map_err(|e| crate::error_chain(&e))?;
            None
        };
        if let Some(l) = &layers {
            // `include`: ignored files of the checkout, before anything runs in the
            // workspace (an overlay's view is its upper folder until the sandbox mounts it).
            // A worktree gets them in the setup phase, once it is recorded for the pool.
            copy_include(&s.workdir, &l.spec.upper, &include, &s.events, &id)?;
        }
        for sub in ["tmp", "home"] {
            std::fs::create_dir_all(scratch.join(sub))
                .map_err(|e| format!("cannot create scratch folder: {e}"))?;
        }
        Ok((start, layers, taken))
    })
    .await
    .map_err(|e| stop(TaskStatus::Failed, e))?;
    paths.overlay = layers;
    Ok(Made { start, taken })
}

/// A run again: the first run's workspace (kept with --keep-worktrees) and branch go, the
/// task starts afresh from the integration head. Its CODEX_HOME stays: the round may continue
/// the task's thread.
fn clear_first_run(
    s: &Shared,
    repo: &git2::Repository,
    (name, wt): (&str, &std::path::Path),
    scratch: &std::path::Path,
    branch: &str,
) -> Result<(), String> {
    worktree::remove(&s.common_dir, name, wt).map_err(|e| crate::error_chain(&e))?;
    super::threads::remove_scratch(scratch, true)
        .map_err(|e| format!("cannot remove {}: {e}", scratch.display()))?;
    if let Ok(mut b) = repo.find_branch(branch, git2::BranchType::Local) {
        b.delete()
            .map_err(|e| format!("cannot replace branch {branch}: {e}"))?;
    }
    Ok(())
}

/// The task's environment (short TMPDIR, private HOME, caches) and the sandboxed spawn
/// settings every process of the task uses.
pub(super) async fn environment(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    index: usize,
    paths: &mut Paths,
) -> Result<SpawnSpec, Stop> {
    let task_env = {
        let (sh, scratch) = (shared.clone(), paths.scratch.clone());
        blocking(move || {
            crate::taskenv::prepare_task(
                &sh.run_dir,
                index,
                &scratch,
                sh.caches.as_ref(),
                sh.options.sandbox.run_as,
            )
            .map_err(|e| crate::error_chain(&e))
        })
        .await
        .map_err(|e| stop(TaskStatus::Failed, e))?
    };
    for w in &task_env.warnings {
        shared.events.warn(Some(task.id().as_str()), w);
    }
    // The proxies of an earlier attempt at these paths go first: their sockets are reused.
    paths.proxies = None;
    let (egress, proxies) = task
        .launch
        .isolate_net
        .then(|| super::egress::start(shared, task, index))
        .flatten()
        .unzip();
    paths.proxies = proxies;
    Ok(super::launch::spawn_spec(
        shared, task, paths, &task_env, egress,
    ))
}

/// The setup phase's commands, in the task's sandbox: the reset of a reused worktree, then the
/// shared setup layer (made now if this run has none for the task's start yet), or the task's
/// own `setup` command (`"once": false`).
pub(super) async fn setup(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    paths: &mut Paths,
    spawn: &mut SpawnSpec,
    made: Made,
) -> Result<(), Stop> {
    if let Some(taken) = made.taken {
        reset_reused_worktree(shared, task, paths, spawn, taken, made.start)
            .await
            .map_err(|e| stop(TaskStatus::Failed, e))?;
    } else if paths.overlay.is_none() {
        fresh_worktree(shared, task, paths, spawn, made.start)
            .await
            .map_err(|e| stop(TaskStatus::Failed, e))?;
    }
    if let Some(plan) = task.setup_layer() {
        return super::setup_run::apply(shared, &plan, made.start, paths, spawn)
            .await
            .map_err(|e| stop(TaskStatus::Failed, e));
    }
    let Some(cmd) = &task.setup else {
        return Ok(());
    };
    let mut cancel = shared.cancel.clone();
    // A stop request must not wait for a long setup (its process is stopped on drop).
    tokio::select! {
        r = crate::setup::run(spawn, &paths.worktree, cmd, task.setup_timeout_secs, &paths.setup_log) => {
            r.map_err(|e| stop(TaskStatus::Failed, e))
        }
        _ = cancel.wait_for(|c| *c) => {
            Err(stop(TaskStatus::Failed, "interrupted by the user during setup"))
        }
    }
}

/// Copies the task's `include` files (ignored files of the user's checkout) into `target`.
fn copy_include(
    workdir: &Path,
    target: &Path,
    include: &[crate::include::Entry],
    sink: &super::events::Events,
    task_id: &str,
) -> Result<(), String> {
    for w in crate::include::copy(workdir, target, include).map_err(|e| crate::error_chain(&e))? {
        sink.warn(Some(task_id), &w);
    }
    Ok(())
}

/// A worktree fanout just checked out: recorded for the pool's next reset (before anything
/// else is written into it), then the `include` files.
async fn fresh_worktree(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    paths: &Paths,
    spawn: &SpawnSpec,
    start: git2::Oid,
) -> Result<(), String> {
    let admin = worktree::admin_dir(&shared.common_dir, &paths.wt_name);
    let admin = std::path::absolute(&admin).unwrap_or(admin);
    shared
        .workspaces
        .pool
        .record_fresh(&paths.worktree, &admin, start, spawn.policy.run_as)
        .await;
    let (s, wt) = (shared.clone(), paths.worktree.clone());
    let (include, task_id) = (task.include.clone(), task.id().to_string());
    blocking(move || copy_include(&s.workdir, &wt, &include, &s.events, &task_id)).await
}

/// Brings a worktree taken from the pool to `start`: the fast reset in fanout when the pool
/// recorded it, else (or when in doubt) the full one inside the task's sandbox; when that does
/// not work, the worktree is removed and checked out afresh. Then the `include` files.
async fn reset_reused_worktree(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    paths: &Paths,
    spawn: &SpawnSpec,
    mut taken: super::pool::Taken,
    start: git2::Oid,
) -> Result<(), String> {
    let admin = worktree::admin_dir(&shared.common_dir, &paths.wt_name);
    let admin = std::path::absolute(&admin).unwrap_or(admin);
    let recorded = taken.recorded.take();
    let reset = shared
        .workspaces
        .pool
        .reset(
            super::pool::ResetJob {
                spec: spawn,
                taken: &taken,
                wt: &paths.worktree,
                admin: &admin,
                scratch: &paths.scratch,
                start,
                log: &paths.reset_log,
            },
            recorded,
        )
        .await;
    if reset.is_err() && *shared.cancel.borrow() {
        // Stopped by the interrupt: no fresh checkout (cleanup removes the worktree).
        return Err("interrupted by the user while the workspace was reset".into());
    }
    let (s, wt, name) = (
        shared.clone(),
        paths.worktree.clone(),
        paths.wt_name.clone(),
    );
    let (include, task_id) = (task.include.clone(), task.id().to_string());
    blocking(move || {
        if let Err(e) = reset {
            // A repository with submodules is simply not pooled: nothing to warn about.
            if let super::pool::ResetError::Failed(why) = e {
                s.events.warn(
                    Some(&task_id),
                    &format!(
                        "a reused worktree was checked out afresh, and worktrees are no longer reused in this run: {why}"
                    ),
                );
            }
            worktree::remove_tree(&wt)
                .map_err(|e| format!("cannot remove {}: {e}", wt.display()))?;
            let repo = git2::Repository::open(&s.repo_path)
                .map_err(|e| format!("cannot open the repository: {e}"))?;
            worktree::check_out(&repo, &name, start, &wt).map_err(|e| crate::error_chain(&e))?;
        }
        copy_include(&s.workdir, &wt, &include, &s.events, &task_id)
    })
    .await
}
