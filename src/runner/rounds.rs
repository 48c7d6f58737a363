//! A task run again after a conflict (`--on-conflict retry` / `resolve`) or given back to its
//! agent by the integration gate (`integrate.repair`) is one task with rounds, not a new task:
//! each earlier run becomes a [`RoundReport`] of the report of the run after it, with its kind
//! and what caused it.

use crate::report::{RoundKind, RoundReport, TaskReport};

/// The report of a new round: its earlier rounds, its kind and cause.
pub(super) fn start(
    report: &mut TaskReport,
    earlier: Vec<RoundReport>,
    kind: RoundKind,
    cause: String,
) {
    report.rounds = earlier;
    report.round_kind = kind;
    report.round_cause = Some(cause);
}

/// The rounds a task run again starts with: its earlier ones, and the run that just conflicted.
pub(super) fn before_rerun(conflicted: &TaskReport) -> Vec<RoundReport> {
    let mut rounds = conflicted.rounds.clone();
    let number = rounds.len() as u32 + 1;
    rounds.push(round_of(conflicted, number));
    rounds
}

/// Once nothing changes any more (after the integration gate): the last round of every task
/// that ran more than once, with its final status.
pub(super) fn close(reports: &mut [TaskReport]) {
    for r in reports.iter_mut().filter(|r| !r.rounds.is_empty()) {
        let number = r.rounds.len() as u32 + 1;
        let last = round_of(r, number);
        r.rounds.push(last);
    }
}

fn round_of(r: &TaskReport, number: u32) -> RoundReport {
    RoundReport {
        round: number,
        started_ms: r.started_ms,
        duration_ms: r.duration_ms,
        status: r.status,
        commit: r.commit.clone(),
        conflict_paths: r.conflict_paths.clone(),
        attempts: r.attempts,
        kind: r.round_kind,
        cause: r.round_cause.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TaskStatus;

    #[test]
    fn two_conflicts_then_a_merge_make_three_rounds() {
        let mut first = TaskReport::new("b", "e");
        first.status = TaskStatus::Conflict;
        first.conflict_paths = vec!["line.txt".into()];
        first.started_ms = 1_000;
        let mut second = TaskReport::new("b", "e");
        second.rounds = before_rerun(&first);
        second.status = TaskStatus::Conflict;
        second.started_ms = 2_000;
        let mut third = TaskReport::new("b", "e");
        third.rounds = before_rerun(&second);
        third.status = TaskStatus::Merged;
        third.started_ms = 3_000;
        let mut reports = vec![third, TaskReport::new("a", "e")];
        close(&mut reports);
        let rounds: Vec<(u32, u64, TaskStatus)> = reports[0]
            .rounds
            .iter()
            .map(|r| (r.round, r.started_ms, r.status))
            .collect();
        assert_eq!(
            rounds,
            vec![
                (1, 1_000, TaskStatus::Conflict),
                (2, 2_000, TaskStatus::Conflict),
                (3, 3_000, TaskStatus::Merged)
            ]
        );
        assert_eq!(reports[0].rounds[0].conflict_paths, vec!["line.txt"]);
        // A task that ran once has no rounds.
        assert!(reports[1].rounds.is_empty());
    }
}
