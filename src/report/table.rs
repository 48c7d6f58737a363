//! The terminal summary table: task, status (`merged (flaky)` when a gate passed only when run
//! again), files, +/−, seconds; the problems, flaky gates and the integration gate below it.

use super::{IntegrationReport, RunReport, TaskReport};

/// The status cell: the status, and `(flaky)` when a gate passed only when run again.
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
        .filter_map(|t| {
            let detail = match (&t.error, t.conflict_paths.is_empty()) {
                (Some(e), _) => e.clone(),
                (None, false) => format!("conflicts in {}", t.conflict_paths.join(", ")),
                _ => return None,
            };
            Some(format!("  {}: {}\n", t.id, first_lines(&detail, 3)))
        })
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
    if let Some(g) = &report.integration {
        out.push_str(&format!("\n{}\n", integration_line(g)));
    }
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
    out.push_str(&format!(
        "\nrun {}: {} — {integration}\n",
        report.run_id,
        counts.join(", "),
    ));
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
