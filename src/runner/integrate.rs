//! Integration of verified task commits onto `fanout/<run>/merged`, and the end-of-run cleanup.

use git2::{Oid, Repository};

pub(crate) use super::apply::Integration;
use super::apply::{apply_each, Queue};
use super::merge_message::{first_line, merge_message};
use super::merge_order::merge_order;
use super::shared::{Pending, RunError, Shared};
use crate::git::merge::{Applied, Integrator};
use crate::git::{repo as gitrepo, worktree};
use crate::ids::{merged_branch, task_branch, TaskId};
use crate::report::TaskReport;

/// The commit a dependent task starts from: the base plus its dependencies' commits.
pub(crate) fn dependency_base(
    repo: &Repository,
    base: Oid,
    deps: &[Oid],
    rules: &crate::git::merge_rules::MergeRules,
) -> Result<Oid, String> {
    let mut integ = Integrator::new(repo, base).with_rules(rules);
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

fn open_repo(shared: &Shared) -> Result<Repository, RunError> {
    Repository::open(&shared.repo_path).map_err(|source| {
        crate::git::GitError::Op {
            what: "cannot open the repository for integration".into(),
            source,
        }
        .into()
    })
}

/// Applies every ready commit in order onto the base.
pub(crate) fn integrate(
    shared: &Shared,
    reports: &mut [TaskReport],
    pendings: &[Pending],
    interrupted: bool,
) -> Result<Integration, RunError> {
    let mut integration = Integration {
        head: shared.base,
        merged: Vec::new(),
    };
    let order = merge_order(shared);
    apply_ready(
        shared,
        reports,
        pendings,
        interrupted,
        &order,
        &mut integration,
    )?;
    Ok(integration)
}

/// Applies the ready commits of `order` onto the integration head (the first pass, and
/// tasks run again after a conflict, at the end of the queue).
pub(crate) fn apply_ready(
    shared: &Shared,
    reports: &mut [TaskReport],
    pendings: &[Pending],
    interrupted: bool,
    order: &[usize],
    integration: &mut Integration,
) -> Result<(), RunError> {
    let repo = open_repo(shared)?;
    let start = integration.head;
    crate::git::merge::in_one_pack(&repo, start, |flush| {
        let queue = Queue {
            pendings,
            interrupted,
            order,
        };
        apply_each(shared, reports, &queue, integration, &repo, flush)?;
        Ok(((), integration.head))
    })
}

/// Tasks left out of a rebuilt integration: (task index, conflicting paths).
pub(crate) type Conflicts = Vec<(usize, Vec<String>)>;

/// Builds an integration of `items` (task index, commit) on `base` with the same in-memory
/// merge as the run's: its head and the items that conflicted (left out) with their paths.
pub(crate) fn rebuild(
    shared: &Shared,
    repo: &Repository,
    items: &[(usize, Oid)],
) -> Result<(Oid, Conflicts), crate::git::GitError> {
    let mut integ = Integrator::new(repo, shared.base).with_rules(&shared.merge_rules);
    let mut conflicts = Vec::new();
    for &(i, commit) in items {
        if let Applied::Conflict(paths) = integ.apply(commit, &merge_message(shared, i))? {
            conflicts.push((i, paths));
        }
    }
    Ok((integ.head(), conflicts))
}

/// Points the integration branch at the result; with `--squash` the result is first made one
/// commit on the base whose message lists the merged tasks.
pub(crate) fn hand_over(shared: &Shared, integration: &Integration) -> Result<Oid, RunError> {
    let repo = open_repo(shared)?;
    let mut head = integration.head;
    if shared.options.squash && head != shared.base && !integration.merged.is_empty() {
        head = squash(shared, &repo, integration)?;
    }
    // A run that changed nothing leaves no branch behind to clean up.
    if head != shared.base {
        head = super::advance::onto_earlier(shared, &repo, head)?;
        gitrepo::set_branch(
            &repo,
            &merged_branch(&shared.run_id),
            head,
            "fanout: integration",
        )?;
    }
    Ok(head)
}

fn squash(shared: &Shared, repo: &Repository, integration: &Integration) -> Result<Oid, RunError> {
    use crate::git::GitContext;
    let tree = repo
        .find_commit(integration.head)
        .and_then(|c| c.tree())
        .ctx(|| "cannot read the integration tree".into())?;
    let base = repo
        .find_commit(shared.base)
        .ctx(|| format!("base commit {} not found", shared.base))?;
    let n = integration.merged.len();
    let mut message = format!(
        "fanout: merge {n} task{} of run {}\n\n",
        if n == 1 { "" } else { "s" },
        shared.run_id
    );
    for &(i, _) in &integration.merged {
        let first = first_line(&shared.tasks[i].spec.prompt);
        message.push_str(&format!("- {}: {first}\n", shared.tasks[i].id()));
    }
    message.push_str(&format!("\nFanout-Run: {}\n", shared.run_id));
    for &(i, _) in &integration.merged {
        message.push_str(&format!("Fanout-Task: {}\n", shared.tasks[i].id()));
    }
    let sig = crate::git::fanout_signature()?;
    let commit = repo
        .commit(None, &sig, &sig, &message, &tree, &[&base])
        .ctx(|| "cannot create the squashed integration commit".into())?;
    Ok(commit)
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
        secure_kept(shared, id.as_str());
        return Ok(());
    }
    remove_workspace_files(shared, id.as_str(), false)
}

