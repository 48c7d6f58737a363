//! Candidates (best-of-N) on the HTML page: every candidate of a task with its gates, size,
//! cost (tokens) and why it was or was not chosen.

use std::fmt::Write as _;

use super::junit::esc;
use crate::report::{CandidateReport, TaskReport};

/// The task's candidates as a table (nothing for a task without candidates).
pub fn table(out: &mut String, r: &TaskReport) {
    if r.candidates.is_empty() {
        return;
    }
    out.push_str(
        "<table class=\"gates candidates\"><tr><th>candidate</th><th>agent</th><th>status</th><th>changed</th><th>gates</th><th>tokens</th><th>why</th></tr>",
    );
    for c in &r.candidates {
        row(out, c);
    }
    out.push_str("</table>");
}

fn row(out: &mut String, c: &CandidateReport) {
    let gates: Vec<String> = c
        .gates
        .iter()
        .map(|g| format!("{} {}", g.gate, if g.passed { "✓" } else { "✗" }))
        .collect();
    let tokens = c
        .agent
        .tokens
        .as_ref()
        .map(|t| format!("{} in / {} out", t.input_tokens, t.output_tokens))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<tr data-candidate=\"{}\"{}><td>{}{}</td><td>{}</td><td>{}</td><td>+{} −{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        c.candidate,
        if c.chosen { " class=\"chosen\"" } else { "" },
        c.candidate,
        if c.chosen { " <b>chosen</b>" } else { "" },
        esc(&c.agent_name),
        esc(&c.status),
        c.insertions,
        c.deletions,
        esc(&gates.join(", ")),
        esc(&tokens),
        esc(c.reason.as_deref().unwrap_or("")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidate_has_a_row_with_why() {
        let mut r = TaskReport::new("t", "a");
        table(&mut String::new(), &r);
        r.candidates = vec![
            CandidateReport {
                candidate: 1,
                status: "verify_failed".into(),
                reason: Some("did not pass <b>".into()),
                ..Default::default()
            },
            CandidateReport {
                candidate: 2,
                status: "passed".into(),
                chosen: true,
                insertions: 3,
                reason: Some("the fewest changed lines".into()),
                ..Default::default()
            },
        ];
        let mut out = String::new();
        table(&mut out, &r);
        assert_eq!(out.matches("<tr data-candidate=").count(), 2, "{out}");
        assert!(out.contains("did not pass &lt;b&gt;"), "{out}");
        assert!(
            out.contains("class=\"chosen\"><td>2 <b>chosen</b>"),
            "{out}"
        );
        assert!(out.contains("+3 −0"), "{out}");
    }
}
