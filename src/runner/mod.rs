/*!
The runner: executes a [`Plan`] — one pipeline per task, at most `--jobs` agents at once,
dependencies respected — then integrates the verified task commits in task-file order onto
`fanout/<run>/merged`, writes the report, and cleans up.

The runner owns the tokio runtime; git work runs in `spawn_blocking` with a repository opened
inside each job (git2 repositories are not `Sync`). Failures of single tasks are data in the
report; only a broken environment stops the run.
*/

pub mod events;
mod gate;
mod integrate;
mod retry;
mod schedule;
pub mod stop;
mod task;
mod workspace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{watch, Semaphore};

use crate::ids::{merged_branch, RunId};
use crate::plan::{Plan, PlannedTask, RunOptions};
use crate::report::{RunReport, SandboxSummary, TaskReport, TaskStatus};
use crate::state::{RunState, StateFile};

pub use events::Events;
pub use stop::Stop;

use crate::event::{EventKind, Output, Reporter};
use schedule::Schedule;
pub use workspace::collect_kept;

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
    pub(crate) stop: stop::Stop,
    pub verifier: Option<Arc<tokio::sync::Mutex<crate::verify::readback::Verifier>>>,
    /// Outcomes carried over by `fanout resume`.
    pub priors: BTreeMap<String, crate::state::Prior>,
    pub readback_skip: Option<String>,
    /// The task file's integration gate.
    pub integrate: Option<crate::plan::IntegrateGate>,
    /// What a conflicting task does.
    pub on_conflict: crate::taskfile::OnConflict,
    /// The kind of task workspace, and the overlay's shared lower checkouts.
    pub(crate) workspaces: workspace::Workspaces,
}

/// The outcome of a task before integration.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    /// Verified and committed; waits for integration.
    Ready(git2::Oid),
    /// Finished without integration (no changes, failed, timed out, verify failed, skipped).
    Done,
}

/// How a run reports and how it can be stopped.
pub struct RunIo {
    /// Outputs of the event stream besides the run's own files (terminal, `--json`, JUnit,
    /// HTML, an MCP client's progress).
    pub outputs: Vec<Box<dyn Output>>,
    /// Stop handle: signals pull it, and so may the caller (`Stop::request`).
    pub stop: Stop,
    /// Listen for SIGINT, SIGTERM and SIGHUP (the CLI); a server embedding runs does not.
    pub signals: bool,
    /// `resume` or `run`, for the first event.
    pub mode: &'static str,
}

impl RunIo {
    pub fn cli(outputs: Vec<Box<dyn Output>>, mode: &'static str) -> RunIo {
        RunIo {
            outputs,
            stop: Stop::new(),
            signals: true,
            mode,
        }
    }
}

