/*!
`--on-conflict resolve=N` across rounds: a resolve round whose own gates or agent fail does not
end the task while rounds remain. The next round starts again from the change that conflicted
(merged onto the integration head, conflicts marked), told why the last round failed, like a
verify feedback turn. After the last round a task that never resolved ends as with
`--on-conflict fail`: a conflict, its verified change left out.
*/

use std::collections::BTreeMap;

use git2::Oid;

use super::shared::Pending;
use crate::report::{TaskReport, TaskStatus};

/// A task's change as it last conflicted: its commit, the paths, the integration's words.
#[derive(Clone, Debug)]
struct Conflicted {
    commit: Oid,
    paths: Vec<String>,
    error: String,
}

/// The tasks that went into resolve rounds, by index.
#[derive(Debug, Default)]
pub(super) struct Resolving(BTreeMap<usize, Conflicted>);

impl Resolving {
    /// Remembers the change of each task of `conflicted` (it conflicts now).
    pub(super) fn note(
        &mut self,
        reports: &[TaskReport],
        pendings: &[Pending],
        conflicted: &[usize],
    ) {
        for &i in conflicted {
            if let Pending::Ready(commit) = pendings[i] {
                self.0.insert(
                    i,
                    Conflicted {
                        commit,
                        paths: reports[i].conflict_paths.clone(),
                        error: reports[i].error.clone().unwrap_or_default(),
                    },
                );
            }
        }
    }

    /// The tasks whose last resolve round failed (its gates, its agent): each gets its change
    /// back as its pending commit, for another round.
    pub(super) fn failed(&self, reports: &[TaskReport], pendings: &mut [Pending]) -> Vec<usize> {
        let mut out = Vec::new();
        for (&i, c) in &self.0 {
            if round_failed(reports[i].status) {
                pendings[i] = Pending::Ready(c.commit);
                out.push(i);
            }
        }
        out
    }

    /// The paths a task's change conflicted in.
    pub(super) fn paths(&self, i: usize) -> Vec<String> {
        self.0.get(&i).map(|c| c.paths.clone()).unwrap_or_default()
    }

    /// After the last round: each task whose resolve rounds all failed ends a conflict, as
    /// with `--on-conflict fail`, its report saying why the last round failed. The indexes of
    /// the tasks it changed.
    pub(super) fn end_as_conflicts(&self, reports: &mut [TaskReport]) -> Vec<usize> {
        let mut out = Vec::new();
        for (&i, c) in &self.0 {
            let r = &mut reports[i];
            if !round_failed(r.status) {
                continue;
            }
            let why = r.error.clone().unwrap_or_else(|| r.status.as_str().into());
            r.status = TaskStatus::Conflict;
            r.conflict_paths = c.paths.clone();
            r.commit = Some(c.commit.to_string());
            r.error = Some(format!(
                "{}\nits resolve rounds did not resolve it: {why}",
                c.error
            ));
            out.push(i);
        }
        out
    }
}

/// Whether a resolve round ended without a resolution the integration could take: its gates
/// failed, its agent failed or timed out, or it left no change.
fn round_failed(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::VerifyFailed
            | TaskStatus::Failed
            | TaskStatus::TimedOut
            | TaskStatus::NoChanges
    )
}

/// What the next resolve round is told of the last one's failure, before the conflict.
pub(super) fn failure_feedback(report: &TaskReport, round: u32) -> String {
    format!(
        "Your resolve round {round} did not pass: {}\n\
         Your workspace starts again from the integration with your change merged as far as it goes.\n\n",
        super::tail::tail(report.error.as_deref().unwrap_or("it ended without a resolution"), 4000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_round_goes_again_and_ends_as_a_conflict() {
        let oid = Oid::from_str("0123456789012345678901234567890123456789").expect("oid");
        let mut b = TaskReport::new("b", "e");
        b.status = TaskStatus::Conflict;
        b.conflict_paths = vec!["line.txt".into()];
        b.error = Some("conflicts with changes merged before it in: line.txt".into());
        let mut reports = vec![TaskReport::new("a", "e"), b];
        let mut pendings = vec![Pending::Done, Pending::Ready(oid)];
        let mut resolving = Resolving::default();
        resolving.note(&reports, &pendings, &[1]);
        // The resolve round failed its gates: its change comes back for another round.
        reports[1].status = TaskStatus::VerifyFailed;
        reports[1].error = Some("conflict markers are left in: line.txt".into());
        pendings[1] = Pending::Done;
        assert_eq!(resolving.failed(&reports, &mut pendings), vec![1]);
        assert!(matches!(pendings[1], Pending::Ready(c) if c == oid));
        assert_eq!(resolving.end_as_conflicts(&mut reports), vec![1]);
        let r = &reports[1];
        assert_eq!(r.status, TaskStatus::Conflict);
        assert_eq!(r.conflict_paths, vec!["line.txt"]);
        assert_eq!(r.commit.as_deref(), Some(oid.to_string().as_str()));
        assert!(r
            .error
            .as_deref()
            .unwrap_or("")
            .contains("markers are left"));
        // A merged task stays merged.
        reports[1].status = TaskStatus::Merged;
        assert!(resolving.end_as_conflicts(&mut reports).is_empty());
    }
}
