//! Running the task pipelines: in task-file order, at most `--jobs` at once, each task's
//! start and end sent to the event stream; and running conflicting tasks again.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::schedule::Schedule;
use super::shared::{Pending, Shared};
use super::{carried, integrate, outcome, steps, task};
use crate::event::EventKind;
use crate::report::{RoundReport, TaskReport, TaskStatus};

/// Runs every task pipeline; returns reports and pending results in task-file order.
///
/// Tasks are started in task-file order, each once its dependencies ended, at most `--jobs` at
/// once: only running tasks exist as futures (a pipeline's future is large, and 10 000 of them
/// up front cost hundreds of megabytes). A task's slot is freed only after its workspace was
/// removed, so at most `--jobs` workspaces exist besides kept ones.
pub(super) async fn run_all(shared: Arc<Shared>) -> (Vec<TaskReport>, Vec<Pending>) {
    let mut run = Pipelines::new(shared.clone());
    let mut now = shared.stop.now_rx();
    let mut aborted = false;
    loop {
        // After a second signal nothing new starts; after a first, tasks still start and end
        // at once as interrupted, so each gets its resumable state.
        if !aborted {
            run.start_ready();
        }
        if run.running.is_empty() {
            break;
        }
        tokio::select! {
            joined = run.set.join_next_with_id() => {
                let Some(joined) = joined else { break };
                run.joined(joined);
            }
            _ = now.wait_for(|n| *n), if !aborted => {
                // Dropping the pipelines drops their processes: each supervisor gets SIGTERM
                // and stops its tree; `stop_all` waits for them.
                aborted = true;
                run.set.abort_all();
            }
        }
    }
    run.into_results()
}

/// What one pipeline gives back: its task's index, report, pending integration and what its
/// dependents learn.
type Ended = (usize, TaskReport, Pending, outcome::DepResult);

/// The pipelines of a run: which run in which job slot, and what the ended ones gave.
struct Pipelines {
    shared: Arc<Shared>,
    jobs: usize,
    sched: Schedule,
    /// The pipeline takes a permit; the scheduler already keeps it uncontended.
    limiter: Arc<Semaphore>,
    set: tokio::task::JoinSet<Ended>,
    /// Running tasks by tokio id: (task index, job slot).
    running: BTreeMap<tokio::task::Id, (usize, usize)>,
    free_slots: std::collections::BTreeSet<usize>,
    reports: Vec<Option<TaskReport>>,
    pendings: Vec<Pending>,
    /// When each task got its slot (ms since the Unix epoch), for its report.
    started_ms: Vec<u64>,
    /// How many pipelines ended (for the periodic trim).
    ended: usize,
}

impl Pipelines {
    fn new(shared: Arc<Shared>) -> Pipelines {
        let n = shared.tasks.len();
        let jobs = shared.options.jobs.max(1);
        Pipelines {
            sched: Schedule::new(&shared.tasks, &super::lanes::lanes(&shared)),
            shared,
            jobs,
            limiter: Arc::new(Semaphore::new(jobs)),
            set: tokio::task::JoinSet::new(),
            running: BTreeMap::new(),
            free_slots: (0..jobs).collect(),
            reports: (0..n).map(|_| None).collect(),
            pendings: (0..n).map(|_| Pending::Done).collect(),
            started_ms: vec![0; n],
            ended: 0,
        }
    }

    /// Starts ready tasks (task-file order, dependencies first) in free job slots.
    fn start_ready(&mut self) {
        while self.running.len() < self.jobs {
            let Some(i) = self.sched.next_ready() else {
                break;
            };
            let Some(slot) = self.free_slots.pop_first() else {
                break;
            };
            let deps = self.sched.dep_receivers(i, &self.shared.tasks);
            let (shared, limiter) = (self.shared.clone(), self.limiter.clone());
            self.shared.events.emit(EventKind::TaskStarted {
                task: self.shared.tasks[i].id().to_string(),
                slot,
                round: 1,
            });
            self.started_ms[i] = crate::event::now_ms();
            let handle = self.set.spawn(async move {
                let (report, pending, dep) = match shared.priors.get(shared.tasks[i].id().as_str())
                {
                    Some(prior) => carried::carried_over(&shared, i, prior.clone()).await,
                    None => task::run(shared.clone(), i, deps, limiter, None).await,
                };
                release_workspace(&shared, i, &report).await;
                (i, report, pending, dep)
            });
            self.running.insert(handle.id(), (i, slot));
        }
    }

