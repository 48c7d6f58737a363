//! `fanout diff RUN TASK`: the task's change against the commit it started from, coloured on a
//! terminal; `--stat` sums it up per file, `--word-diff` shows the changed words inside lines
//! (the rendering: `patch_view`).

use super::args::DiffArgs;
use super::common::EXIT_OK;
use crate::patch_view::{render_patch, render_stat, render_word_diff, task_patch};

pub fn run(a: DiffArgs) -> anyhow::Result<i32> {
    let rt = super::common::run_task(&a.repo, &a.run, &a.task)?;
    let (run, task) = (&rt.run, &rt.task);
    let patch = match a.candidate {
        Some(k) => match candidate_patch(&rt, k)? {
            Some(p) => p,
            None => {
                eprintln!("fanout: task {task} of run {run} has no candidate {k}");
                return Ok(super::common::EXIT_USAGE);
            }
        },
        None => task_patch(&rt)?,
    };
    if patch.is_empty() {
        // Nothing to print is the right answer for a task that changed nothing; say why on stderr.
        match rt.status.as_deref() {
            Some("no_changes") => eprintln!("fanout: task {task} of run {run} changed nothing"),
            Some(status) => eprintln!(
                "fanout: task {task} of run {run} has no change to show (status {status}: no patch, no task commit)"
            ),
            None => eprintln!("fanout: task {task} of run {run} has no change to show"),
        }
        return Ok(EXIT_OK);
    }
    let color = a.color.for_stdout();
    let text = if a.stat {
        render_stat(&patch, color)
    } else if a.word_diff {
        render_word_diff(&patch, color)
    } else {
        render_patch(&patch, color)
    };
    super::out::print(text)?;
    Ok(EXIT_OK)
}

/// Candidates: candidate `k`'s change, from the commit on its branch (`None`: no such
/// candidate); empty when it committed nothing.
fn candidate_patch(rt: &crate::lookup::RunTask, k: u32) -> anyhow::Result<Option<Vec<u8>>> {
    let repo = &rt.repo.repo;
    let branch = crate::ids::candidate_branch(&rt.run, &rt.task, k);
    let Ok(b) = repo.find_branch(&branch, git2::BranchType::Local) else {
        return Ok(None);
    };
    let commit = b.get().peel_to_commit()?;
    if !crate::patch_view::is_task_commit(commit.message_bytes()) {
        return Ok(Some(Vec::new()));
    }
    let parent = commit
        .parent(0)
        .map(|p| p.tree_id())
        .unwrap_or(commit.tree_id());
    let (_, patch) = crate::git::collect::summarize(repo, parent, commit.tree_id())?;
    Ok(Some(patch))
}
