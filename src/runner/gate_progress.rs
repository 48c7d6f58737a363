//! What the integration gate tells while it works: its start and end, and each run of its
//! verify command (the full integration, each bisection step, a confirmation, the base) with
//! what it checks and how long it took — so a gate of many minutes is visible live, in CI's
//! plain lines and on the HTML timeline.

use std::time::Instant;

use super::shared::Shared;
use crate::event::{EventKind, GateStep, GateStepKind};
use crate::report::IntegrationReport;

/// What one run of the verify command is, as the gate's bisection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Probe {
    pub kind: GateStepKind,
    /// Bisection: step `step` of at most `steps`.
    pub step: Option<u32>,
    pub steps: Option<u32>,
    /// The tasks still in (the runs check prefixes of them).
    pub tasks: usize,
}

impl Probe {
    pub(crate) fn full(tasks: usize) -> Probe {
        Probe::plain(GateStepKind::Full, tasks)
    }

    pub(crate) fn confirm(tasks: usize) -> Probe {
        Probe::plain(GateStepKind::Confirm, tasks)
    }

    pub(crate) fn base(tasks: usize) -> Probe {
        Probe::plain(GateStepKind::Base, tasks)
    }

    /// Step `step` of a binary search whose range is still `range` wide: at most
    /// ⌈log2 range⌉ steps are left, this one included.
    pub(crate) fn bisect(step: u32, range: usize, tasks: usize) -> Probe {
        Probe {
            kind: GateStepKind::Bisect,
            step: Some(step),
            steps: Some(step - 1 + ceil_log2(range)),
            tasks,
        }
    }

    fn plain(kind: GateStepKind, tasks: usize) -> Probe {
        Probe {
            kind,
            step: None,
            steps: None,
            tasks,
        }
    }
}

/// ⌈log2 n⌉ (0 for n ≤ 1).
fn ceil_log2(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        usize::BITS - (n - 1).leading_zeros()
    }
}

/// The gate began, on the integration of `tasks` merged tasks.
pub(super) fn started(shared: &Shared, tasks: usize) -> Instant {
    shared
        .events
        .emit(EventKind::IntegrationGateStarted { tasks });
    Instant::now()
}

/// The gate ended, as `report` says.
pub(super) fn ended(shared: &Shared, started: Instant, report: &IntegrationReport) {
    shared.events.emit(EventKind::IntegrationVerified {
        passed: report.passed,
        verify_runs: report.verify_runs,
        elapsed_ms: started.elapsed().as_millis() as u64,
        flaky: report.flaky,
        reason: report.reason.clone(),
    });
}

/// Runs `check` (run `run` of the verify command, on the first `prefix` tasks) between its
/// start and end events; `passed` reads its verdict (an error: not passed).
pub(super) fn step<T, E>(
    shared: &Shared,
    run: u32,
    probe: Probe,
    prefix: usize,
    check: impl FnOnce() -> Result<T, E>,
    passed: impl Fn(&T) -> bool,
) -> Result<T, E> {
    let step = GateStep {
        verify_run: run,
        kind: probe.kind,
        step: probe.step,
        steps: probe.steps,
        prefix,
        tasks: probe.tasks,
    };
    shared
        .events
        .emit(EventKind::GateStepStarted { step: step.clone() });
    let began = Instant::now();
    let verdict = check();
    shared.events.emit(EventKind::GateStepEnded {
        step,
        passed: verdict.as_ref().is_ok_and(passed),
        elapsed_ms: began.elapsed().as_millis() as u64,
    });
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bisection_step_says_how_many_steps_are_left_at_most() {
        // 12 tasks: at most 4 steps; after 2 steps the range is 3 wide: 2 more at most.
        assert_eq!(Probe::bisect(1, 12, 12).steps, Some(4));
        assert_eq!(Probe::bisect(3, 3, 12).steps, Some(4));
        assert_eq!(Probe::bisect(3, 2, 12).steps, Some(3));
    }

    #[test]
    fn ceil_log2_of_small_numbers() {
        let got: Vec<u32> = [1usize, 2, 3, 4, 5, 8, 9]
            .iter()
            .map(|&n| ceil_log2(n))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 2, 3, 3, 4]);
    }
}
