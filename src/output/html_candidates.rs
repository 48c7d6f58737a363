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
    if let Some(u) = &r.select_usage {
        let _ = write!(
            out,
            "<p class=\"muted\">the review that chose spent <span class=\"usage select-usage\"{}>{}</span></p>",
            data(u),
            esc(&u.brief())
        );
    }
}

/// A usage's figures as `data-` attributes (`data-total-tokens`, …; `data-usd` when priced).
fn data(u: &crate::usage::Usage) -> String {
    u.fields()
        .into_iter()
        .map(|(k, v)| format!(" data-{}=\"{v}\"", k.replace('_', "-")))
        .collect()
}

fn row(out: &mut String, c: &CandidateReport) {
    let gates: Vec<String> = c
        .gates
        .iter()
        .map(|g| format!("{} {}", g.gate, if g.passed { "✓" } else { "✗" }))
        .collect();
    // Issue 23: what it spent (its turns and its judges), in words and in `data-` attributes.
    let (tokens, attrs) = match &c.usage {
        Some(u) => (
            format!(
                "{} (in {}, out {})",
                u.brief(),
                u.input_tokens,
                u.output_tokens
            ),
            data(u),
        ),
        None => (String::new(), String::new()),
    };
    let _ = write!(
        out,
        "<tr data-candidate=\"{}\"{}><td>{}{}</td><td>{}</td><td>{}</td><td>+{} −{}</td><td>{}</td><td class=\"usage\"{attrs}>{}</td><td>{}</td></tr>",
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
                usage: Some(crate::usage::Usage {
                    input_tokens: 90,
                    output_tokens: 10,
                    total_tokens: 100,
                    usd: Some(0.5),
                    ..Default::default()
                }),
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
        assert!(
            out.contains("<td class=\"usage\" data-input-tokens=\"90\""),
            "{out}"
        );
        assert!(out.contains("data-total-tokens=\"100\" data-usd=\"0.500000\">100 tokens ($0.5000) (in 90, out 10)</td>"), "{out}");
        assert!(!out.contains("select-usage"), "{out}");
        r.select_usage = Some(Box::new(crate::usage::Usage {
            total_tokens: 15,
            ..Default::default()
        }));
        let mut out = String::new();
        table(&mut out, &r);
        assert!(
            out.contains("the review that chose spent <span class=\"usage select-usage\""),
            "{out}"
        );
    }
}
