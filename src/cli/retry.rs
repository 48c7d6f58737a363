//! `fanout retry RUN [ID…]`: tasks of a run run again into the same run; and what `resume`
//! shares with it.

use anyhow::Context;

use super::args::{ContinueArgs, RepoArg, RetryArgs};
use super::common::{resolve_run, usage};
use crate::resume::{Continue, RetryChoice};

pub fn run(a: RetryArgs) -> anyhow::Result<i32> {
    let run = resolve_run(&a.repo, &a.run)?;
    let c = continue_of(&a.repo, run.clone(), &a.go_on)?;
    let choice = RetryChoice {
        ids: crate::plan::split_ids(&a.ids),
        force: a.force,
    };
    let continued =
        crate::resume::plan_retry(&c, &choice).map_err(|e| usage(crate::error_chain(&e)))?;
    let merged = crate::resume::merged_into(&c.repo_path, &run);
    if !merged.is_empty() {
        eprintln!(
            "fanout: retry: the run's integration is already in {}; fanout/{run}/merged moves \
             forward from it with the retried tasks, and `fanout merge {run}` brings them in",
            merged.join(", ")
        );
    }
    say_notes("retry", &continued.notes);
    let repo_path = c.repo_path.clone();
    super::run::execute_and_report_then(
        continued.plan,
        a.go_on.quiet,
        &a.go_on.output,
        "retry",
        move |report| {
            if let Err(e) = crate::resume::drop_stale_integration(&repo_path, &run, report) {
                eprintln!("fanout: retry: cannot remove the old integration branch: {e}");
            }
        },
    )
}

/// What a continued run takes from the command line.
pub(super) fn continue_of(
    repo: &RepoArg,
    run: crate::ids::RunId,
    go_on: &ContinueArgs,
) -> anyhow::Result<Continue> {
    let (jobs, report, min_free_mb) = (go_on.jobs, go_on.report.clone(), go_on.min_free_mb);
    if jobs == Some(0) {
        return Err(usage("--jobs must be at least 1"));
    }
    let self_exe = std::env::current_exe().context("cannot find fanout's own executable")?;
    Ok(Continue {
        repo_path: repo.repo.clone(),
        run,
        jobs,
        report,
        self_exe,
        min_free_mb,
        budget: None,
    })
}

/// Lines said about the tasks a continued run runs again; the rest are counted.
const NOTES_SHOWN: usize = 20;

/// One line on stderr per task a continued run runs again, saying why (at most
/// [`NOTES_SHOWN`]: a run of thousands of tasks says how many more).
pub(super) fn say_notes(mode: &str, notes: &[String]) {
    for n in notes.iter().take(NOTES_SHOWN) {
        eprintln!("fanout: {mode}: {n}");
    }
    if notes.len() > NOTES_SHOWN {
        eprintln!(
            "fanout: {mode}: … and {} more tasks run again (`fanout status` shows each task's phase)",
            notes.len() - NOTES_SHOWN
        );
    }
}
