//! Applying verified task commits onto the integration head, one task or one whole group
//! (`group` in the task file: all its tasks land, or none) at a time.

use std::collections::{BTreeMap, BTreeSet};

use git2::{Oid, Repository};

use super::groups;
use super::merge_message::merge_message;
use super::merge_order::merge_order;
use super::shared::{Pending, RunError, Shared};
use crate::event::EventKind;
use crate::git::merge::{Applied, Integrator};
use crate::git::GitError;
use crate::ids::TaskId;
use crate::report::{TaskReport, TaskStatus};

/// What integration produced so far: the head and the tasks on it, in merge order.
pub(crate) struct Integration {
    pub head: Oid,
    /// (task index, the task's verified commit), in the order they were merged.
    pub merged: Vec<(usize, Oid)>,
}

/// The integration's new objects are kept in memory and written as a pack at most every this
/// many merges or (estimated) bytes: few files on disk, bounded memory.
const FLUSH_MERGES: usize = 256;
const FLUSH_BYTES: usize = 4 << 20;

/// What [`apply_each`] goes through: the tasks' outcomes, in this order, unless interrupted.
pub(crate) struct Queue<'a> {
    pub pendings: &'a [Pending],
    pub interrupted: bool,
    pub order: &'a [usize],
}

/// The moving state of one pass of integration.
struct Applier<'a, 'r> {
    shared: &'a Shared,
    queue: &'a Queue<'a>,
    repo: &'r Repository,
    integ: Integrator<'r>,
    odb: git2::Odb<'r>,
    flush: &'a mut dyn FnMut(Oid) -> Result<(), GitError>,
    /// Bytes of new trees held in memory since the last flush (estimated by the size of each
    /// new head's root tree) and merges since then: either bound triggers a flush.
    held: usize,
    merges: usize,
    /// Tasks merged (or with nothing to merge): what dependencies are checked against.
    merged: BTreeSet<TaskId>,
}

/// Applies the tasks of `queue` in its order: a task alone, a group at its last member.
pub(crate) fn apply_each(
    shared: &Shared,
    reports: &mut [TaskReport],
    queue: &Queue<'_>,
    integration: &mut Integration,
    repo: &Repository,
    flush: &mut dyn FnMut(Oid) -> Result<(), GitError>,
) -> Result<(), RunError> {
    let odb = repo.odb().map_err(|source| GitError::Op {
        what: "cannot open the object store".into(),
        source,
    })?;
    let merged = shared
        .tasks
        .iter()
        .zip(reports.iter())
        .filter(|(_, r)| matches!(r.status, TaskStatus::Merged | TaskStatus::NoChanges))
        .map(|(t, _)| t.id().clone())
        .collect();
    let mut a = Applier {
        shared,
        queue,
        repo,
        integ: Integrator::new(repo, integration.head).with_rules(&shared.merge_rules),
        odb,
        flush,
        held: 0,
        merges: 0,
        merged,
    };
    let has_groups = shared.tasks.iter().any(|t| t.spec.group.is_some());
    let all = if has_groups {
        merge_order(shared)
    } else {
        Vec::new()
    };
    // A group's tasks (all of them, in merge order), and its last task in this queue: where it
    // is integrated.
    let members = groups::by_group(shared, &all);
    let last: BTreeMap<&str, usize> = groups::by_group(shared, queue.order)
        .into_iter()
        .filter_map(|(g, m)| Some((g, *m.last()?)))
        .collect();
    for &i in queue.order {
        match groups::group_of(shared, i) {
            Some(g) if last.get(g) == Some(&i) => {
                let tasks = members.get(g).map_or(&[][..], Vec::as_slice);
                a.apply_group(reports, integration, g, tasks)?;
            }
            Some(_) => {}
            None => a.apply_one(reports, integration, i)?,
        }
    }
    integration.head = a.integ.head();
    Ok(())
}

