//! `fanout collect RUN TASK`: commits a workspace fanout kept because collecting it failed
//! (after the cause was dealt with, e.g. a nested repository's `.git` removed), onto the task's
//! branch. It never changes the integration branch.

use super::args::CollectArgs;
use super::common::{EXIT_OK, EXIT_USAGE};
use crate::git::collect::{self, ChangeLimits, CollectOptions};
use crate::git::worktree;
use crate::ids::{task_branch, TaskId};

pub fn run(a: CollectArgs) -> anyhow::Result<i32> {
    let run = super::common::resolve_run(&a.repo, &a.run)?;
    let task = match TaskId::parse(&a.task) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fanout: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let repo = super::common::open_repo(&a.repo)?;
    if crate::sandbox::user::is_root() {
        // The workspace belongs to the agent uid fanout handed it to.
        crate::sandbox::user::trust_handed_over_worktrees();
    }
    let name = worktree::worktree_name(run.as_str(), task.as_str());
    let task_repo = match worktree::open_task_repo(&repo.repo, &name) {
        Ok(r) => r,
        Err(_) => {
            eprintln!("fanout: run {run} keeps no workspace for task {task}");
            return Ok(EXIT_USAGE);
        }
    };
    let branch = task_branch(&run, &task);
    let tip = repo
        .repo
        .find_branch(&branch, git2::BranchType::Local)
        .ok()
        .and_then(|b| b.get().peel_to_commit().ok());
    let Some(tip) = tip else {
        eprintln!("fanout: the task branch {branch} is gone");
        return Ok(EXIT_USAGE);
    };
    // The branch holds the start commit, or a task commit fanout made on top of it.
    let parent = if tip
        .message_bytes()
        .windows(b"Fanout-Task:".len())
        .any(|w| w == b"Fanout-Task:")
    {
        tip.parent_id(0).unwrap_or(tip.id())
    } else {
        tip.id()
    };
    let defaults = ChangeLimits::default();
    let opts = CollectOptions {
        // Whatever happened to the workspace since, every file is hashed again.
        trust_index: false,
        limits: ChangeLimits {
            max_file_bytes: a.max_file_bytes.unwrap_or(defaults.max_file_bytes),
            max_change_bytes: a.max_change_bytes.unwrap_or(defaults.max_change_bytes),
        },
        allow_unfiltered: a.allow_unfiltered,
    };
    let message =
        format!("fanout: {task}\n\nCollected again by `fanout collect`.\n\nFanout-Task: {task}\n");
    // An overlay task's work is its upper folder over the shared lower checkout.
    let run_dir = repo.runs_dir().join(run.as_str());
    let overlay = crate::runner::collect_kept(
        &repo.workdir,
        &run_dir,
        run.as_str(),
        task.as_str(),
        parent,
        &branch,
        &message,
        &opts,
    );
    let collected = match overlay {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => {
            eprintln!("fanout: {task}: {e}");
            return Ok(super::common::EXIT_TASKS_FAILED);
        }
        None => collect::collect_and_commit(&task_repo, parent, &branch, &message, &opts),
    };
    let collected = match collected {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fanout: {task}: {}", crate::error_chain(&e));
            return Ok(super::common::EXIT_TASKS_FAILED);
        }
    };
    let patch = crate::run_dir::RunDir::new(repo.runs_dir().join(run.as_str()))
        .task(task.as_str())
        .patch;
    let _ = std::fs::write(&patch, &collected.patch);
    match collected.commit {
        Some(c) => super::common::say(&format!(
            "{task}: {} file(s) +{} -{} committed on {branch} ({c}); the workspace stays until `fanout clean {run}`",
            collected.summary.files.len(),
            collected.summary.insertions,
            collected.summary.deletions
        ))?,
        None => super::common::say(&format!("{task}: the workspace holds no change"))?,
    }
    Ok(EXIT_OK)
}
