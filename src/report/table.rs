//! The terminal summary table: task, status (`merged (flaky)` when a gate passed only when run
//! again), files, +/−, seconds; the problems, flaky gates and the integration gate below it.
//! A run of more than [`SUMMARY_ABOVE`] tasks gets a summary instead: counts per status, then
//! the tasks that did not merge (at most [`LISTED`]; report.json has them all).

use super::{IntegrationReport, RunReport, TaskReport, TaskStatus};

/// Runs of more tasks than this get the summary, not a line per task.
pub const SUMMARY_ABOVE: usize = 50;
/// How many tasks that did not merge the summary names.
pub const LISTED: usize = 30;

/// One line on the integration gate: its verdict, runs, flaky runs, tasks taken out, reason.
fn integration_line(g: &IntegrationReport) -> String {
    let mut line = format!(
        "integration gate: {} after {} verify run(s)",
        if g.passed { "passed" } else { "FAILED" },
        g.verify_runs
    );
    if g.flaky > 0 {
        line.push_str(&format!(", {} flaky", g.flaky));
    }
    if !g.ejected.is_empty() {
        line.push_str(&format!(", took out {}", g.ejected.join(", ")));
    }
    if let Some(r) = &g.reason {
        line.push_str(&format!(" — {r}"));
    }
    line
}

/// What `fanout run` prints at the end: only the one summary line when `quiet` (the report
/// files hold the rest), else the table of a small run or the summary of a large one.
pub fn render_for(report: &RunReport, quiet: bool) -> String {
    match (report.tasks.len() > SUMMARY_ABOVE, quiet) {
        (_, true) => run_line(report),
        (false, false) => render(report),
        (true, false) => summary(report),
    }
}

