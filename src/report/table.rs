//! The terminal summary table: task, status, files, +/−, seconds.

use super::RunReport;

/// Renders the summary table and the closing lines.
pub fn render(report: &RunReport) -> String {
    let id_w = report
        .tasks
        .iter()
        .map(|t| t.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    out.push_str(&format!(
        "{:<id_w$}  {:<13}  {:>5}  {:>7}  {:>7}  {:>8}\n",
        "task", "status", "files", "+", "-", "seconds"
    ));
    for t in &report.tasks {
        out.push_str(&format!(
            "{:<id_w$}  {:<13}  {:>5}  {:>7}  {:>7}  {:>8.1}\n",
            t.id,
            t.status.as_str(),
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
    if !problems.is_empty() {
        out.push('\n');
        out.extend(problems);
    }
    let counts: Vec<String> = report
        .counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    out.push_str(&format!(
        "\nrun {}: {} — integration branch {} at {}\n",
        report.run_id,
        counts.join(", "),
        report.integration_branch,
        short(&report.integration_commit)
    ));
    out
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
