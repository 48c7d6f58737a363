/*!
`verify_retries`: a verify command that fails runs again, up to N more times, and the first pass
ends it. A pass after a failure is *flaky*: the gate passes and says so (the failures that did
not hold are kept for the report). A run that timed out is not run again (a hang would cost the
whole timeout again, each time), and neither is one the machine's exhaustion failed (that has
its own second run in [`super::command`]).
*/

use std::path::Path;
use std::time::Duration;

use super::command::{run_logged, CommandOutcome};
use crate::process::SpawnSpec;

/// The last run's outcome and the failures before it.
pub struct Reruns {
    pub outcome: CommandOutcome,
    /// Each failed run before the last: its summary and reason.
    pub failures: Vec<String>,
}

impl Reruns {
    /// Passed, after at least one failure.
    pub fn flaky(&self) -> bool {
        self.outcome.passed && !self.failures.is_empty()
    }

    /// How a flaky pass is described: how often it failed, and the first failure.
    pub fn flaky_detail(&self) -> Option<String> {
        self.flaky().then(|| {
            format!(
                "flaky: failed {} time(s), then passed; first failure: {}",
                self.failures.len(),
                self.failures[0]
            )
        })
    }
}

/// Runs `argv` (as [`run_logged`]) and again after a failure, `retries` times at most.
pub async fn run(
    spec: &SpawnSpec,
    argv: &[String],
    timeout: Duration,
    log: Option<&Path>,
    retries: u32,
) -> Reruns {
    let mut failures = Vec::new();
    loop {
        let outcome = run_logged(spec, argv, timeout, log).await;
        let done = outcome.passed
            || outcome.timed_out
            || super::command::ran_out(&outcome)
            || failures.len() as u32 >= retries;
        if done {
            return Reruns { outcome, failures };
        }
        failures.push(outcome.detail());
        if let Some(path) = log {
            note(
                path,
                &format!(
                    "--- failed; running it again (retry {} of {retries}) ---\n",
                    failures.len()
                ),
            );
        }
    }
}

fn note(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}
