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
    // Visible rounds (issue 21): the round it starts, why, and the task's earlier rounds.
    pub kind: crate::report::RoundKind,
    pub cause: Option<String>,
    pub earlier: Vec<crate::report::RoundReport>,
}
