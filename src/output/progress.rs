//! The run's long phases that are not a task's: the integration, conflict rounds, the
//! integration gate and each run of its verify command. The terminal names them live and in
//! CI's heartbeat lines, instead of a bar that says "7/7 done · 0 running" for minutes.

use std::time::{Duration, Instant};

use crate::event::{EventKind, GateStep, GateStepKind};

/// How often CI's plain output says what is still running when nothing else was printed.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// The heartbeat period: [`HEARTBEAT`], or `FANOUT_HEARTBEAT_SECS` (a test and debug knob).
pub fn heartbeat_every() -> Duration {
    std::env::var("FANOUT_HEARTBEAT_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.1)
        .map(Duration::from_secs_f64)
        .unwrap_or(HEARTBEAT)
}

/// `2m13s`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// Which run-wide phase the run is in, and since when.
#[derive(Default)]
pub struct Progress {
    /// After the tasks: integrating, or a conflict round (`round 2: 3 task(s) again`).
    stage: Option<(String, Instant)>,
    gate: Option<Instant>,
    step: Option<(GateStep, Instant)>,
}

impl Progress {
    /// Follows one event; returns the plain line it is worth (gate steps and their verdicts).
    pub fn event(&mut self, kind: &EventKind) -> Option<String> {
        let now = Instant::now();
        match kind {
            EventKind::IntegrationStarted { ready } => {
                self.stage = Some((format!("integrating {ready} verified commit(s)"), now));
            }
            EventKind::ConflictRetry { round, .. } => {
                let label = format!("conflict round {}: tasks run again", round + 1);
                if self.stage.as_ref().is_none_or(|(l, _)| *l != label) {
                    self.stage = Some((label, now));
                }
            }
            EventKind::IntegrationGateStarted { tasks } => {
                self.gate = Some(now);
                return Some(format!(
                    "fanout: integration gate: verifying the integration of {tasks} task(s)"
                ));
            }
            EventKind::GateStepStarted { step } => self.step = Some((step.clone(), now)),
            EventKind::GateStepEnded {
                step,
                passed,
                elapsed_ms,
            } => {
                self.step = None;
                let verdict = if *passed { "passed" } else { "failed" };
                return Some(format!(
                    "fanout: {}: {verdict} in {:.1} s",
                    step.describe(),
                    *elapsed_ms as f64 / 1000.0
                ));
            }
            EventKind::IntegrationVerified {
                passed,
                verify_runs,
                elapsed_ms,
                flaky,
                reason,
            } => {
                self.gate = None;
                self.step = None;
                let verdict = if *passed { "passed" } else { "failed" };
                let flaky = match flaky {
                    0 => String::new(),
                    n => format!(" ({n} flaky run(s))"),
                };
                let reason = reason
                    .as_deref()
                    .filter(|_| !*passed)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                return Some(format!(
                    "fanout: integration gate {verdict} after {verify_runs} verify run(s) in {}{flaky}{reason}",
                    clock(Duration::from_millis(*elapsed_ms))
                ));
            }
            EventKind::RunEnded { .. } => *self = Progress::default(),
            _ => {}
        }
        None
    }

    /// The gate's current work, live: `bisect step 2/4: first 7 of 12 tasks, 0m41s`.
    pub fn gate_label(&self, now: Instant) -> Option<String> {
        let gate = self.gate?;
        Some(match &self.step {
            Some((step, since)) => live_step(step, now.duration_since(*since)),
            None => format!(
                "integration gate: running {}",
                clock(now.duration_since(gate))
            ),
        })
    }

    /// The stage after the tasks (integrating, a conflict round), with its time so far.
    pub fn stage_label(&self, now: Instant) -> Option<String> {
        let (label, since) = self.stage.as_ref()?;
        Some(format!("{label}, {}", clock(now.duration_since(*since))))
    }

    /// Past the first pass of the tasks: an ETA from the tasks' rate would mean nothing.
    pub fn past_tasks(&self) -> bool {
        self.stage.is_some() || self.gate.is_some()
    }
}

/// One gate step as the live view names it.
fn live_step(step: &GateStep, took: Duration) -> String {
    let took = clock(took);
    match step.kind {
        GateStepKind::Full => format!("integration gate: running {took} ({} task(s))", step.tasks),
        GateStepKind::Bisect => format!(
            "bisect step {}/{}: first {} of {} tasks, {took}",
            step.step.unwrap_or(0),
            step.steps.unwrap_or(0),
            step.prefix,
            step.tasks
        ),
        GateStepKind::Confirm => format!(
            "integration gate: confirming the failure of the first {} tasks, {took}",
            step.prefix
        ),
        GateStepKind::Base => format!("integration gate: checking the base alone, {took}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: GateStepKind, prefix: usize) -> GateStep {
        GateStep {
            verify_run: 2,
            kind,
            step: Some(2),
            steps: Some(4),
            prefix,
            tasks: 12,
        }
    }

    #[test]
    fn the_gate_and_its_steps_are_named_with_their_time() {
        let mut p = Progress::default();
        assert!(p
            .event(&EventKind::IntegrationGateStarted { tasks: 12 })
            .is_some_and(|l| l.contains("12 task(s)")));
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(133);
        assert_eq!(
            p.gate_label(later).as_deref(),
            Some("integration gate: running 2m13s")
        );
        p.event(&EventKind::GateStepStarted {
            step: step(GateStepKind::Bisect, 7),
        });
        let label = p.gate_label(Instant::now() + Duration::from_secs(41));
        assert_eq!(
            label.as_deref(),
            Some("bisect step 2/4: first 7 of 12 tasks, 0m41s")
        );
        let line = p.event(&EventKind::GateStepEnded {
            step: step(GateStepKind::Bisect, 7),
            passed: false,
            elapsed_ms: 41_200,
        });
        assert_eq!(
            line.as_deref(),
            Some("fanout: bisect step 2/4: first 7 of 12 task(s): failed in 41.2 s")
        );
        assert!(p.past_tasks());
        p.event(&EventKind::IntegrationVerified {
            passed: true,
            verify_runs: 6,
            elapsed_ms: 361_000,
            flaky: 0,
            reason: None,
        });
        assert!(p.gate_label(Instant::now()).is_none());
    }

    #[test]
    fn clock_reads_minutes_and_seconds() {
        assert_eq!(clock(Duration::from_secs(0)), "0m00s");
        assert_eq!(clock(Duration::from_secs(3601)), "60m01s");
    }
}
