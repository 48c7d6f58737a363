//! `overlap: serialize`: tasks whose declared `paths` overlap run in a lane, one after another
//! in merge order, each from the verified result of the ones before it. A lane is made of
//! implicit dependencies that do not fail: an earlier task that failed is passed over, and the
//! next starts from the last good point (see `Schedule` and `task::wait_for_dependencies`).

use git2::{Oid, Repository};

use super::shared::Shared;
use crate::event::EventKind;
use crate::plan::overlap::{overlap_groups, OverlapGroup};
use crate::plan::PlannedTask;
use crate::taskfile::OverlapChoice;

/// The groups of overlapping tasks, each said at the start of the run (an `overlap` event).
pub(super) fn announce(
    tasks: &[PlannedTask],
    choice: OverlapChoice,
    events: &super::events::Events,
) -> Vec<OverlapGroup> {
    let paths: Vec<&[String]> = tasks.iter().map(|t| t.spec.paths.as_slice()).collect();
    let groups = overlap_groups(&paths);
    for g in &groups {
        events.emit(EventKind::Overlap {
            tasks: g.tasks.iter().map(|&i| tasks[i].id().to_string()).collect(),
            paths: g.paths.clone(),
            serialized: choice == OverlapChoice::Serialize,
        });
    }
    groups
}

/// Each lane's tasks in merge order (integration order, dependencies first), so a task's
/// commit is integrated after the ones it started from. None under `overlap: parallel`.
pub(super) fn lanes(shared: &Shared) -> Vec<Vec<usize>> {
    if shared.overlap != OverlapChoice::Serialize || shared.overlap_groups.is_empty() {
        return Vec::new();
    }
    let order = super::merge_order::merge_order(shared);
    let mut position = vec![0; shared.tasks.len()];
    for (p, &i) in order.iter().enumerate() {
        position[i] = p;
    }
    shared
        .overlap_groups
        .iter()
        .map(|g| {
            let mut lane = g.tasks.clone();
            lane.sort_by_key(|&i| position[i]);
            lane
        })
        .collect()
}

/// Where a task whose dependencies (or lane) produced `commits` starts, when no merge is
/// needed: the one commit that descends from all the others (and from `base`), e.g. the last
/// good task of its lane, which started from the ones before it. Its branch then continues
/// theirs. `None`: the commits must be merged onto the base.
pub(crate) fn descendant_of_all(repo: &Repository, base: Oid, commits: &[Oid]) -> Option<Oid> {
    let descends = |a: Oid, b: Oid| a == b || repo.graph_descendant_of(a, b).unwrap_or(false);
    commits
        .iter()
        .copied()
        .find(|&c| descends(c, base) && commits.iter().all(|&o| descends(c, o)))
}