/// Removes a task's worktree, registration and scratch folder: O(1), whatever the number of
/// other worktrees. With `keep_thread` the scratch folder's CODEX_HOME stays (for a later
/// round on the same thread; the end of the run removes it).
pub(crate) fn remove_workspace_files(
    shared: &Shared,
    id: &str,
    keep_thread: bool,
) -> Result<(), String> {
    let name = worktree::worktree_name(shared.run_id.as_str(), id);
    let layout = crate::run_dir::RunDir::new(&shared.run_dir);
    let wt = layout.worktrees_link().join(id);
    let scratch = layout.scratch_link().join(id);
    // Parked for the next task when the pool is on (then only the registration goes below),
    // else removed.
    let index = worktree::admin_dir(&shared.common_dir, &name).join("index");
    shared.workspaces.pool.park(&wt, &index);
    worktree::remove(&shared.common_dir, &name, &wt).map_err(|e| crate::error_chain(&e))?;
    super::workspace::remove_layers(&shared.run_dir, id)?;
    super::threads::remove_scratch(&scratch, keep_thread)
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
            shared.events.warn(Some(task.id().as_str()), &e.to_string());
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
        .remove_lowers(&shared.events, kept || shared.stop.now());
    shared.workspaces.pool.clear();
    if !shared.options.keep_worktrees {
        // Only when empty: kept workspaces stay.
        let layout = crate::run_dir::RunDir::new(&shared.run_dir);
        let _ = std::fs::remove_dir(layout.worktrees_link());
        let _ = std::fs::remove_dir(layout.scratch_link());
        // As root, the workspaces live outside the run folder (see sandbox::user).
        crate::sandbox::user::remove_outside(&shared.run_dir, false);
        crate::taskenv::remove_run_tmp(&shared.run_dir, false);
    }
}

/// A task's workspace kept for the user (`--keep-worktrees`, or work that could not be
/// committed): no uid of the run keeps anything in it (as root it is given back to root), no
/// setuid or setgid bit and nothing writable by others stays, and only its owner reaches it.
/// Covers the worktree (or an overlay's upper folder), the scratch folder and the TMPDIR.
pub(crate) fn secure_kept(shared: &Shared, id: &str) {
    let run_dir = &shared.run_dir;
    let index = shared.tasks.iter().position(|t| t.id().as_str() == id);
    // The task's TMPDIR: `<run>/tmp` links to the run's short temp folder (see taskenv).
    let tmp = std::fs::read_link(run_dir.join("tmp"))
        .ok()
        .zip(index)
        .map(|(root, i)| root.join(i.to_string()));
    let dirs = [
        Some(super::workspace::worktrees_dir(run_dir).join(id)),
        Some(super::workspace::layers_dir(run_dir, id).join("upper")),
        Some(crate::run_dir::RunDir::new(run_dir).task(id).scratch),
        tmp,
    ];
    for d in dirs.iter().flatten() {
        if !d.is_dir() {
            continue;
        }
        let _ = if crate::sandbox::user::is_root() {
            crate::sandbox::user::take_back(d)
        } else {
            crate::sandbox::user::strip_unsafe_modes(d)
        };
    }
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
