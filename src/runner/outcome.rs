//! How a task's pipeline ends early, and what its dependents learn when it ends.

use crate::report::TaskStatus;

/// What dependents learn about a finished task.
#[derive(Clone, Debug)]
pub struct DepResult {
    /// The verified commit, if the task produced one.
    pub commit: Option<git2::Oid>,
    /// Whether dependents may run (verified, or nothing to change).
    pub ok: bool,
    pub status: TaskStatus,
}

/// A task a pipeline waits for before it starts: a dependency, or an earlier task of its lane.
pub(crate) struct Awaited {
    pub name: String,
    pub rx: tokio::sync::watch::Receiver<Option<DepResult>>,
    /// An earlier task of the lane (`overlap: serialize`): its failure does not stop this one.
    pub lane: bool,
}

/// Ends a pipeline early with a status and a message.
pub(crate) struct Stop {
    pub(crate) status: TaskStatus,
    pub(crate) error: String,
}

pub(crate) fn stop(status: TaskStatus, error: impl Into<String>) -> Stop {
    Stop {
        status,
        error: error.into(),
    }
}

/// A task run again after it conflicted (`--on-conflict retry`): from this commit (the
/// integration head), told which paths conflicted.
#[derive(Clone, Debug)]
pub(crate) struct Rerun {
    pub start: git2::Oid,
    pub feedback: String,
    /// `--on-conflict resolve`: what its workspace gets on top of `start` (conflict markers).
    pub resolve: Option<std::sync::Arc<super::resolve::Resolution>>,
    /// Integration repair: what the fix may change.
    pub repair: Option<std::sync::Arc<super::repair::RepairScope>>,
    /// What caused the round, in a line (its `rounds` entry).
    pub cause: String,
    /// The thread of the task's earlier round, continued when its protocol allows it.
    pub thread: Option<String>,
    /// What a new session is told of the earlier round (its change, its last message) when
    /// the thread cannot be continued.
    pub earlier: String,
    /// Visible rounds (issue 21): the task's earlier rounds, which its report carries on.
    pub rounds: Vec<crate::report::RoundReport>,
}

impl Rerun {
    /// The kind of round this is.
    pub(crate) fn kind(&self) -> crate::report::RoundKind {
        use crate::report::RoundKind;
        match (&self.resolve, &self.repair) {
            (Some(_), _) => RoundKind::Resolve,
            (_, Some(_)) => RoundKind::Repair,
            _ => RoundKind::Retry,
        }
    }
}
