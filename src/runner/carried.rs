//! The outcome of a task a continued run (`fanout resume`, `fanout retry`) carried over from the
//! run's earlier attempt.

use std::sync::Arc;

use super::outcome::DepResult;
use super::shared::{Pending, Shared};
use super::steps::blocking;
use crate::git::collect::{self};
use crate::ids::task_branch;
use crate::report::{TaskReport, TaskStatus};

/// The task's report from the run's earlier attempt when it tells of this outcome (same
/// commit, same status): its attempts, gates and durations stay in the new report.
fn earlier_report(shared: &Shared, id: &str, prior: &crate::state::Prior) -> Option<TaskReport> {
    let old = shared.earlier_reports.get(id)?;
    let same = match prior {
        crate::state::Prior::Verified(commit) => {
            old.commit.as_deref() == Some(commit.to_string().as_str())
        }
        crate::state::Prior::Ended { status, commit, .. } => {
            old.status == *status && old.commit == *commit
        }
    };
    same.then(|| old.clone())
}

/// The report and pending state of a task whose outcome `fanout resume` carried over.
pub(crate) async fn carried_over(
    shared: &Arc<Shared>,
    index: usize,
    prior: crate::state::Prior,
) -> (TaskReport, Pending, DepResult) {
    let task = &shared.tasks[index];
    let mut report = earlier_report(shared, task.id().as_str(), &prior)
        .unwrap_or_else(|| TaskReport::new(task.id().as_str(), &task.agent_name));
    report.error = Some("carried over from before the interruption".into());
    let patch = crate::run_dir::RunDir::new(&shared.run_dir)
        .task(task.id().as_str())
        .patch;
    if patch.exists() {
        report.patch = Some(patch.display().to_string());
    }
    match prior {
        crate::state::Prior::Verified(commit) => {
            let repo_path = shared.repo_path.clone();
            let summary = blocking(move || {
                let repo = git2::Repository::open(&repo_path).map_err(|e| e.to_string())?;
                let c = repo.find_commit(commit).map_err(|e| e.to_string())?;
                let parent = c.parent(0).map_err(|e| e.to_string())?;
                collect::summarize(&repo, parent.tree_id(), c.tree_id())
                    .map(|(summary, _)| (summary, parent.id()))
                    .map_err(|e| crate::error_chain(&e))
            })
            .await;
            match summary {
                Ok((summary, parent)) => {
                    report.files = summary.files;
                    report.changes = summary.changes;
                    report.insertions = summary.insertions;
                    report.deletions = summary.deletions;
                    report.started_from = Some(parent.to_string());
                    report.commit = Some(commit.to_string());
                    report.branch = Some(task_branch(&shared.run_id, task.id()));
                    report.error = None;
                    let dep = DepResult {
                        commit: Some(commit),
                        ok: true,
                        status: TaskStatus::Merged,
                    };
                    (report, Pending::Ready(commit), dep)
                }
                Err(e) => {
                    report.status = TaskStatus::Failed;
                    report.error = Some(format!("its verified commit {commit} is gone: {e}"));
                    let dep = DepResult {
                        commit: None,
                        ok: false,
                        status: TaskStatus::Failed,
                    };
                    (report, Pending::Done, dep)
                }
            }
        }
        crate::state::Prior::Ended {
            status,
            commit,
            error,
        } => {
            report.status = status;
            report.branch = commit
                .as_ref()
                .map(|_| task_branch(&shared.run_id, task.id()));
            report.commit = commit;
            report.error = error;
            let dep = DepResult {
                commit: None,
                ok: status == TaskStatus::NoChanges,
                status,
            };
            (report, Pending::Done, dep)
        }
    }
}