/// Renders the summary table and the closing lines.
pub fn render(report: &RunReport) -> String {
    let id_w = report
        .tasks
        .iter()
        .map(|t| t.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    // A task that ran again after a conflict says in which round it ended.
    let st_w = report
        .tasks
        .iter()
        .map(|t| t.status_text().len())
        .max()
        .unwrap_or(13)
        .max(13);
    let mut out = String::new();
    out.push_str(&format!(
        "{:<id_w$}  {:<st_w$}  {:>5}  {:>7}  {:>7}  {:>8}\n",
        "task", "status", "files", "+", "-", "seconds"
    ));
    for t in &report.tasks {
        out.push_str(&format!(
            "{:<id_w$}  {:<st_w$}  {:>5}  {:>7}  {:>7}  {:>8.1}\n",
            t.id,
            t.status_text(),
            t.files.len(),
            format!("+{}", t.insertions),
            format!("-{}", t.deletions),
            t.duration_ms as f64 / 1000.0
        ));
    }
    let problems: Vec<_> = report
        .tasks
        .iter()
        .filter_map(|t| Some(format!("  {}: {}\n", t.id, first_lines(&detail(t)?, 3))))
        .collect();
    let flaky = report.tasks.iter().flat_map(|t| {
        t.verify.iter().filter(|g| g.flaky).map(move |g| {
            format!(
                "  {}: {} gate {}\n",
                t.id,
                g.gate,
                first_lines(g.detail.as_deref().unwrap_or("flaky"), 1)
            )
        })
    });
    // Egress refusals (issue 19): what to allow, in the words of the task file.
    let refused = report.tasks.iter().flat_map(|t| {
        t.egress_refused
            .iter()
            .map(move |r| format!("  {}: {}\n", t.id, r.line()))
    });
    let problems: Vec<String> = problems
        .into_iter()
        .chain(flaky)
        .chain(report.tasks.iter().filter_map(chosen_candidate_line))
        .chain(refused)
        .collect();
    if !problems.is_empty() {
        out.push('\n');
        out.extend(problems);
    }
    out.push_str(&closing(report));
    out
}

/// A large run: counts per status, then the tasks that did not merge (capped), then the same
/// closing lines as the table.
fn summary(report: &RunReport) -> String {
    let st_w = report
        .counts
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!("{:<st_w$}  {:>6}\n", "status", "tasks");
    // Most frequent first: the run's outcome reads from the top.
    let mut counts: Vec<(&String, &usize)> = report.counts.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (status, n) in counts {
        out.push_str(&format!("{status:<st_w$}  {n:>6}\n"));
    }
    let unmerged: Vec<&TaskReport> = report
        .tasks
        .iter()
        .filter(|t| t.status != TaskStatus::Merged)
        .collect();
    if !unmerged.is_empty() {
        out.push_str(&format!(
            "\nnot merged ({} of {}):\n",
            unmerged.len(),
            report.tasks.len()
        ));
        let id_w = unmerged
            .iter()
            .take(LISTED)
            .map(|t| t.id.len())
            .max()
            .unwrap_or(4);
        for t in unmerged.iter().take(LISTED) {
            let mut line = format!("  {:<id_w$}  {}", t.id, t.status_text());
            if let Some(detail) = detail(t) {
                line.push_str(&format!(": {}", first_lines(&detail, 1)));
            }
            out.push_str(&line);
            out.push('\n');
        }
        if unmerged.len() > LISTED {
            out.push_str(&format!(
                "  … and {} more: the full list is in {}\n",
                unmerged.len() - LISTED,
                report_json(report)
            ));
        }
    }
    let flaky = report
        .tasks
        .iter()
        .flat_map(|t| &t.verify)
        .filter(|g| g.flaky)
        .count();
    let refused: usize = report.tasks.iter().map(|t| t.egress_refused.len()).sum();
    if flaky + refused > 0 {
        out.push_str(&format!(
            "\n{flaky} flaky gate(s), {refused} egress refusal(s): see {}\n",
            report_json(report)
        ));
    }
    out.push_str(&closing(report));
    out
}

/// Where the run's report.json is (its run folder), for the lines that point there.
fn report_json(report: &RunReport) -> String {
    match report.run_dir.is_empty() {
        true => "report.json".into(),
        false => format!("{}/report.json", report.run_dir.trim_end_matches('/')),
    }
}

/// Why a task did not merge, when the report says: its error, or its conflicting paths.
fn detail(t: &TaskReport) -> Option<String> {
    match (&t.error, t.conflict_paths.is_empty()) {
        (Some(e), _) => Some(e.clone()),
        (None, false) => Some(format!("conflicts in {}", t.conflict_paths.join(", "))),
        _ => None,
    }
}

/// The closing lines every table ends with: the integration gate, the run line, what was
/// spent, a budget's stop.
fn closing(report: &RunReport) -> String {
    let mut out = String::new();
    if let Some(g) = &report.integration {
        out.push_str(&format!("\n{}\n", integration_line(g)));
    }
    out.push('\n');
    out.push_str(&run_line(report));
    // Accounting and budgets (issue 23).
    if let Some(u) = &report.usage {
        out.push_str(&format!("spent {}\n", u.brief()));
    }
    if report.tasks.iter().any(TaskReport::stopped_by_budget) {
        out.push_str(&format!(
            "a budget stopped tasks: `fanout resume {} --budget …` continues with a larger one\n",
            report.run_id
        ));
    }
    out
}

/// The run's one summary line: its id, counts per status, its integration branch.
fn run_line(report: &RunReport) -> String {
    let counts: Vec<String> = report
        .counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    // A run that integrated nothing creates no integration branch: do not name one.
    let integration = if report.integration_commit == report.base {
        "nothing integrated, no integration branch".to_string()
    } else {
        format!(
            "integration branch {} at {}",
            report.integration_branch,
            short(&report.integration_commit)
        )
    };
    format!(
        "run {}: {} — {integration}\n",
        report.run_id,
        counts.join(", ")
    )
}

// Candidates (best-of-N).
/// `  fix: candidate 3 of 3 chosen: <why>` for a task with candidates that chose one.
fn chosen_candidate_line(t: &crate::report::TaskReport) -> Option<String> {
    let k = t.candidate?;
    let why = t
        .candidates
        .iter()
        .find(|c| c.candidate == k)
        .and_then(|c| c.reason.as_deref())
        .unwrap_or("");
    Some(format!(
        "  {}: candidate {k} of {} chosen: {}\n",
        t.id,
        t.candidates.len(),
        first_lines(why, 1)
    ))
}

fn first_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().take(n).collect();
    let mut out = lines.join(" / ");
    if s.lines().count() > n {
        out.push_str(" …");
    }
    out
}

