/*!
The optional `review` gate: Claude Code reads the task's diff (and, read-only, a snapshot of
the task's commit: never the live workspace) and answers with a first line `APPROVE` or `REJECT: <reason>`. A rejection fails the gate with
the reviewer's reason, fed back to the agent like any other gate. Anything else — no answer,
an error, another first line — fails the gate too: a review that did not happen is not an
approval.
*/

use std::time::Duration;

use super::claude::{ask_noting_refusals, Question};
use super::judges::Judges;
use crate::report::GateResult;
use crate::taskfile::ReviewSpec;

/// Default time for one review.
pub const DEFAULT_TIMEOUT_SECS: f64 = 300.0;

/// The most of the diff put into the prompt.
const MAX_DIFF: usize = 200 * 1024;

/// What the reviewer decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject(String),
    /// The answer did not start with either word.
    Unclear,
}

/// Reads the verdict from the first non-empty line (markdown emphasis tolerated).
pub fn verdict(answer: &str) -> Verdict {
    let first = answer
        .lines()
        .map(|l| l.trim().trim_matches(|c| c == '*' || c == '`').trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let upper = first.to_ascii_uppercase();
    if upper.starts_with("APPROVE") {
        Verdict::Approve
    } else if upper.starts_with("REJECT") {
        let reason = first["REJECT".len()..]
            .trim_start_matches([':', ' ', '-'])
            .trim();
        let rest: Vec<&str> = answer
            .lines()
            .skip_while(|l| !l.to_ascii_uppercase().contains("REJECT"))
            .skip(1)
            .collect();
        let reason = if reason.is_empty() {
            rest.join("\n").trim().to_string()
        } else {
            reason.to_string()
        };
        Verdict::Reject(if reason.is_empty() {
            "no reason given".into()
        } else {
            reason
        })
    } else {
        Verdict::Unclear
    }
}

fn prompt(review: &ReviewSpec, task_prompt: &str, diff: &str) -> String {
    format!(
        "You review a change an automated coding agent made to this repository (the current \
         folder holds the repository as committed with the change; read any file you need, \
         change nothing).\n\n\
         ## What to check\n{}\n\n## The agent's task\n{}\n\n## The change (git diff)\n```diff\n{}\n```\n\n\
         Answer with `APPROVE` or `REJECT: <one-line reason>` as the very first line, then \
         anything else you want to say.\n",
        review.prompt.trim(),
        task_prompt.trim(),
        crate::jsonrpc::truncate(diff, MAX_DIFF)
    )
}

/// Runs the review gate for one attempt.
pub async fn gate(review: &ReviewSpec, q: ReviewInput<'_>) -> GateResult {
    let timeout = Duration::from_secs_f64(review.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS));
    let (answer, refused) = ask_noting_refusals(Question {
        judges: q.judges,
        claude: q.claude,
        snapshot: q.snapshot,
        stderr_log: q.stderr_log,
        status_file: q.status_file,
        purpose: "review",
        prompt: prompt(review, q.task_prompt, q.diff),
        timeout,
    })
    .await;
    let (passed, detail, output) = match answer {
        Ok(text) => match verdict(&text) {
            Verdict::Approve => (true, None, text),
            Verdict::Reject(why) => (
                false,
                Some(format!("the reviewer rejected the change: {why}")),
                text,
            ),
            Verdict::Unclear => (
                false,
                Some("the reviewer's answer did not start with APPROVE or REJECT".into()),
                text,
            ),
        },
        Err(e) => (
            false,
            Some(format!("the review did not happen: {e}")),
            String::new(),
        ),
    };
    GateResult {
        gate: "review".into(),
        passed,
        detail,
        paths: Vec::new(),
        output: (!output.is_empty()).then(|| crate::jsonrpc::truncate(&output, 8 * 1024)),
        // Notes on the reviewer's network (what its egress proxy refused): lines in the report.
        stderr: (!refused.is_empty()).then(|| refused.join("\n")),
        flaky: false,
    }
}

/// The task's side of a review.
pub struct ReviewInput<'a> {
    pub judges: &'a Judges,
    pub claude: &'a str,
    /// The snapshot of the attempt's commit (the whole tree).
    pub snapshot: &'a std::path::Path,
    pub stderr_log: &'a std::path::Path,
    pub status_file: &'a std::path::Path,
    pub task_prompt: &'a str,
    pub diff: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_verdicts() {
        assert_eq!(verdict("APPROVE\nlooks fine"), Verdict::Approve);
        assert_eq!(verdict("\n**APPROVE**"), Verdict::Approve);
        assert_eq!(
            verdict("REJECT: uses unwrap\nmore"),
            Verdict::Reject("uses unwrap".into())
        );
        assert_eq!(
            verdict("REJECT\nthe tests are gone"),
            Verdict::Reject("the tests are gone".into())
        );
        assert_eq!(verdict("I think it is fine"), Verdict::Unclear);
        assert_eq!(verdict(""), Verdict::Unclear);
    }
}
