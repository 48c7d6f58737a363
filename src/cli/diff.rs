//! `fanout diff RUN TASK`: the task's change against the commit it started from, coloured on a
//! terminal; `--stat` sums it up per file, `--word-diff` shows the changed words inside lines
//! (the rendering: `patch_view`).

use super::args::DiffArgs;
use super::common::EXIT_OK;
use crate::patch_view::{render_patch, render_stat, render_word_diff, task_patch};

pub fn run(a: DiffArgs) -> anyhow::Result<i32> {
    let rt = super::common::run_task(&a.repo, &a.run, &a.task)?;
    let (run, task) = (&rt.run, &rt.task);
    let patch = task_patch(&rt)?;
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
