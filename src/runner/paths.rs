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
}

impl Paths {
    pub(super) fn new(shared: &Shared, id: &TaskId) -> Paths {
        // Real paths: as root workspaces lie outside the run folder, which agents may not reach.
        let files = crate::run_dir::RunDir::new(&shared.run_dir).task(id.as_str());
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
            wt_name: worktree::worktree_name(shared.run_id.as_str(), id.as_str()),
            branch: task_branch(&shared.run_id, id),
            overlay: None,
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