impl Applier<'_, '_> {
    /// One task: merged, or in conflict.
    fn apply_one(
        &mut self,
        reports: &mut [TaskReport],
        integration: &mut Integration,
        i: usize,
    ) -> Result<(), RunError> {
        let (shared, task) = (self.shared, &self.shared.tasks[i]);
        let Pending::Ready(commit) = self.queue.pendings[i] else {
            if reports[i].status == TaskStatus::NoChanges {
                self.merged.insert(task.id().clone());
            }
            return Ok(());
        };
        let merged = |d: &TaskId| self.merged.contains(d);
        if held_back(shared, self.queue, task, &mut reports[i], &merged) {
            return Ok(());
        }
        test_hooks::before_merge();
        match self.integ.apply(commit, &merge_message(shared, i))? {
            Applied::Merged(head) => self.record_merged(reports, integration, (i, commit), head)?,
            Applied::Conflict(paths) => {
                let report = &mut reports[i];
                report.status = TaskStatus::Conflict;
                report.error = Some(format!(
                    "conflicts with changes merged before it in: {}",
                    paths.join(", ")
                ));
                report.conflict_paths = paths;
                announce(shared, task.id(), report, self.integ.head());
            }
        }
        Ok(())
    }

    /// Task `i` (with its commit) is on the integration at `head`.
    fn record_merged(
        &mut self,
        reports: &mut [TaskReport],
        integration: &mut Integration,
        (i, commit): (usize, Oid),
        head: Oid,
    ) -> Result<(), RunError> {
        let report = &mut reports[i];
        report.status = TaskStatus::Merged;
        report.error = None;
        report.conflict_paths.clear();
        self.merged.insert(self.shared.tasks[i].id().clone());
        integration.merged.push((i, commit));
        self.merges += 1;
        self.held += self
            .repo
            .find_commit(head)
            .and_then(|c| self.odb.read_header(c.tree_id()))
            .map_or(0, |(size, _)| size);
        if self.held >= FLUSH_BYTES || self.merges >= FLUSH_MERGES {
            (self.flush)(self.integ.head())?;
            (self.held, self.merges) = (0, 0);
            // The pack's and the merges' freed memory goes back, as the tasks' does.
            super::memory::trim();
        }
        announce(self.shared, self.shared.tasks[i].id(), report, head);
        Ok(())
    }

    /// A whole group, its `members` in merge order: all land, or none.
    fn apply_group(
        &mut self,
        reports: &mut [TaskReport],
        integration: &mut Integration,
        group: &str,
        members: &[usize],
    ) -> Result<(), RunError> {
        let mut held = Vec::new();
        if let Some((m, why)) = self.blocker(reports, members, &mut held) {
            let reason = format!(
                "its group {group} lands whole or not at all, and {} {why}",
                self.shared.tasks[m].id()
            );
            held.push(m);
            hold_group(self.shared, reports, self.queue, members, &held, &reason);
            return Ok(());
        }
        let start = self.integ.head();
        let mut landed = Vec::new();
        for &m in members {
            let Pending::Ready(commit) = self.queue.pendings[m] else {
                continue;
            };
            test_hooks::before_merge();
            match self.integ.apply(commit, &merge_message(self.shared, m))? {
                Applied::Merged(head) => landed.push(((m, commit), head)),
                Applied::Conflict(paths) => {
                    // Nothing of the group stays: back to where it started.
                    self.integ.reset(start);
                    let report = &mut reports[m];
                    report.status = TaskStatus::Conflict;
                    report.error = Some(format!(
                        "conflicts with changes merged before it in: {} (its group {group} lands whole or not at all)",
                        paths.join(", ")
                    ));
                    report.conflict_paths = paths;
                    announce(self.shared, self.shared.tasks[m].id(), report, start);
                    let reason = format!(
                        "its group {group} lands whole or not at all, and {} conflicted",
                        self.shared.tasks[m].id()
                    );
                    hold_group(self.shared, reports, self.queue, members, &[m], &reason);
                    return Ok(());
                }
            }
        }
        for (item, head) in landed {
            self.record_merged(reports, integration, item, head)?;
        }
        Ok(())
    }

