/*!
The runner: executes a [`Plan`] — one pipeline per task, at most `--jobs` agents at once,
dependencies respected — then integrates the verified task commits in task-file order onto
`fanout/<run>/merged`, writes the report, and cleans up.

The runner owns the tokio runtime; git work runs in `spawn_blocking` with a repository opened
inside each job (git2 repositories are not `Sync`). Failures of single tasks are data in the
report; only a broken environment stops the run.
*/

mod integrate;
mod progress;
mod stop;
mod task;
mod workspace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch, Semaphore};

use crate::ids::{merged_branch, RunId};
use crate::plan::{Plan, PlannedTask, RunOptions};
use crate::report::{self, RunReport, SandboxSummary, TaskReport, TaskStatus};
use crate::state::{RunState, StateFile};

pub use progress::Progress;
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
    pub progress: Progress,
    pub cancel: watch::Receiver<bool>,
    pub(crate) stop: stop::Stop,
    pub verifier: Option<Arc<tokio::sync::Mutex<crate::verify::readback::Verifier>>>,
    /// Outcomes carried over by `fanout resume`.
    pub priors: BTreeMap<String, crate::resume::Prior>,
    pub readback_skip: Option<String>,
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

/// Runs the plan to the end. Returns the report even when tasks failed.
pub fn execute(mut plan: Plan, progress: Progress) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let run_dir = plan.run_dir.clone();
    // Before anything is created: a read-only object store or a full disk would otherwise
    // show only after every agent ran.
    crate::preflight::check(&plan.repo.common_dir, plan.options.min_free_mb)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    // One listener for the whole run; the runtime lives until the final state is written.
    let stop = stop::Stop::install(&runtime, progress.clone());
    // However the run ends (even by an error), no supervisor — so no agent — outlives it.
    let _reap = StopAllOnDrop;
    let (started_tx, started_rx) = mpsc::unbounded_channel();
    let progress = progress.with_started(started_tx);
    // Before the run folder exists: `--readback require` without a verifier creates nothing.
    let (verifier, readback_skip) = runtime
        .block_on(crate::verify::readback::start_for_run(&plan, |w| {
            progress.warn(w)
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
    let mut run_state = RunState::start(&plan);
    state.write(&run_state);

    let kernel_abi = crate::sandbox::kernel_abi();
    let mut warnings = Vec::new();
    let sandbox_summary = if plan.options.sandbox.enabled {
        SandboxSummary {
            mode: "landlock".into(),
            kernel_abi,
            warning: None,
            root: crate::sandbox::user::is_root(),
            agent_user: plan
                .options
                .sandbox
                .run_as
                .map(crate::sandbox::user::describe),
        }
    } else {
        let w = "agents run UNCONFINED (--sandbox off): they can write anywhere this user can"
            .to_string();
        progress.warn(&w);
        warnings.push(w.clone());
        SandboxSummary {
            mode: "off".into(),
            kernel_abi,
            warning: Some(w),
            root: crate::sandbox::user::is_root(),
            agent_user: plan
                .options
                .sandbox
                .run_as
                .map(crate::sandbox::user::describe),
        }
    };

    if let Ok(repo) = git2::Repository::open(&plan.repo.workdir) {
        let drivers = crate::git::repo::filter_drivers(&repo, plan.base);
        if !drivers.is_empty() {
            let w = format!(
                "the repository's attributes name filter drivers fanout does not run: {}; a task that changes such a path fails unless --allow-unfiltered{}",
                drivers.join("; "),
                if plan.options.allow_unfiltered { " (given: raw content is committed)" } else { "" }
            );
            progress.warn(&w);
            warnings.push(w);
        }
    }

    progress.run_started(&plan, &sandbox_summary);
    progress.workspace(&workspaces.summary);
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
        progress: progress.clone(),
        cancel: stop.cancel_rx(),
        stop: stop.clone(),
        verifier: verifier.map(|v| Arc::new(tokio::sync::Mutex::new(v))),
        readback_skip,
        priors: std::mem::take(&mut plan.priors),
        workspaces,
    });

    let (reports, pendings) = runtime.block_on(run_all(
        shared.clone(),
        started_rx,
        &mut state,
        &mut run_state,
    ));

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
    crate::process::stop_all(crate::agent::STOP_GRACE);

    let mut reports = reports;
    let ready = pendings
        .iter()
        .filter(|p| matches!(p, Pending::Ready(_)))
        .count();
    progress.integrating(ready);
    let integrating = Instant::now();
    let integration = integrate::integrate(&shared, &mut reports, &pendings, stop.requested())?;
    progress.integrated(ready, integrating.elapsed());
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
        interrupted_by: stop.reason().map(str::to_string),
        sandbox: sandbox_summary,
        workspace: Some(shared.workspaces.summary.clone()),
        verifier: verifier_summary,
        duration_ms: started.elapsed().as_millis() as u64,
        counts,
        tasks: reports,
        warnings,
    };
    let _ = report::write_json_atomic(&run_dir.join("report.json"), &report);
    let verified: Vec<bool> = pendings
        .iter()
        .map(|p| matches!(p, Pending::Ready(_)))
        .collect();
    run_state.finish(&report, &verified);
    state.write(&run_state);
    // Blocking work abandoned by a second signal (a checkout) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(report)
}

