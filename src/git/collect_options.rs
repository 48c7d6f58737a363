//! What collecting a task's workspace may commit and how: limits and options shared by the
//! collection of worktrees (`collect`), overlay upper folders (`upper`) and the walk (`workspace`).

use serde::Serialize;

/// Limits on what one task may change (task file `limits`, CLI flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChangeLimits {
    /// Largest single file (new or changed) fanout commits.
    pub max_file_bytes: u64,
    /// Largest sum of the sizes of all new or changed files of one task.
    pub max_change_bytes: u64,
}

impl Default for ChangeLimits {
    fn default() -> Self {
        ChangeLimits {
            max_file_bytes: 50 * 1024 * 1024,
            max_change_bytes: 500 * 1024 * 1024,
        }
    }
}

/// How a workspace is collected.
#[derive(Clone, Copy, Debug, Default)]
pub struct CollectOptions {
    /// The agent ran confined, so it could not write the worktree's index in the main `.git`:
    /// the index fanout wrote is a valid stat cache, and only files whose stat changed are
    /// hashed again. Otherwise every file is hashed.
    pub trust_index: bool,
    pub limits: ChangeLimits,
    /// Commit raw content for paths whose attributes name a filter driver (`filter=lfs`, …)
    /// that fanout does not run.
    pub allow_unfiltered: bool,
}