pub fn short(oid: &str) -> &str {
    &oid[..oid.len().min(12)]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{TaskReport, TaskStatus};

    /// A small run with every kind of outcome, for the snapshot tests of the outputs.
    pub(crate) fn sample() -> RunReport {
        let mut merged = TaskReport::new("users-route", "codex");
        merged.status = TaskStatus::Merged;
        merged.files = vec!["src/routes/users.ts".into()];
        merged.insertions = 12;
        merged.deletions = 3;
        merged.duration_ms = 4_200;
        let mut conflict = TaskReport::new("orders-route", "codex");
        conflict.status = TaskStatus::Conflict;
        conflict.conflict_paths = vec!["src/app.ts".into()];
        conflict.duration_ms = 1_000;
        let mut failed = TaskReport::new("auth", "exec");
        failed.status = TaskStatus::VerifyFailed;
        failed.error = Some("verification failed after 2 attempt(s): exit 1\nmore".into());
        failed.duration_ms = 950;
        let mut counts = std::collections::BTreeMap::new();
        counts.insert("merged".to_string(), 1);
        counts.insert("conflict".to_string(), 1);
        counts.insert("verify_failed".to_string(), 1);
        RunReport {
            schema_version: 1,
            run_id: "20261202-070000-abcd".into(),
            base: "0123456789abcdef0123456789abcdef01234567".into(),
            base_rev: "HEAD".into(),
            integration_branch: "fanout/20261202-070000-abcd/merged".into(),
            integration_commit: "fedcba9876543210fedcba9876543210fedcba98".into(),
            duration_ms: 6_000,
            counts,
            tasks: vec![merged, conflict, failed],
            ..RunReport::default()
        }
    }

    #[test]
    fn table_snapshot() {
        let expected = "\
task          status         files        +        -   seconds
users-route   merged             1      +12       -3       4.2
orders-route  conflict           0       +0       -0       1.0
auth          verify_failed      0       +0       -0       0.9

  orders-route: conflicts in src/app.ts
  auth: verification failed after 2 attempt(s): exit 1 / more

run 20261202-070000-abcd: 1 conflict, 1 merged, 1 verify_failed — integration branch fanout/20261202-070000-abcd/merged at fedcba987654
";
        assert_eq!(render(&sample()), expected);
    }

    /// `n` tasks, every `every`-th failed (with a two-line error), the others merged.
    fn large(n: usize, every: usize) -> RunReport {
        let mut report = sample();
        report.run_dir = "/r/.git/fanout/runs/x".into();
        report.tasks = (0..n)
            .map(|i| {
                let mut t = TaskReport::new(&format!("t{i:03}"), "exec");
                if i % every == 0 {
                    t.status = TaskStatus::Failed;
                    t.error = Some(format!("agent exited with code {i}\nsecond line"));
                } else {
                    t.status = TaskStatus::Merged;
                }
                t
            })
            .collect();
        let failed = n.div_ceil(every);
        report.counts = [
            ("failed".to_string(), failed),
            ("merged".to_string(), n - failed),
        ]
        .into_iter()
        .collect();
        report
    }

    #[test]
    fn a_large_run_is_summarised() {
        let report = large(120, 12);
        let text = render_for(&report, false);
        let expected = "\
status   tasks
merged     110
failed      10

not merged (10 of 120):
";
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.contains("  t012  failed: agent exited with code 12 …\n"),
            "{text}"
        );
        for i in (0..120).step_by(12) {
            assert!(
                text.contains(&format!("  t{i:03}  failed")),
                "t{i:03}: {text}"
            );
        }
        assert!(!text.contains("t001"), "a merged task is listed: {text}");
        assert!(text.lines().count() < 25, "{text}");
        assert!(text.ends_with(
            "\nrun 20261202-070000-abcd: 10 failed, 110 merged — integration branch fanout/20261202-070000-abcd/merged at fedcba987654\n"
        ), "{text}");
        // Quiet: the one summary line.
        let quiet = render_for(&report, true);
        assert_eq!(quiet.lines().count(), 1, "{quiet}");
        assert!(quiet.starts_with("run 20261202-070000-abcd: 10 failed, 110 merged"));
    }

    #[test]
    fn the_list_of_a_large_run_is_capped_and_says_where_the_rest_is() {
        let text = render_for(&large(100, 1), false);
        assert_eq!(text.matches("  failed: ").count(), LISTED, "{text}");
        assert!(
            text.contains(
                "  … and 70 more: the full list is in /r/.git/fanout/runs/x/report.json\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn small_runs_keep_the_table_unless_quiet() {
        assert_eq!(render_for(&sample(), false), render(&sample()));
        let quiet = render_for(&sample(), true);
        assert_eq!(quiet.lines().count(), 1, "{quiet}");
        assert_eq!(quiet, run_line(&sample()));
        let at_threshold = large(SUMMARY_ABOVE, 7);
        assert_eq!(render_for(&at_threshold, false), render(&at_threshold));
        assert_eq!(render_for(&at_threshold, true).lines().count(), 1);
    }

    #[test]
    fn what_was_spent_and_a_budget_stop_are_told() {
        let mut report = sample();
        report.usage = Some(crate::usage::Usage {
            total_tokens: 1234,
            usd: Some(0.5),
            ..Default::default()
        });
        report.tasks[2].status = crate::report::TaskStatus::BudgetExceeded;
        let text = render(&report);
        assert!(text.contains("\nspent 1234 tokens ($0.5000)\n"), "{text}");
        assert!(
            text.contains("`fanout resume 20261202-070000-abcd --budget …` continues"),
            "{text}"
        );
        assert!(!render(&sample()).contains("spent"));
    }

    #[test]
    fn flaky_gates_and_the_integration_gate_are_told() {
        let mut report = sample();
        report.tasks[0].verify.push(crate::report::GateResult {
            gate: "command".into(),
            passed: true,
            detail: Some("flaky: failed 1 time(s), then passed; first failure: x".into()),
            paths: vec![],
            output: None,
            stderr: None,
            flaky: true,
        });
        report.integration = Some(IntegrationReport {
            verify_runs: 5,
            ejected: vec!["orders-route".into()],
            passed: false,
            flaky: 2,
            reason: Some("verify command failed (exited with status 141): 141 failing".into()),
            output: None,
        });
        let text = render(&report);
        assert!(
            text.contains("users-route   merged (flaky)      1"),
            "{text}"
        );
        assert!(
            text.contains("  users-route: command gate flaky: failed 1 time(s), then passed"),
            "{text}"
        );
        assert!(
            text.contains("integration gate: FAILED after 5 verify run(s), 2 flaky, took out orders-route — verify command failed (exited with status 141): 141 failing"),
            "{text}"
        );
    }

    #[test]
    fn report_json_snapshot_keeps_its_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "schema_version",
                "run_id",
                "repo",
                "base",
                "base_rev",
                "integration_branch",
                "integration_commit",
                "run_dir",
                "interrupted",
                "sandbox",
                "duration_ms",
                "counts",
                "tasks"
            ]
        );
        let task = &v["tasks"][1];
        assert_eq!(task["status"], "conflict");
        assert_eq!(task["conflict_paths"], serde_json::json!(["src/app.ts"]));
        let back: RunReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }
}
