//! Integration of verified task commits onto `fanout/<run>/merged`, and the end-of-run cleanup.

use std::collections::{BTreeMap, BTreeSet};

use git2::{Oid, Repository};

use super::{Pending, RunError, Shared};
use crate::git::merge::{Applied, Integrator};
use crate::git::{repo as gitrepo, worktree};
use crate::ids::{merged_branch, task_branch, TaskId};
use crate::report::{TaskReport, TaskStatus};

/// The commit a dependent task starts from: the base plus its dependencies' commits.
pub(crate) fn dependency_base(repo: &Repository, base: Oid, deps: &[Oid]) -> Result<Oid, String> {
    let mut integ = Integrator::new(repo, base);
    for &c in deps {
        match integ
            .apply(c, &format!("fanout: dependency {c}"))
            .map_err(|e| crate::error_chain(&e))?
        {
            Applied::Merged(_) => {}
            Applied::Conflict(paths) => {
                return Err(format!(
                    "its dependencies conflict with each other in {}",
                    paths.join(", ")
                ))
            }
        }
    }
    Ok(integ.head())
}

/// Task indices in task-file order, but with every task after its dependencies.
fn merge_order(shared: &Shared) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = shared
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id().as_str(), i))
        .collect();
    let mut placed = BTreeSet::new();
    let mut order = Vec::new();
    fn place(
        i: usize,
        shared: &Shared,
        index: &BTreeMap<&str, usize>,
        placed: &mut BTreeSet<usize>,
        order: &mut Vec<usize>,
    ) {
        if !placed.insert(i) {
            return;
        }
        for d in &shared.tasks[i].spec.depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                place(j, shared, index, placed, order);
            }
        }
        order.push(i);
    }
    for i in 0..shared.tasks.len() {
        place(i, shared, &index, &mut placed, &mut order);
    }
    order
}

/// Applies every ready commit in order and points the integration branch at the result.
pub(crate) fn integrate(
    shared: &Shared,
    reports: &mut [TaskReport],
    pendings: &[Pending],
    interrupted: bool,
) -> Result<Oid, RunError> {
    let repo = Repository::open(&shared.repo_path).map_err(|source| crate::git::GitError::Op {
        what: "cannot open the repository for integration".into(),
        source,
    })?;
    let mut integ = Integrator::new(&repo, shared.base);
    let mut merged: BTreeSet<TaskId> = BTreeSet::new();
    for i in merge_order(shared) {
        let task = &shared.tasks[i];
        let report = &mut reports[i];
        let Pending::Ready(commit) = pendings[i] else {
            if report.status == TaskStatus::NoChanges {
                merged.insert(task.id().clone());
            }
            continue;
        };
        if let Some(dep) = task.spec.depends_on.iter().find(|d| !merged.contains(*d)) {
            report.status = TaskStatus::Skipped;
            report.error = Some(format!("dependency {dep} was not merged"));
            continue;
        }
        // A stop request is honoured between two commits; the rest stay verified for resume.
        if interrupted || *shared.cancel.borrow() {
            // Verified work is kept on its branch, but an interrupted run integrates nothing new.
            report.status = TaskStatus::Failed;
            report.error = Some("the run was interrupted before integration; the verified commit is on the task branch".into());
            continue;
        }
        let message = format!(
            "fanout: merge task {}\n\nFanout-Task: {}\n",
            task.id(),
            task.id()
        );
        test_hooks::before_merge();
        match integ.apply(commit, &message)? {
            Applied::Merged(_) => {
                report.status = TaskStatus::Merged;
                merged.insert(task.id().clone());
            }
            Applied::Conflict(paths) => {
                report.status = TaskStatus::Conflict;
                report.error = Some(format!(
                    "conflicts with changes merged before it in: {}",
                    paths.join(", ")
                ));
                report.conflict_paths = paths;
            }
        }
        shared.progress.merged(task.id().as_str(), report.status);
    }
    let head = integ.head();
    gitrepo::set_branch(
        &repo,
        &merged_branch(&shared.run_id),
        head,
        "fanout: integration",
    )?;
    Ok(head)
}

