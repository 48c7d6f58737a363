//! A task's rounds: each time its agent is asked — its first prompt (`agent`), a turn after
//! a failed gate (`feedback`), a run again after a conflict (`retry`), and what the integration
//! gives back to it (`resolve`, `repair`) — with what caused it. A run again is one task with
//! rounds, not a new task: its report carries the earlier rounds (`rerun` passes them on).

use super::events::Events;
use crate::event::EventKind;
use crate::report::{AttemptReport, RoundKind, RoundReport, TaskReport, TaskStatus};

/// A new round of `report`'s task begins (its agent is asked now), said as `round_started`.
pub(super) fn begin(
    events: &Events,
    report: &mut TaskReport,
    kind: RoundKind,
    cause: Option<String>,
) {
    let round = report.rounds.len() as u32 + 1;
    events.emit(EventKind::RoundStarted {
        task: report.id.clone(),
        round,
        kind,
        cause: cause.clone(),
    });
    report.rounds.push(RoundReport {
        round,
        started_ms: crate::event::now_ms(),
        duration_ms: 0,
        status: TaskStatus::Failed,
        commit: None,
        conflict_paths: Vec::new(),
        attempts: 1,
        kind,
        cause,
    });
}

/// The current round ended: `status` (`failed` for gates that failed before a feedback
/// round), at `commit`.
pub(super) fn end(report: &mut TaskReport, status: TaskStatus, commit: Option<String>) {
    if let Some(r) = report.rounds.last_mut() {
        r.status = status;
        r.commit = commit;
        r.duration_ms = crate::event::now_ms().saturating_sub(r.started_ms);
    }
}

/// Why a feedback round is asked for: the gates that failed in the attempt before it.
pub(super) fn feedback_cause(attempt: Option<&AttemptReport>) -> String {
    let failed: Vec<String> = attempt
        .into_iter()
        .flat_map(|a| a.gates.iter().filter(|g| !g.passed))
        .map(
            |g| match g.detail.as_deref().and_then(|d| d.lines().next()) {
                Some(d) => format!("{} failed: {}", g.gate, crate::jsonrpc::truncate(d, 160)),
                None => format!("{} failed", g.gate),
            },
        )
        .collect();
    match failed.is_empty() {
        true => "a gate failed".into(),
        false => failed.join("; "),
    }
}

/// Why a task runs again after a conflict: what it met, one line.
pub(super) fn conflict_cause(conflicted: &TaskReport) -> String {
    format!(
        "conflict with what was merged before it in {}",
        conflicted.conflict_paths.join(", ")
    )
}

/// The rounds a task run again starts with: its earlier ones, the last ended as it conflicted.
pub(super) fn before_rerun(conflicted: &TaskReport) -> Vec<RoundReport> {
    let mut rounds = conflicted.rounds.clone();
    if rounds.is_empty() {
        // A report carried over from before rounds were recorded: its run as one round.
        rounds.push(round_of(conflicted, 1));
    }
    settle_last(&mut rounds, conflicted);
    rounds
}

/// Once nothing changes any more (after the integration gate): the last round of every task
/// gets its final status. A task that had one round lists none (its report is that round).
pub(super) fn close(reports: &mut [TaskReport]) {
    for r in reports.iter_mut() {
        if r.rounds.len() < 2 {
            r.rounds.clear();
            continue;
        }
        let mut rounds = std::mem::take(&mut r.rounds);
        settle_last(&mut rounds, r);
        r.rounds = rounds;
    }
}

fn settle_last(rounds: &mut [RoundReport], r: &TaskReport) {
    if let Some(last) = rounds.last_mut() {
        last.status = r.status;
        last.commit = r.commit.clone().or(last.commit.take());
        last.conflict_paths = r.conflict_paths.clone();
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
        kind: RoundKind::Agent,
        cause: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One pipeline run of task b: its rounds so far, then `turns` agent turns (the first of
    /// `kind`), ending `status`.
    fn pipeline(
        events: &Events,
        earlier: Vec<RoundReport>,
        kind: RoundKind,
        turns: usize,
        status: TaskStatus,
    ) -> TaskReport {
        let mut r = TaskReport::new("b", "e");
        r.rounds = earlier;
        for t in 0..turns {
            let (k, cause) = match t {
                0 => (kind, None),
                _ => (RoundKind::Feedback, Some("command failed: exit 1".into())),
            };
            begin(events, &mut r, k, cause);
            let last = t + 1 == turns;
            end(&mut r, if last { status } else { TaskStatus::Failed }, None);
        }
        r.status = status;
        if status == TaskStatus::Conflict {
            r.conflict_paths = vec!["line.txt".into()];
        }
        r
    }

    #[test]
    fn feedback_turns_and_conflicts_make_numbered_rounds() {
        let (events, _rx) = Events::channel();
        let first = pipeline(
            &events,
            Vec::new(),
            RoundKind::Agent,
            2,
            TaskStatus::Conflict,
        );
        let second = pipeline(
            &events,
            before_rerun(&first),
            RoundKind::Retry,
            1,
            TaskStatus::Conflict,
        );
        let third = pipeline(
            &events,
            before_rerun(&second),
            RoundKind::Retry,
            1,
            TaskStatus::Merged,
        );
        let mut reports = vec![
            third,
            pipeline(&events, Vec::new(), RoundKind::Agent, 1, TaskStatus::Merged),
        ];
        close(&mut reports);
        let rounds: Vec<(u32, RoundKind, TaskStatus)> = reports[0]
            .rounds
            .iter()
            .map(|r| (r.round, r.kind, r.status))
            .collect();
        assert_eq!(
            rounds,
            vec![
                (1, RoundKind::Agent, TaskStatus::Failed),
                (2, RoundKind::Feedback, TaskStatus::Conflict),
                (3, RoundKind::Retry, TaskStatus::Conflict),
                (4, RoundKind::Retry, TaskStatus::Merged)
            ]
        );
        assert_eq!(reports[0].rounds[1].conflict_paths, vec!["line.txt"]);
        assert_eq!(
            reports[0].rounds[1].cause.as_deref(),
            Some("command failed: exit 1")
        );
        // A task that had one round lists none.
        assert!(reports[1].rounds.is_empty());
    }
}
