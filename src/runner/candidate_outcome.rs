//! Candidates (best-of-N): how one candidate ended, what the candidates' runner and the
//! choice among them share.

use std::time::Instant;

use super::outcome::Stop;
use super::shared::Pending;
use crate::report::{TaskReport, TaskStatus};

/// What an attempt's phases end with: pending integration (or done), and the commit.
pub(super) type Ended = Result<(Pending, Option<git2::Oid>), Stop>;

/// How one candidate ended.
pub(super) struct Outcome {
    pub k: u32,
    pub report: TaskReport,
    pub result: Ended,
    /// When it got its job slot (`None`: never).
    pub slot: Option<Instant>,
}

impl Outcome {
    pub(super) fn commit(&self) -> Option<git2::Oid> {
        match &self.result {
            Ok((Pending::Ready(c), _)) => Some(*c),
            _ => None,
        }
    }

    /// `passed`, or how it ended.
    pub(super) fn status(&self) -> String {
        match &self.result {
            Ok((Pending::Ready(_), _)) => "passed".into(),
            Ok(_) => TaskStatus::NoChanges.as_str().into(),
            Err(s) => s.status.as_str().into(),
        }
    }

    /// Stopped by a budget: not started (the run's spent) or over the task's.
    pub(super) fn by_budget(&self) -> bool {
        match &self.result {
            Err(s) => {
                s.status == TaskStatus::BudgetExceeded
                    || s.status == TaskStatus::Skipped && s.error.starts_with("run budget spent")
            }
            Ok(_) => false,
        }
    }

    pub(super) fn error(&self) -> Option<String> {
        self.result.as_ref().err().map(|s| s.error.clone())
    }
}
