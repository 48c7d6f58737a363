//! `fanout diff RUN TASK`: the task's change against the commit it started from, coloured on a
//! terminal; `--stat` sums it up per file, `--word-diff` shows the changed words inside lines
//! (the rendering: `patch_view`). With `--candidate K` a first line says how candidate K ended
//! and what it spent (from the run's report).

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
    if let Some(line) = a.candidate.and_then(|k| candidate_header(&rt, k)) {
        super::out::print(line)?;
    }
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

/// `# candidate 2 of fix: passed, spent 1234 tokens ($0.0123) (in 1000, out 234)` from the run's
/// report (nothing before the run has one). `git apply` skips such a line before the patch.
fn candidate_header(rt: &crate::lookup::RunTask, k: u32) -> Option<String> {
    let bytes = std::fs::read(crate::run_dir::RunDir::new(&rt.run_dir).report()).ok()?;
    let report: crate::report::RunReport = serde_json::from_slice(&bytes).ok()?;
    let task = report.tasks.iter().find(|t| t.id == rt.task.as_str())?;
    let c = task.candidates.iter().find(|c| c.candidate == k)?;
    Some(header_line(&rt.task, c))
}

fn header_line(task: &crate::ids::TaskId, c: &crate::report::CandidateReport) -> String {
    let chosen = if c.chosen { " (chosen)" } else { "" };
    let spent = match &c.usage {
        Some(u) => format!(
            "spent {} (in {}, out {})",
            u.brief(),
            u.input_tokens,
            u.output_tokens
        ),
        None => "spent nothing reported".to_string(),
    };
    format!(
        "# candidate {} of {task}: {}{chosen}, {spent}\n",
        c.candidate, c.status
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_how_the_candidate_ended_and_what_it_spent() {
        let task = crate::ids::TaskId::parse("fix").expect("id");
        let mut c = crate::report::CandidateReport {
            candidate: 2,
            status: "passed".into(),
            chosen: true,
            ..Default::default()
        };
        assert_eq!(
            header_line(&task, &c),
            "# candidate 2 of fix: passed (chosen), spent nothing reported\n"
        );
        c.usage = Some(crate::usage::Usage {
            input_tokens: 1000,
            output_tokens: 234,
            total_tokens: 1234,
            usd: Some(0.0123),
            ..Default::default()
        });
        assert_eq!(
            header_line(&task, &c),
            "# candidate 2 of fix: passed (chosen), spent 1234 tokens ($0.0123) (in 1000, out 234)\n"
        );
    }
}