/// Calls [`crate::process::stop_all`] when dropped.
struct StopAllOnDrop;

impl Drop for StopAllOnDrop {
    fn drop(&mut self) {
        crate::process::stop_all(crate::agent::STOP_GRACE);
    }
}

/// Runs every task pipeline; returns reports and pending results in task-file order.
///
/// Tasks are started in task-file order, each once its dependencies ended, at most `--jobs` at
/// once: only running tasks exist as futures (a pipeline's future is large, and 10 000 of them
/// up front cost hundreds of megabytes). A task's slot is freed only after its workspace was
/// removed, so at most `--jobs` workspaces exist besides kept ones.
async fn run_all(
    shared: Arc<Shared>,
    mut started: mpsc::UnboundedReceiver<String>,
    state: &mut StateFile,
    run_state: &mut RunState,
) -> (Vec<TaskReport>, Vec<Pending>) {
    let n = shared.tasks.len();
    let jobs = shared.options.jobs.max(1);
    let mut sched = Schedule::new(&shared.tasks);
    // The pipeline takes a permit; the scheduler already keeps it uncontended.
    let limiter = Arc::new(Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    let mut running: BTreeMap<tokio::task::Id, usize> = BTreeMap::new();

    let mut reports: Vec<Option<TaskReport>> = (0..n).map(|_| None).collect();
    let mut pendings: Vec<Pending> = (0..n).map(|_| Pending::Done).collect();
    let mut now = shared.stop.now_rx();
    let mut aborted = false;
    let mut done = 0usize;
    // Keeps `state.json` itself close behind while tasks run long.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // After a second signal nothing new starts; after a first, tasks still start and end
        // at once as interrupted, so each gets its resumable state.
        while running.len() < jobs && !aborted {
            let Some(i) = sched.next_ready() else { break };
            let deps = sched.dep_receivers(&shared.tasks[i]);
            let shared = shared.clone();
            let limiter = limiter.clone();
            let handle = set.spawn(async move {
                let (report, pending, dep) = match shared.priors.get(shared.tasks[i].id().as_str())
                {
                    Some(prior) => task::carried_over(&shared, i, prior.clone()).await,
                    None => task::run(shared.clone(), i, deps, limiter).await,
                };
                if !integrate::keeps_workspace(shared.options.keep_worktrees, &report) {
                    let (s, id) = (shared.clone(), shared.tasks[i].id().clone());
                    let removed =
                        task::blocking(move || integrate::remove_workspace_files(&s, &id)).await;
                    if let Err(e) = removed {
                        shared.progress.warn(&format!("{}: {e}", report.id));
                    }
                }
                (i, report, pending, dep)
            });
            running.insert(handle.id(), i);
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = set.join_next_with_id() => {
                let Some(joined) = joined else { break };
                match joined {
                    Ok((tid, (i, report, pending, dep))) => {
                        running.remove(&tid);
                        sched.finished(i, dep);
                        done += 1;
                        shared.progress.task_finished(done, n, &report, matches!(pending, Pending::Ready(_)));
                        let status = crate::resume::state_status(
                            report.status,
                            matches!(pending, Pending::Ready(_)),
                            *shared.cancel.borrow(),
                        );
                        run_state.set_task(
                            &report.id,
                            status,
                            pending_commit(&pending).or(report.commit.clone()),
                            report.error.clone(),
                        );
                        state.record(run_state, &report.id);
                        reports[i] = Some(report);
                        pendings[i] = pending;
                    }
                    Err(e) => {
                        if !e.is_cancelled() {
                            shared.progress.warn(&format!("a task pipeline panicked: {e}"));
                        }
                        if let Some(i) = running.remove(&e.id()) {
                            sched.finished(i, task::DepResult { commit: None, ok: false, status: TaskStatus::Failed });
                        }
                    }
                }
            }
            Some(id) = started.recv() => {
                // Only a task still pending: its end may have been recorded already.
                if run_state.tasks.get(&id).is_some_and(|t| t.status == "pending") {
                    run_state.set_task(&id, "running", None, None);
                    state.record(run_state, &id);
                }
            }
            _ = now.wait_for(|n| *n), if !aborted => {
                // Dropping the pipelines drops their processes: each supervisor gets SIGTERM
                // and stops its tree; `stop_all` waits for them.
                aborted = true;
                set.abort_all();
            }
            _ = tick.tick() => state.flush_if_due(run_state),
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

/// Which task may start next: task-file order among the tasks whose dependencies all ended.
struct Schedule {
    /// Task indices ready to start, smallest (earliest in the task file) first.
    ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>>,
    /// Dependencies of each task that have not ended yet.
    waiting: Vec<usize>,
    /// Tasks that depend on each task.
    dependents: Vec<Vec<usize>>,
    /// What each ended task tells its dependents.
    results: Vec<Option<task::DepResult>>,
    index: std::collections::HashMap<String, usize>,
}

impl Schedule {
    fn new(tasks: &[PlannedTask]) -> Schedule {
        let index: std::collections::HashMap<String, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id().to_string(), i))
            .collect();
        let mut waiting = vec![0; tasks.len()];
        let mut dependents = vec![Vec::new(); tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            for d in &t.spec.depends_on {
                if let Some(&j) = index.get(d.as_str()) {
                    waiting[i] += 1;
                    dependents[j].push(i);
                }
            }
        }
        let ready = (0..tasks.len())
            .filter(|&i| waiting[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        Schedule {
            ready,
            waiting,
            dependents,
            results: vec![None; tasks.len()],
            index,
        }
    }

    fn next_ready(&mut self) -> Option<usize> {
        self.ready.pop().map(|std::cmp::Reverse(i)| i)
    }

    /// The ended dependencies' results, in the form the pipeline waits on (already filled in).
    fn dep_receivers(
        &self,
        task: &PlannedTask,
    ) -> Vec<(String, watch::Receiver<Option<task::DepResult>>)> {
        task.spec
            .depends_on
            .iter()
            .filter_map(|d| {
                let &j = self.index.get(d.as_str())?;
                let (_tx, rx) = watch::channel(self.results[j].clone());
                Some((d.to_string(), rx))
            })
            .collect()
    }

    fn finished(&mut self, i: usize, result: task::DepResult) {
        self.results[i] = Some(result);
        for k in std::mem::take(&mut self.dependents[i]) {
            self.waiting[k] -= 1;
            if self.waiting[k] == 0 {
                self.ready.push(std::cmp::Reverse(k));
            }
        }
    }
}

fn pending_commit(p: &Pending) -> Option<String> {
    match p {
        Pending::Ready(oid) => Some(oid.to_string()),
        Pending::Done => None,
    }
}