/// Whether a task's workspace (worktree and scratch folder) stays after its pipeline ended:
/// with `--keep-worktrees`, or when the task's work could not be committed.
pub(crate) fn keeps_workspace(keep_worktrees: bool, report: &TaskReport) -> bool {
    keep_worktrees || report.workspace.is_some()
}

/// Removes one task's worktree, its registration and its scratch folder, unless they are kept.
/// Called as soon as the task's pipeline ended, so at most about `--jobs` workspaces exist.
pub(crate) fn remove_workspace(
    shared: &Shared,
    id: &TaskId,
    report: &TaskReport,
) -> Result<(), String> {
    if keeps_workspace(shared.options.keep_worktrees, report) {
        return Ok(());
    }
    remove_workspace_files(shared, id)
}

/// Removes a task's worktree, registration and scratch folder: O(1), whatever the number of
/// other worktrees.
pub(crate) fn remove_workspace_files(shared: &Shared, id: &TaskId) -> Result<(), String> {
    let name = worktree::worktree_name(shared.run_id.as_str(), id.as_str());
    let wt = shared.run_dir.join("worktrees").join(id.as_str());
    let scratch = shared.run_dir.join("scratch").join(id.as_str());
    worktree::remove(&shared.common_dir, &name, &wt).map_err(|e| crate::error_chain(&e))?;
    super::workspace::remove_layers(&shared.run_dir, id.as_str())?;
    worktree::remove_tree(&scratch)
        .map_err(|e| format!("cannot remove scratch folder {}: {e}", scratch.display()))
}

/// End of the run: removes what is left of workspaces (unless kept) and task branches that
/// hold nothing.
pub(crate) fn cleanup(shared: &Shared, reports: &mut [TaskReport]) {
    let Ok(repo) = Repository::open(&shared.repo_path) else {
        return;
    };
    for (task, report) in shared.tasks.iter().zip(reports.iter_mut()) {
        if shared.stop.now() {
            break; // stop now: `fanout resume` or `fanout clean` removes the rest
        }
        // Normally already gone (removed when the task ended): two failed stats.
        if let Err(e) = remove_workspace(shared, task.id(), report) {
            shared.progress.warn(&format!("{}: {e}", task.id()));
        }
        if report.commit.is_none() && !keeps_workspace(shared.options.keep_worktrees, report) {
            let branch = task_branch(&shared.run_id, task.id());
            if let Ok(mut b) = repo.find_branch(&branch, git2::BranchType::Local) {
                let _ = b.delete();
            }
            report.branch = None;
        }
    }
    let kept = reports
        .iter()
        .any(|r| keeps_workspace(shared.options.keep_worktrees, r));
    shared
        .workspaces
        .remove_lowers(shared, kept || shared.stop.now());
    if !shared.options.keep_worktrees {
        // Only when empty: kept workspaces stay.
        let _ = std::fs::remove_dir(shared.run_dir.join("worktrees"));
        let _ = std::fs::remove_dir(shared.run_dir.join("scratch"));
        // As root, the workspaces live outside the run folder (see sandbox::user).
        crate::sandbox::user::remove_outside(&shared.run_dir, false);
    }
}

/// Test-only hooks, compiled in with the `test-hooks` feature (never in a release build).
mod test_hooks {
    /// `FANOUT_TEST_MERGE_DELAY_MS`: sleep before each merged commit, so tests can signal a
    /// run while it integrates.
    #[cfg(feature = "test-hooks")]
    pub(super) fn before_merge() {
        if let Some(ms) = std::env::var("FANOUT_TEST_MERGE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    pub(super) fn before_merge() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_is_kept_when_asked_or_when_its_work_is_not_committed() {
        let mut report = TaskReport::new("t", "a");
        assert!(!keeps_workspace(false, &report));
        assert!(keeps_workspace(true, &report));
        report.workspace = Some("/somewhere/worktrees/t".into());
        assert!(keeps_workspace(false, &report));
        assert!(keeps_workspace(true, &report));
    }
}
