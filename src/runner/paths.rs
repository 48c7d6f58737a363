//! Where one task's files are, for the runner: its run-folder files ([`crate::run_dir`]), its
//! worktree's registration and branch, and its overlay layers.

use std::path::{Path, PathBuf};

use super::shared::Shared;
use crate::git::worktree;
use crate::ids::{task_branch, TaskId};

pub(super) struct Paths {
    pub(super) worktree: PathBuf,
    pub(super) scratch: PathBuf,
    pub(super) events: PathBuf,
    pub(super) stderr_log: PathBuf,
    pub(super) status_file: PathBuf,
    pub(super) patch: PathBuf,
    pub(super) verify_log: PathBuf,
    pub(super) setup_log: PathBuf,
    pub(super) reset_log: PathBuf,
    pub(super) wt_name: String,
    pub(super) branch: String,
    /// The overlay's layers when the run uses overlay workspaces (`worktree` is then where
    /// the view is mounted, inside the task's processes only).
    pub(super) overlay: Option<super::workspace::Layers>,
    /// What names the workspace's files and folders: the task id, or a candidate's key.
    pub(super) key: String,
    /// Candidates: which candidate of the task this workspace is (`FANOUT_CANDIDATE`).
    pub(super) candidate: Option<u32>,
    /// The task's egress proxies (`--net isolated`): they serve while these paths live.
    pub(super) proxies: Option<super::egress::Proxies>,
}

/// Where one attempt at a task runs: the task (or a candidate's version of it), the index its
/// short TMPDIR and egress sockets are named by, and its workspace's paths.
pub(super) struct Workplace<'a> {
    pub task: &'a crate::plan::PlannedTask,
    pub env_index: usize,
    pub paths: Paths,
}

impl Paths {
    pub(super) fn new(shared: &Shared, id: &TaskId) -> Paths {
        Paths::named(shared, id.as_str(), task_branch(&shared.run_id, id), None)
    }

    /// Candidate `k` of task `id`: its own files (named by [`crate::ids::candidate_key`]) and its own
    /// branch `fanout/<run>/task/<id>/candidate-<k>`.
    pub(super) fn candidate(shared: &Shared, id: &TaskId, k: u32) -> Paths {
        let branch = crate::ids::candidate_branch(&shared.run_id, id, k);
        Paths::named(
            shared,
            &crate::ids::candidate_key(id.as_str(), k),
            branch,
            Some(k),
        )
    }

    fn named(shared: &Shared, key: &str, branch: String, candidate: Option<u32>) -> Paths {
        // Real paths: as root workspaces lie outside the run folder, which agents may not reach.
        let files = crate::run_dir::RunDir::new(&shared.run_dir).task(key);
        Paths {
            worktree: files.worktree,
            scratch: files.scratch,
            events: files.events,
            stderr_log: files.stderr_log,
            status_file: files.status_file,
            patch: files.patch,
            verify_log: files.verify_log,
            setup_log: files.setup_log,
            reset_log: files.reset_log,
            wt_name: worktree::worktree_name(shared.run_id.as_str(), key),
            branch,
            overlay: None,
            key: key.to_string(),
            candidate,
            proxies: None,
        }
    }

    /// Where fanout itself reads the task's changed files: the upper folder of an overlay
    /// workspace (it holds every changed file; deleted ones are whiteouts), else the worktree.
    pub(super) fn readable_root(&self) -> &Path {
        match &self.overlay {
            Some(l) => &l.spec.upper,
            None => &self.worktree,
        }
    }
}