    /// The first member that keeps the group from landing, and what became of it: it did not
    /// finish verified (failed, timed out, …), or it is held back (a dependency not merged,
    /// the run interrupted).
    /// Members held back (with their own reason) are added to `held`.
    fn blocker(
        &self,
        reports: &mut [TaskReport],
        members: &[usize],
        held: &mut Vec<usize>,
    ) -> Option<(usize, String)> {
        let mut found = None;
        // A dependency on a task of the group is met: they land together, in order.
        let merged = |d: &TaskId| {
            self.merged.contains(d) || members.iter().any(|&m| self.shared.tasks[m].id() == d)
        };
        for &m in members {
            let report = &mut reports[m];
            let task = &self.shared.tasks[m];
            let blocked = match self.queue.pendings[m] {
                Pending::Ready(_) if held_back(self.shared, self.queue, task, report, &merged) => {
                    held.push(m);
                    true
                }
                Pending::Ready(_) => false,
                Pending::Done => {
                    !matches!(report.status, TaskStatus::NoChanges | TaskStatus::Merged)
                }
            };
            if blocked && found.is_none() {
                let what = report
                    .error
                    .as_deref()
                    .map(|e| format!(": {}", first_line(e)))
                    .unwrap_or_default();
                found = Some((m, format!("ended {}{what}", report.status.as_str())));
            }
        }
        found
    }
}

/// The other verified members of a group that does not land end `skipped`, saying why;
/// those in `keep` (the culprit, members held back for a reason of their own) keep theirs.
fn hold_group(
    shared: &Shared,
    reports: &mut [TaskReport],
    queue: &Queue<'_>,
    members: &[usize],
    keep: &[usize],
    reason: &str,
) {
    for &m in members {
        let verified = matches!(queue.pendings[m], Pending::Ready(_));
        if keep.contains(&m) || !verified {
            continue;
        }
        let report = &mut reports[m];
        report.status = TaskStatus::Skipped;
        report.error = Some(reason.to_string());
        report.conflict_paths.clear();
        shared
            .events
            .warn(Some(shared.tasks[m].id().as_str()), reason);
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Whether a verified task stays out of the integration now, its report saying why: a
/// dependency was not merged, or the run was interrupted.
fn held_back(
    shared: &Shared,
    queue: &Queue<'_>,
    task: &crate::plan::PlannedTask,
    report: &mut TaskReport,
    merged: &dyn Fn(&TaskId) -> bool,
) -> bool {
    if let Some(dep) = task.spec.depends_on.iter().find(|d| !merged(d)) {
        report.status = TaskStatus::Skipped;
        report.error = Some(format!("dependency {dep} was not merged"));
        return true;
    }
    // A stop request is honoured between two commits; the rest stay verified for resume.
    if queue.interrupted || *shared.cancel.borrow() {
        // Verified work is kept on its branch, but an interrupted run integrates nothing new.
        report.status = TaskStatus::Failed;
        report.error = Some(
            "the run was interrupted before integration; the verified commit is on the task branch"
                .into(),
        );
        return true;
    }
    false
}

/// Tells what became of a task's commit: merged (at `head`), or in conflict.
fn announce(shared: &Shared, id: &TaskId, report: &TaskReport, head: Oid) {
    match report.status {
        TaskStatus::Merged => shared.events.emit(EventKind::Merged {
            task: id.to_string(),
            commit: head.to_string(),
        }),
        _ => shared.events.emit(EventKind::Conflict {
            task: id.to_string(),
            paths: report.conflict_paths.clone(),
        }),
    }
}

/// Test-only hooks, compiled in with the `test-hooks` feature (never in a release build).
mod test_hooks {
    /// `FANOUT_TEST_MERGE_DELAY_MS`: sleep before each merged commit, so tests can signal a
    /// run while it integrates.
    #[cfg(feature = "test-hooks")]
    pub(super) fn before_merge() {
        if let Some(ms) = std::env::var("FANOUT_TEST_MERGE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    pub(super) fn before_merge() {}
}
