//! What one run of the integration gate's verify command says: the failure's text, its first
//! line the exit and the reason read from the output (a test runner's summary), and the runs
//! that passed only when run again (`integrate.verify_retries`), which count as flaky.

use super::shared::Shared;
use crate::report::IntegrationReport;
use crate::verify::command::CommandOutcome;

/// `None` when it passed; else its detail (exit and reason) on the first line, then stdout and
/// stderr.
pub(super) fn failure_text(out: &CommandOutcome) -> Option<String> {
    if out.passed {
        return None;
    }
    let both = out.both();
    Some(if both.trim().is_empty() {
        out.detail()
    } else {
        format!("{}\n{both}", out.detail())
    })
}

/// Runs that passed when run again: counted as flaky, and said.
pub(super) fn report_retried(shared: &Shared, flaky: &[String], report: &mut IntegrationReport) {
    if flaky.is_empty() {
        return;
    }
    report.flaky += flaky.len() as u32;
    shared.events.warn(
        None,
        &format!(
            "integration gate: the verify command is flaky: {} run(s) passed only when run again ({})",
            flaky.len(),
            flaky[0]
        ),
    );
}