/// Runs the plan to the end. Returns the report even when tasks failed.
pub fn execute(mut plan: Plan, io: RunIo) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let run_dir = plan.run_dir.clone();
    // Before anything is created: a read-only object store or a full disk would otherwise
    // show only after every agent ran.
    crate::preflight::check(&plan.repo.common_dir, plan.options.min_free_mb)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let (events, events_rx) = Events::channel();
    let stop = io.stop.clone();
    // One listener for the whole run; the runtime lives until the final state is written.
    if io.signals {
        stop.listen(&runtime, events.clone());
    }
    // However the run ends (even by an error), no supervisor — so no agent — outlives it.
    let _reap = StopAllOnDrop(run_dir.clone());
    // Before the run folder exists: `--readback require` without a verifier creates nothing.
    // Its warning is said after the run's first event.
    let mut early_warnings: Vec<String> = Vec::new();
    let (verifier, readback_skip) = runtime
        .block_on(crate::verify::readback::start_for_run(&plan, |w| {
            early_warnings.push(w.to_string())
        }))
        .map_err(|e| RunError::Verifier(e.to_string()))?;
    crate::sandbox::user::prepare_run_workspace(
        &run_dir,
        plan.run_id.as_str(),
        plan.options.sandbox.run_as,
    )
    .map_err(|e| match e {
        crate::sandbox::user::UserError::Workspace { path, source } => RunError::RunDir {
            path: path.display().to_string(),
            source,
        },
        other => RunError::RunDir {
            path: run_dir.display().to_string(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    let workspaces =
        workspace::Workspaces::decide(&plan.options, &run_dir).map_err(RunError::Workspace)?;
    for sub in ["events", "logs", "patches", "status"] {
        let p = run_dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|source| RunError::RunDir {
            path: p.display().to_string(),
            source,
        })?;
    }
    if plan.priors.is_empty() {
        crate::resume::save_inputs(&plan, &plan.task_file_text).map_err(|source| {
            RunError::RunDir {
                path: run_dir.join("inputs").display().to_string(),
                source,
            }
        })?;
    }
    let mut state = StateFile::new(run_dir.join("state.json"));
    let ids: Vec<String> = plan.tasks.iter().map(|t| t.id().to_string()).collect();
    let run_state = RunState::start(&plan.run_id, plan.base, &ids, &plan.priors);
    state.write(&run_state);
    // The one dispatcher: every event of the run goes through it to every output.
    let mut reporter = Reporter::new();
    reporter.add(Box::new(events::StateOutput::new(state, run_state)));
    reporter.add(Box::new(events::RunFilesOutput::new(
        &run_dir,
        plan.options.report.clone(),
    )));
    for o in io.outputs {
        reporter.add(o);
    }
    let dispatcher = runtime.spawn(events::dispatch(
        plan.run_id.to_string(),
        events_rx,
        reporter,
        stop.clone(),
    ));

    let kernel_abi = crate::sandbox::kernel_abi();
    let mut warnings = Vec::new();
    let unconfined = (!plan.options.sandbox.enabled).then(|| {
        "agents run UNCONFINED (--sandbox off): they can write anywhere this user can".to_string()
    });
    if let Some(w) = &unconfined {
        early_warnings.push(w.clone());
        warnings.push(w.clone());
    }
    let sandbox_summary = SandboxSummary {
        mode: if unconfined.is_some() {
            "off"
        } else {
            "landlock"
        }
        .into(),
        kernel_abi,
        warning: unconfined,
        root: crate::sandbox::user::is_root(),
        agent_user: plan
            .options
            .sandbox
            .run_as
            .map(crate::sandbox::user::describe),
    };

    if let Ok(repo) = git2::Repository::open(&plan.repo.workdir) {
        let drivers = crate::git::repo::filter_drivers(&repo, plan.base);
        if !drivers.is_empty() {
            let w = format!(
                "the repository's attributes name filter drivers fanout does not run: {}; a task that changes such a path fails unless --allow-unfiltered{}",
                drivers.join("; "),
                if plan.options.allow_unfiltered { " (given: raw content is committed)" } else { "" }
            );
            early_warnings.push(w.clone());
            warnings.push(w);
        }
    }

    for w in &plan.warnings {
        early_warnings.push(w.clone());
        warnings.push(w.clone());
    }

    events.emit(EventKind::RunStarted {
        mode: io.mode.into(),
        repo: plan.repo.workdir.display().to_string(),
        base: plan.base.to_string(),
        base_rev: plan.base_rev.clone(),
        jobs: plan.options.jobs,
        tasks: plan.tasks.iter().map(|t| t.id().to_string()).collect(),
        agents: {
            let mut a: Vec<String> = plan.tasks.iter().map(|t| t.agent_name.clone()).collect();
            a.sort();
            a.dedup();
            a
        },
        sandbox: Box::new(sandbox_summary.clone()),
        workspace: Box::new(workspaces.summary.clone()),
    });
    for w in &early_warnings {
        events.warn(None, w);
    }
    for t in &plan.tasks {
        events.emit(EventKind::TaskQueued {
            task: t.id().to_string(),
            agent: t.agent_name.clone(),
        });
    }
    // Moved, not copied: with 10 000 tasks every copy of the plan's tasks counts.
    let plan_tasks = std::mem::take(&mut plan.tasks);
    plan.task_file_text = String::new();
    if let Some(why) = &readback_skip {
        if plan.options.readback != crate::plan::ReadbackMode::Off {
            warnings.push(format!("read-back skipped: {why}"));
        }
    }
    let shared = Arc::new(Shared {
        run_started: started,
        run_id: plan.run_id.clone(),
        repo_path: plan.repo.workdir.clone(),
        common_dir: plan.repo.common_dir.clone(),
        workdir: plan.repo.workdir.clone(),
        base: plan.base,
        run_dir: run_dir.clone(),
        options: plan.options.clone(),
        tasks: plan_tasks,
        events: events.clone(),
        cancel: stop.cancel_rx(),
        stop: stop.clone(),
        verifier: verifier.map(|v| Arc::new(tokio::sync::Mutex::new(v))),
        readback_skip,
        priors: std::mem::take(&mut plan.priors),
        integrate: plan.integrate.clone(),
        on_conflict: plan.on_conflict,
        workspaces,
    });

    let (reports, pendings) = runtime.block_on(run_all(shared.clone()));

    // Stop the verifier before integration; its process must not outlive the run.
    let verifier_summary = shared.verifier.clone().map(|v| {
        runtime.block_on(async move {
            let mut v = v.lock().await;
            v.shutdown().await;
            v.summary()
        })
    });
    // Cancelled pipelines left their supervisors stopping their trees: wait for them, so no
    // agent runs during integration and none outlives the run.
    crate::process::stop_under(&run_dir, crate::agent::STOP_GRACE);

    let mut reports = reports;
    let ready = pendings
        .iter()
        .filter(|p| matches!(p, Pending::Ready(_)))
        .count();
    events.emit(EventKind::IntegrationStarted { ready });
    let mut pendings = pendings;
    let mut integration = integrate::integrate(&shared, &mut reports, &pendings, stop.requested())?;
    // `--on-conflict retry`: conflicting tasks run again from the integration head and are
    // integrated at the end of the queue.
    let retries = shared.on_conflict.retries();
    for round in 1..=retries {
        let conflicted: Vec<usize> = (0..reports.len())
            .filter(|&i| reports[i].status == TaskStatus::Conflict)
            .collect();
        if conflicted.is_empty() || stop.requested() {
            break;
        }
        let mut reruns = Vec::new();
        for &i in &conflicted {
            let paths = reports[i].conflict_paths.clone();
            events.emit(EventKind::ConflictRetry {
                task: reports[i].id.clone(),
                round,
                paths: paths.clone(),
            });
            let feedback = conflict_feedback(&paths, round, retries);
            reruns.push((
                i,
                task::Rerun {
                    start: integration.head,
                    feedback,
                },
            ));
        }
        let results = runtime.block_on(rerun_all(shared.clone(), reruns));
        crate::process::stop_under(&run_dir, crate::agent::STOP_GRACE);
        for (i, report, pending) in results {
            reports[i] = report;
            pendings[i] = pending;
        }
        integrate::apply_ready(
            &shared,
            &mut reports,
            &pendings,
            stop.requested(),
            &conflicted,
            &mut integration,
        )?;
    }
    let integration_report = match &shared.integrate {
        Some(g) if !stop.requested() => Some(gate::run(
            &shared,
            g,
            runtime.handle(),
            &mut reports,
            &mut integration,
        )),
        _ => None,
    };
    let integration = integrate::hand_over(&shared, &integration)?;
    if !stop.now() {
        integrate::cleanup(&shared, &mut reports);
    }
    // A stop asked for at any point up to here leaves a resumable, interrupted run.
    let interrupted = stop.requested();

    let mut counts = BTreeMap::new();
    for t in &reports {
        *counts.entry(t.status.as_str().to_string()).or_insert(0) += 1;
    }
    let report = RunReport {
        schema_version: 1,
        run_id: plan.run_id.to_string(),
        repo: plan.repo.workdir.display().to_string(),
        base: plan.base.to_string(),
        base_rev: plan.base_rev.clone(),
        integration_branch: merged_branch(&plan.run_id),
        integration_commit: integration.to_string(),
        run_dir: run_dir.display().to_string(),
        interrupted,
        interrupted_by: stop.reason(),
        sandbox: sandbox_summary,
        workspace: Some(shared.workspaces.summary.clone()),
        verifier: verifier_summary,
        duration_ms: started.elapsed().as_millis() as u64,
        counts,
        tasks: reports,
        warnings,
        output_failures: Vec::new(),
        integration: integration_report,
    };
    // The last event: report.json, state.json and every output's final word come from it.
    events.emit(EventKind::RunEnded {
        report: Box::new(report.clone()),
    });
    drop(events);
    drop(shared);
    let failures = runtime.block_on(dispatcher).unwrap_or_default();
    let mut report = report;
    report.output_failures = failures.iter().map(|f| f.to_string()).collect();
    // Blocking work abandoned by a second signal (a checkout) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(report)
}

/// Stops the run's processes ([`crate::process::stop_under`] its folder) when dropped; other
/// runs of the same process (`fanout mcp`) keep theirs.
struct StopAllOnDrop(PathBuf);

impl Drop for StopAllOnDrop {
    fn drop(&mut self) {
        crate::process::stop_under(&self.0, crate::agent::STOP_GRACE);
    }
}

/// Runs every task pipeline; returns reports and pending results in task-file order.
///
/// Tasks are started in task-file order, each once its dependencies ended, at most `--jobs` at
/// once: only running tasks exist as futures (a pipeline's future is large, and 10 000 of them
/// up front cost hundreds of megabytes). A task's slot is freed only after its workspace was
/// removed, so at most `--jobs` workspaces exist besides kept ones.
async fn run_all(shared: Arc<Shared>) -> (Vec<TaskReport>, Vec<Pending>) {
    let n = shared.tasks.len();
    let jobs = shared.options.jobs.max(1);
    let mut sched = Schedule::new(&shared.tasks);
    // The pipeline takes a permit; the scheduler already keeps it uncontended.
    let limiter = Arc::new(Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    // Running tasks by tokio id: (task index, job slot).
    let mut running: BTreeMap<tokio::task::Id, (usize, usize)> = BTreeMap::new();
    let mut free_slots: std::collections::BTreeSet<usize> = (0..jobs).collect();

    let mut reports: Vec<Option<TaskReport>> = (0..n).map(|_| None).collect();
    let mut pendings: Vec<Pending> = (0..n).map(|_| Pending::Done).collect();
    let mut now = shared.stop.now_rx();
    let mut aborted = false;
    loop {
        // After a second signal nothing new starts; after a first, tasks still start and end
        // at once as interrupted, so each gets its resumable state.
        while running.len() < jobs && !aborted {
            let Some(i) = sched.next_ready() else { break };
            let Some(slot) = free_slots.pop_first() else {
                break;
            };
            let deps = sched.dep_receivers(&shared.tasks[i]);
            let shared2 = shared.clone();
            let limiter = limiter.clone();
            shared.events.emit(EventKind::TaskStarted {
                task: shared.tasks[i].id().to_string(),
                slot,
            });
            let handle = set.spawn(async move {
                let shared = shared2;
                let (report, pending, dep) = match shared.priors.get(shared.tasks[i].id().as_str())
                {
                    Some(prior) => task::carried_over(&shared, i, prior.clone()).await,
                    None => task::run(shared.clone(), i, deps, limiter, None).await,
                };
                if !integrate::keeps_workspace(shared.options.keep_worktrees, &report) {
                    let (s, id) = (shared.clone(), shared.tasks[i].id().clone());
                    let removed =
                        task::blocking(move || integrate::remove_workspace_files(&s, &id)).await;
                    if let Err(e) = removed {
                        shared.events.warn(Some(&report.id), &e);
                    }
                }
                (i, report, pending, dep)
            });
            running.insert(handle.id(), (i, slot));
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = set.join_next_with_id() => {
                let Some(joined) = joined else { break };
                match joined {
                    Ok((tid, (i, report, pending, dep))) => {
                        if let Some((_, slot)) = running.remove(&tid) {
                            free_slots.insert(slot);
                        }
                        sched.finished(i, dep);
                        let ready = matches!(pending, Pending::Ready(_));
                        let resume_state = crate::state::state_status(
                            report.status,
                            ready,
                            *shared.cancel.borrow(),
                        );
                        let mut ended = report.clone();
                        if ready {
                            ended.commit = pending_commit(&pending).or(ended.commit);
                        }
                        shared.events.emit(EventKind::TaskEnded {
                            task: report.id.clone(),
                            report: Box::new(ended),
                            resume_state: resume_state.to_string(),
                        });
                        reports[i] = Some(report);
                        pendings[i] = pending;
                    }
                    Err(e) => {
                        if !e.is_cancelled() {
                            shared.events.warn(None, &format!("a task pipeline panicked: {e}"));
                        }
                        if let Some((i, slot)) = running.remove(&e.id()) {
                            free_slots.insert(slot);
                            sched.finished(i, task::DepResult { commit: None, ok: false, status: TaskStatus::Failed });
                        }
                    }
                }
            }
            _ = now.wait_for(|n| *n), if !aborted => {
                // Dropping the pipelines drops their processes: each supervisor gets SIGTERM
                // and stops its tree; `stop_all` waits for them.
                aborted = true;
                set.abort_all();
            }
        }
    }
    let reports = reports
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
    (reports, pendings)
}

/// What a task run again after a conflict is told.
fn conflict_feedback(paths: &[String], round: u32, rounds: u32) -> String {
    format!(
        "fanout could not merge your change (retry {round} of {rounds}): it conflicts with changes other tasks made before it, in: {}.\n\
         Your workspace now starts from the current integration, which holds those changes. Make the task's change again on top of it, keeping their changes, and finish.",
        paths.join(", ")
    )
}

/// Runs conflicting tasks again (at most `--jobs` at once), each from its [`task::Rerun`].
async fn rerun_all(
    shared: Arc<Shared>,
    reruns: Vec<(usize, task::Rerun)>,
) -> Vec<(usize, TaskReport, Pending)> {
    let jobs = shared.options.jobs.max(1);
    let limiter = Arc::new(Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    for (slot, (i, rerun)) in reruns.into_iter().enumerate() {
        let (shared, limiter) = (shared.clone(), limiter.clone());
        set.spawn(async move {
            shared.events.emit(EventKind::TaskStarted {
                task: shared.tasks[i].id().to_string(),
                slot: slot % jobs,
            });
            let (report, pending, _) =
                task::run(shared.clone(), i, Vec::new(), limiter, Some(rerun)).await;
            if !integrate::keeps_workspace(shared.options.keep_worktrees, &report) {
                let (s, id) = (shared.clone(), shared.tasks[i].id().clone());
                let removed =
                    task::blocking(move || integrate::remove_workspace_files(&s, &id)).await;
                if let Err(e) = removed {
                    shared.events.warn(Some(&report.id), &e);
                }
            }
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

fn pending_commit(p: &Pending) -> Option<String> {
    match p {
        Pending::Ready(oid) => Some(oid.to_string()),
        Pending::Done => None,
    }
}
