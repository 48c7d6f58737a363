//! Outcomes of feedback rounds: a task that ran out of attempts because a gate kept failing
//! ends `verify_failed` with that gate's output, also when the agent's last round failed
//! (a codemod that does not understand the feedback exits non-zero: that is not the news).

use super::outcome::{stop, Stop};
use super::tail::tail;
use crate::agent::AgentError;
use crate::report::{TaskReport, TaskStatus};

/// How much of a failing gate's output goes into the task's `error`.
const ERROR_OUTPUT: usize = 2000;

/// The task's error after its last attempt failed verification: the failed gates' details and
/// the end of their output.
pub(crate) fn verify_failed_error(report: &TaskReport, attempts: u32) -> String {
    let why = report
        .attempt_history
        .last()
        .and_then(|a| a.failure.clone())
        .unwrap_or_default();
    let mut text = format!("verification failed after {attempts} attempt(s): {why}");
    for g in report.verify.iter().filter(|g| !g.passed) {
        if let Some(out) = g.output.as_deref().filter(|o| !o.trim().is_empty()) {
            text.push_str(&format!(
                "\n{} output:\n{}",
                g.gate,
                tail(out, ERROR_OUTPUT)
            ));
        }
        if let Some(err) = g.stderr.as_deref().filter(|o| !o.trim().is_empty()) {
            text.push_str(&format!(
                "\n{} stderr:\n{}",
                g.gate,
                tail(err, ERROR_OUTPUT / 2)
            ));
        }
    }
    text
}

/// The agent failed during a feedback round: the task ends with the gate failure that asked
/// for the round, the agent's failure noted after it. A timeout stays a timeout.
pub(crate) fn feedback_round_failed(report: &TaskReport, e: &AgentError) -> Stop {
    if e.is_timeout() {
        return stop(TaskStatus::TimedOut, e.to_string());
    }
    let attempts = report.attempt_history.len() as u32;
    stop(
        TaskStatus::VerifyFailed,
        format!(
            "{}\nthe feedback round (attempt {}) did not help: {e}",
            verify_failed_error(report, attempts),
            attempts + 1
        ),
    )
}
