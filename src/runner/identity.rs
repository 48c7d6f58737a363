//! Who a task's processes run as.

use super::shared::Shared;
use crate::sandbox::RunAs;

/// The uid task `id`'s processes run as when fanout is root: its own uid from the run's block
/// of dedicated uids (the shared-caches uid when it writes shared caches), or the one
/// `--agent-user`. `None` when fanout is not root.
pub(crate) fn task_user(shared: &Shared, id: &str) -> Option<RunAs> {
    let run_as = shared.options.sandbox.run_as?;
    // Not a task of the plan (never expected): the run's uid, never another task's.
    let Some(index) = shared.tasks.iter().position(|t| t.id().as_str() == id) else {
        return Some(run_as);
    };
    let caches = !shared.tasks[index].caches.is_empty();
    Some(crate::sandbox::user::task_user(run_as, index, caches))
}
