//! Who a task's processes run as.

use super::shared::Shared;
use crate::sandbox::RunAs;

/// The uid task `id`'s processes run as when fanout is root, as the plan decided it (its own
/// uid from the run's block of dedicated uids, the shared-caches uid when it writes shared
/// caches, or `--agent-user`). `None` when fanout is not root.
pub(crate) fn task_user(shared: &Shared, id: &str) -> Option<RunAs> {
    match shared.tasks.iter().find(|t| t.id().as_str() == id) {
        Some(task) => task.launch.run_as,
        // Not a task of the plan (never expected): the run's uid, never another task's.
        None => shared.options.sandbox.run_as,
    }
}
