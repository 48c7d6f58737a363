//! What every task pipeline of a run shares, how a task's pipeline hands over to integration,
//! and how a run fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::events::Events;
use super::workspace;
use crate::ids::RunId;
use crate::plan::{PlannedTask, RunOptions};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create the run folder {path}")]
    RunDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("{0}")]
    Verifier(String),
    #[error(transparent)]
    Preflight(#[from] crate::preflight::PreflightError),
    #[error("{0}")]
    Workspace(String),
}

/// What every task pipeline shares (plain data: no git handles).
pub(crate) struct Shared {
    /// When the run started: every task is queued from then on (the scheduler starts a task's
    /// pipeline only once a slot is free).
    pub run_started: Instant,
    pub run_id: RunId,
    pub repo_path: PathBuf,
    pub common_dir: PathBuf,
    pub workdir: PathBuf,
    pub base: git2::Oid,
    pub run_dir: PathBuf,
    pub options: RunOptions,
    pub tasks: Vec<PlannedTask>,
    pub events: Events,
    pub cancel: watch::Receiver<bool>,
    pub(crate) stop: super::stop::Stop,
    pub verifier: Option<Arc<tokio::sync::Mutex<crate::verify::readback::Verifier>>>,
    /// Where the judges of commits (read-back, review, diagnosis) run and read snapshots.
    pub judges: Arc<crate::verify::judges::Judges>,
    /// Outcomes carried over by `fanout resume`.
    pub priors: BTreeMap<String, crate::state::Prior>,
    /// The integration branch's head before a `fanout retry`: the new integration descends from it.
    pub earlier_integration: Option<git2::Oid>,
    /// The tasks' reports of the run's earlier attempt (see `Plan::earlier_reports`).
    pub earlier_reports: BTreeMap<String, crate::report::TaskReport>,
    pub readback_skip: Option<String>,
    /// The task file's integration gate.
    pub integrate: Option<crate::plan::IntegrateGate>,
    /// What a conflicting task does.
    pub on_conflict: crate::taskfile::OnConflict,
    // Overlap before dispatch (issue 21).
    /// What tasks whose `paths` overlap do, and the groups of such tasks (task indices).
    pub overlap: crate::taskfile::OverlapChoice,
    pub overlap_groups: Vec<crate::plan::overlap::OverlapGroup>,
    /// The task file's `merge` rules: conflicts in the files they name are resolved.
    pub merge_rules: crate::git::merge_rules::MergeRules,
    /// The kind of task workspace, and the overlay's shared lower checkouts.
    pub(crate) workspaces: workspace::Workspaces,
    /// The run's shared caches (`None`: the tasks name none).
    pub caches: Option<crate::caches::RunCaches>,
    /// Prices, budgets and the run's total spent (issue 23).
    pub(crate) spending: super::spending::Spending,
    /// What the egress proxies refused each task (for its report).
    pub egress_refused: super::egress_refusals::Refusals,
}

/// The outcome of a task before integration.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    /// Verified and committed; waits for integration.
    Ready(git2::Oid),
    /// Finished without integration (no changes, failed, timed out, verify failed, skipped).
    Done,
}