    /// A pipeline ended (or panicked): its slot is free, its dependents learn, the task's end
    /// is told.
    fn joined(&mut self, joined: Result<(tokio::task::Id, Ended), tokio::task::JoinError>) {
        match joined {
            Ok((tid, (i, mut report, pending, dep))) => {
                report.started_ms = self.started_ms[i];
                if let Some((_, slot)) = self.running.remove(&tid) {
                    self.free_slots.insert(slot);
                }
                self.sched.finished(i, dep);
                self.ended += 1;
                if self.ended % super::memory::TRIM_EVERY == 0 {
                    super::memory::trim();
                }
                let ready = matches!(pending, Pending::Ready(_));
                let resume_state =
                    crate::state::state_status(report.status, ready, *self.shared.cancel.borrow());
                let mut ended = report.clone();
                if ready {
                    ended.commit = pending_commit(&pending).or(ended.commit);
                }
                self.shared.events.emit(EventKind::TaskEnded {
                    task: report.id.clone(),
                    report: Box::new(ended),
                    resume_state: resume_state.to_string(),
                });
                let mut report = report;
                report.shrink_to_fit();
                self.reports[i] = Some(report);
                self.pendings[i] = pending;
            }
            Err(e) => {
                if !e.is_cancelled() {
                    self.shared
                        .events
                        .warn(None, &format!("a task pipeline panicked: {e}"));
                }
                if let Some((i, slot)) = self.running.remove(&e.id()) {
                    self.free_slots.insert(slot);
                    self.sched.finished(
                        i,
                        outcome::DepResult {
                            commit: None,
                            ok: false,
                            status: TaskStatus::Failed,
                        },
                    );
                }
            }
        }
    }

    /// Every task's report (a pipeline that never ended: failed, saying why) and pending
    /// integration.
    fn into_results(self) -> (Vec<TaskReport>, Vec<Pending>) {
        let shared = self.shared;
        let reports = self
            .reports
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    let t = &shared.tasks[i];
                    let mut r = TaskReport::new(t.id().as_str(), &t.agent_name);
                    r.status = TaskStatus::Failed;
                    r.error = Some(if shared.stop.now() {
                        "interrupted: stopped at once by a second signal".into()
                    } else {
                        "the task pipeline stopped unexpectedly".into()
                    });
                    r
                })
            })
            .collect();
        (reports, self.pendings)
    }
}

/// What a task run again after a conflict is told.
pub(super) fn conflict_feedback(paths: &[String], round: u32, rounds: u32) -> String {
    format!(
        "fanout could not merge your change (retry {round} of {rounds}): it conflicts with changes other tasks made before it, in: {}.\n\
         Your workspace now starts from the current integration, which holds those changes. Make the task's change again on top of it, keeping their changes, and finish.",
        paths.join(", ")
    )
}

/// A conflicting task to run again: its index, where it starts from, its earlier rounds.
pub(super) type RerunOf = (usize, outcome::Rerun, Vec<RoundReport>);

/// Runs conflicting tasks again as round `round` of each (at most `--jobs` at once), each from
/// its [`outcome::Rerun`]; each report carries the task's earlier rounds.
pub(super) async fn rerun_all(
    shared: Arc<Shared>,
    round: u32,
    reruns: Vec<RerunOf>,
) -> Vec<(usize, TaskReport, Pending)> {
    let jobs = shared.options.jobs.max(1);
    let limiter = Arc::new(Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    for (slot, (i, rerun, earlier)) in reruns.into_iter().enumerate() {
        let (shared, limiter) = (shared.clone(), limiter.clone());
        set.spawn(async move {
            shared.events.emit(EventKind::TaskStarted {
                task: shared.tasks[i].id().to_string(),
                slot: slot % jobs,
                round,
            });
            let started_ms = crate::event::now_ms();
            let rerun = outcome::Rerun {
                rounds: earlier,
                ..rerun
            };
            let (mut report, pending, _) =
                task::run(shared.clone(), i, Vec::new(), limiter, Some(rerun)).await;
            report.started_ms = started_ms;
            release_workspace(&shared, i, &report).await;
            let mut ended = report.clone();
            if let Some(c) = pending_commit(&pending) {
                ended.commit = Some(c);
            }
            shared.events.emit(EventKind::TaskEnded {
                task: report.id.clone(),
                report: Box::new(ended),
                resume_state: crate::state::state_status(
                    report.status,
                    matches!(pending, Pending::Ready(_)),
                    *shared.cancel.borrow(),
                )
                .to_string(),
            });
            (i, report, pending)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => out.push(r),
            Err(e) => shared
                .events
                .warn(None, &format!("a task pipeline panicked: {e}")),
        }
    }
    out
}

pub(super) fn pending_commit(p: &Pending) -> Option<String> {
    match p {
        Pending::Ready(oid) => Some(oid.to_string()),
        Pending::Done => None,
    }
}

/// Removes a task's workspace once its pipeline ended (it frees the task's slot), unless it
/// is kept (`--keep-worktrees`, or work that could not be committed).
async fn release_workspace(shared: &Arc<Shared>, i: usize, report: &TaskReport) {
    if integrate::keeps_workspace(shared.options.keep_worktrees, report) {
        return;
    }
    let (s, id) = (shared.clone(), shared.tasks[i].id().clone());
    let keep_thread = super::threads::may_continue(shared);
    if let Err(e) =
        steps::blocking(move || integrate::remove_workspace_files(&s, id.as_str(), keep_thread))
            .await
    {
        shared.events.warn(Some(&report.id), &e);
    }
}
