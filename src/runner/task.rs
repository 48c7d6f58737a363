/*!
One task's life, as the list of its phases ([`crate::phase::TaskPhase`], docs/architecture.md):

waiting for dependencies → queued → workspace → setup → agent turn n → collect → gates →
(feedback → agent turn n+1 …) → ready; integration (integrated / conflicted / ejected) happens
in `integrate`. Each phase is one function here or in `task_workspace`; [`pipeline`] reads as
their list. A phase that ends the task early returns a [`Stop`].
*/

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::outcome::{stop, Awaited, DepResult, Rerun, Stop};
use super::paths::Paths;
use super::shared::{Pending, Shared};
use super::steps::*;
use super::task_workspace;
use super::verify_gates::*;
use crate::agent::{AgentContext, AgentError, Session};
use crate::event::EventKind;
use crate::eventlog::EventLog;
use crate::git::collect::Collected;
use crate::ids::TaskId;
use crate::phase::TaskPhase;
use crate::plan::PlannedTask;
use crate::process::SpawnSpec;
use crate::report::{AttemptReport, GateResult, TaskReport, TaskStatus};
use crate::verify;

pub(crate) async fn run(
    shared: Arc<Shared>,
    index: usize,
    deps: Vec<Awaited>,
    jobs: Arc<Semaphore>,
    rerun: Option<Rerun>,
) -> (TaskReport, Pending, DepResult) {
    let task = &shared.tasks[index];
    let mut report = TaskReport::new(task.id().as_str(), &task.agent_name);
    let started = shared.run_started;
    if let Some(r) = &rerun {
        report.rounds = r.earlier.clone();
    }
    let rounds_before = report.rounds.len();

    let mut slot = None;
    let (pending, commit) =
        match pipeline(&shared, index, deps, jobs, rerun, &mut report, &mut slot).await {
            Ok(r) => r,
            Err(Stop { status, error }) => {
                report.status = status;
                report.error = Some(error);
                (Pending::Done, None)
            }
        };
    // A task cut off by a stop keeps the phase it was in: `fanout status` and `fanout resume`
    // say where.
    if !matches!(pending, Pending::Ready(_)) && !*shared.cancel.borrow() {
        enter(&shared, task.id(), TaskPhase::Ended);
    }
    if !shared.options.keep_worktrees {
        crate::taskenv::remove_task_tmp(&shared.run_dir, index);
    }
    // What the task wrote into its caches goes with it.
    crate::caches::remove_task_layers(&crate::taskenv::cache_layers_dir(
        &crate::run_dir::RunDir::new(&shared.run_dir)
            .task(task.id().as_str())
            .scratch,
    ));
    if report.patch.is_none() {
        // One patch per task, empty when the task changed nothing (or never ran).
        let patch = crate::run_dir::RunDir::new(&shared.run_dir)
            .task(task.id().as_str())
            .patch;
        if std::fs::write(&patch, b"").is_ok() {
            report.patch = Some(patch.display().to_string());
        }
    }
    // Queued until it got a job slot, running from then on.
    let (queued, ran) = match slot {
        Some(t) => (t.duration_since(started), t.elapsed()),
        None => (started.elapsed(), Duration::ZERO),
    };
    report.queued_ms = queued.as_millis() as u64;
    report.duration_ms = ran.as_millis() as u64;
    report.attempts = report.attempt_history.len();
    if report.rounds.len() > rounds_before {
        let commit = commit.map(|c| c.to_string()).or(report.commit.clone());
        let status = report.status;
        super::rounds::end(&mut report, status, commit);
    }
    let ok = matches!(pending, Pending::Ready(_)) || report.status == TaskStatus::NoChanges;
    let dep = DepResult {
        commit,
        ok,
        status: report.status,
    };
    (report, pending, dep)
}

/// Tells the event stream (and through it the state journal) that a task entered `phase`.
fn enter(shared: &Shared, id: &TaskId, phase: TaskPhase) {
    shared.events.emit(EventKind::Phase {
        task: id.to_string(),
        phase,
    });
}

/// The task's phases, in order.
async fn pipeline(
    shared: &Arc<Shared>,
    index: usize,
    deps: Vec<Awaited>,
    jobs: Arc<Semaphore>,
    rerun: Option<Rerun>,
    report: &mut TaskReport,
    slot: &mut Option<Instant>,
) -> Result<(Pending, Option<git2::Oid>), Stop> {
    let task = &shared.tasks[index];
    let id = task.id();
    enter(shared, id, TaskPhase::WaitingForDependencies);
    let dep_commits = wait_for_dependencies(shared, deps).await?;
    enter(shared, id, TaskPhase::Queued);
    let _permit = take_slot(shared, jobs, slot).await?;
    enter(shared, id, TaskPhase::Workspace);
    let mut paths = Paths::new(shared, id);
    let events = open_records(&paths, task, report)?;
    let made = task_workspace::make(shared, task, &mut paths, dep_commits, rerun.as_ref()).await?;
    workspace_ready(shared, task, &paths, &events, report, made.start);
    enter(shared, id, TaskPhase::Setup);
    let mut spawn = task_workspace::environment(shared, task, index, &paths).await?;
    let start = made.start;
    task_workspace::setup(shared, task, &mut paths, &mut spawn, made).await?;
    let mut run = TaskRun {
        shared,
        task,
        paths,
        events,
        spawn,
        start,
        report,
        collect_failed: false,
        view: JudgeView::default(),
    };
    // The task's time counts from the start of its agent's session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(task.timeout_secs);
    let mut session = run.start_session().await?;
    let result = run.turns(&mut session, rerun.as_ref(), deadline).await;
    run.end_session(session).await;
    run.finish(result).await
}

/// Waiting for dependencies: all must be verified; their commits are where the task starts.
/// The earlier tasks of its lane must have ended; those verified add their commits (a failed
/// one is passed over: the task starts from the last good point).
async fn wait_for_dependencies(
    shared: &Shared,
    deps: Vec<Awaited>,
) -> Result<Vec<git2::Oid>, Stop> {
    let mut dep_commits = Vec::new();
    for Awaited { name, mut rx, lane } in deps {
        let result = loop {
            if let Some(r) = rx.borrow().clone() {
                break r;
            }
            if rx.changed().await.is_err() {
                break DepResult {
                    commit: None,
                    ok: false,
                    status: TaskStatus::Failed,
                };
            }
        };
        if lane && !result.ok {
            continue;
        }
        if !result.ok {
            return Err(stop(
                TaskStatus::Skipped,
                format!("dependency {name} ended {}", result.status.as_str()),
            ));
        }
        dep_commits.extend(result.commit);
    }
    if *shared.cancel.borrow() {
        return Err(stop(TaskStatus::Failed, "interrupted before it started"));
    }
    Ok(dep_commits)
}

/// Queued: a job slot (`--jobs`), held until the task's pipeline ends.
async fn take_slot(
    shared: &Shared,
    jobs: Arc<Semaphore>,
    slot: &mut Option<Instant>,
) -> Result<OwnedSemaphorePermit, Stop> {
    let permit = jobs
        .acquire_owned()
        .await
        .map_err(|_| stop(TaskStatus::Failed, "the job limiter closed"))?;
    *slot = Some(Instant::now());
    if *shared.cancel.borrow() {
        return Err(stop(TaskStatus::Failed, "interrupted before it started"));
    }
    Ok(permit)
}

/// The task's own records: its event log (opened) and where its logs are, in the report.
fn open_records(
    paths: &Paths,
    task: &PlannedTask,
    report: &mut TaskReport,
) -> Result<EventLog, Stop> {
    report.event_log = Some(paths.events.display().to_string());
    report.stderr_log = Some(paths.stderr_log.display().to_string());
    let events = EventLog::open(&paths.events).map_err(|e| {
        stop(
            TaskStatus::Failed,
            format!("cannot open the event log {}: {e}", paths.events.display()),
        )
    })?;
    events.record(
        "task_started",
        json!({"task": task.id(), "agent": task.agent_name}),
    );
    Ok(events)
}

/// The workspace exists: said in the report and the event stream, and the agent's events are
/// forwarded from now on.
fn workspace_ready(
    shared: &Shared,
    task: &PlannedTask,
    paths: &Paths,
    events: &EventLog,
    report: &mut TaskReport,
    start: git2::Oid,
) {
    report.branch = Some(paths.branch.clone());
    report.started_from = Some(start.to_string());
    shared.events.emit(EventKind::WorkspaceReady {
        task: task.id().to_string(),
        branch: paths.branch.clone(),
        started_from: start.to_string(),
    });
    let (sink, id) = (shared.events.clone(), task.id().to_string());
    events.forward_to(move |kind, summary| {
        sink.emit(EventKind::AgentEvent {
            task: id.clone(),
            kind,
            summary,
        })
    });
}

/// What a task has once its workspace and sandbox exist: the state of its agent turns.
struct TaskRun<'a> {
    shared: &'a Arc<Shared>,
    task: &'a PlannedTask,
    paths: Paths,
    events: EventLog,
    spawn: SpawnSpec,
    start: git2::Oid,
    report: &'a mut TaskReport,
    /// Collection failed: the workspace is kept, and nothing collects it again.
    collect_failed: bool,
    /// The snapshot of the attempt's commit the judges read (removed with the next attempt's).
    view: JudgeView,
}

/// How an attempt's gates judged it.
enum Judged {
    /// Verified: the commit waits for integration.
    Passed(Option<git2::Oid>),
    /// Failed, with the feedback for the agent's next turn.
    Failed(String),
}

impl TaskRun<'_> {
    fn id(&self) -> &TaskId {
        self.task.id()
    }

    fn enter(&self, phase: TaskPhase) {
        enter(self.shared, self.task.id(), phase);
    }

    /// The agent's session, started in the task's sandbox (a stop request ends the wait).
    async fn start_session(&mut self) -> Result<Session, Stop> {
        let ctx = AgentContext {
            task_id: self.id().clone(),
            worktree: self.paths.worktree.clone(),
            scratch: self.paths.scratch.clone(),
            profile: self.task.profile.clone(),
            protocol: self.task.launch.protocol,
            codex: self.task.launch.codex.clone(),
            events: self.events.clone(),
            spawn: self.spawn.clone(),
        };
        let mut cancel = self.shared.cancel.clone();
        let session = tokio::select! {
            s = Session::start(ctx) => s,
            _ = cancel.wait_for(|c| *c) => Err(AgentError::Reported("interrupted".into())),
        };
        session.map_err(|e| {
            record_sandbox(self.report, None, &self.paths.status_file);
            agent_stop(e)
        })
    }

    /// Agent turns until the gates pass, the attempts run out or something ends the task.
    async fn turns(
        &mut self,
        session: &mut Session,
        rerun: Option<&Rerun>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<git2::Oid>, Stop> {
        // A task run again after a conflict starts a fresh session: an exec agent gets the
        // conflict as feedback (`FANOUT_FEEDBACK`), a conversational one in its prompt.
        let is_exec = self.task.launch.protocol == crate::taskfile::Protocol::Exec;
        let first_prompt = match rerun {
            Some(r) if !is_exec => format!("{}\n\n{}", self.task.spec.prompt, r.feedback),
            _ => self.task.spec.prompt.clone(),
        };
        let mut feedback: Option<String> = rerun.filter(|_| is_exec).map(|r| r.feedback.clone());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.begin_round(attempt, rerun);
            self.enter(TaskPhase::AgentTurn { turn: attempt });
            self.agent_turn(
                session,
                attempt,
                &first_prompt,
                feedback.as_deref(),
                deadline,
            )
            .await?;
            self.enter(TaskPhase::Collect { turn: attempt });
            let collected = self.collect(attempt).await?;
            let attempt_report = AttemptReport {
                number: attempt,
                commit: collected.commit.map(|c| c.to_string()),
                gates: Vec::new(),
                failure: None,
                diagnosis: None,
            };
            if collected.commit.is_none() {
                self.report.attempt_history.push(attempt_report);
                return Ok(None);
            }
            self.enter(TaskPhase::Gates { turn: attempt });
            match self.gates(attempt, &collected, attempt_report).await? {
                Judged::Passed(commit) => return Ok(commit),
                Judged::Failed(text) => {
                    let commit = collected.commit.map(|c| c.to_string());
                    super::rounds::end(self.report, TaskStatus::Failed, commit);
                    self.enter(TaskPhase::Feedback { turn: attempt });
                    feedback = Some(self.feedback(attempt, text, &collected).await?);
                }
            }
        }
    }

    /// A round begins with each agent turn: the first is the pipeline's (`agent`, or what a
    /// run again is for), each later one a `feedback` round caused by the gates that failed.
    fn begin_round(&mut self, attempt: u32, rerun: Option<&Rerun>) {
        let (kind, cause) = match attempt {
            1 => (
                rerun.map_or(crate::report::RoundKind::Agent, |r| r.kind),
                rerun.and_then(|r| r.cause.clone()),
            ),
            _ => (
                crate::report::RoundKind::Feedback,
                Some(super::rounds::feedback_cause(
                    self.report.attempt_history.last(),
                )),
            ),
        };
        self.events.record(
            "round_started",
            json!({"round": self.report.rounds.len() + 1, "round_kind": kind, "cause": cause}),
        );
        super::rounds::begin(&self.shared.events, self.report, kind, cause);
    }

    /// Agent turn n: the prompt (or the feedback), until the agent says it is done.
    async fn agent_turn(
        &mut self,
        session: &mut Session,
        attempt: u32,
        first_prompt: &str,
        feedback: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Result<(), Stop> {
        if attempt > 1 {
            // Collections leave an overlay task's index alone; the agent's next turn should
            // see `git status` clean but for what it changes next.
            refresh_index(self.shared, &self.paths, self.start, self.task).await;
        }
        let turn_deadline = deadline.min(
            tokio::time::Instant::now()
                + Duration::from_secs_f64(self.task.profile.tool_timeout_sec),
        );
        self.events
            .record("turn_started", json!({"attempt": attempt}));
        self.shared.events.emit(EventKind::AgentStarted {
            task: self.id().to_string(),
            attempt,
        });
        let mut cancel = self.shared.cancel.clone();
        let turn = tokio::select! {
            t = async {
                match feedback {
                    Some(f) => session.feedback(&self.task.spec.prompt, f, turn_deadline).await,
                    None => session.turn(first_prompt, turn_deadline).await,
                }
            } => t,
            _ = cancel.wait_for(|c| *c) => Err(AgentError::Reported("interrupted by the user".into())),
        };
        turn.map(|_| ()).map_err(|e| match feedback {
            // A feedback round that fails leaves the gate failure as the task's outcome.
            Some(_) if attempt > 1 && !*self.shared.cancel.borrow() => {
                super::retry::feedback_round_failed(self.report, &e)
            }
            _ => agent_stop(e),
        })
    }

    /// Collect: what the agent left, committed on the task's branch (or the workspace kept).
    async fn collect(&mut self, attempt: u32) -> Result<Collected, Stop> {
        let collected =
            match collect_blocking(self.shared, &self.paths, self.start, self.task).await {
                Ok(c) => c,
                Err(e) => {
                    self.collect_failed = true;
                    return Err(keep_workspace(self.shared, &self.paths, self.report, &e));
                }
            };
        fill_change(self.report, &collected, &self.paths);
        self.shared.events.emit(EventKind::AttemptEnded {
            task: self.id().to_string(),
            attempt,
            commit: collected.commit.map(|c| c.to_string()),
            files: collected.summary.files.len(),
            insertions: collected.summary.insertions,
            deletions: collected.summary.deletions,
        });
        if !collected.summary.risky.is_empty() {
            self.events.record(
                "risky_changes",
                json!({"attempt": attempt, "changes": collected.summary.risky}),
            );
            self.shared.events.warn(
                Some(self.id().as_str()),
                &format!(
                    "changes that deserve a look: {}",
                    collected
                        .summary
                        .risky
                        .iter()
                        .map(|r| format!("{} ({})", r.path, r.why))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        Ok(collected)
    }

    /// Gates: scope, verify command, read-back, review; passed, or the feedback for another
    /// turn (the task ends when the attempts ran out or the machine made the gates fail).
    async fn gates(
        &mut self,
        attempt: u32,
        collected: &Collected,
        mut attempt_report: AttemptReport,
    ) -> Result<Judged, Stop> {
        // The judges read a snapshot of the commit, made when one first needs it.
        self.view = JudgeView::default();
        let mut cancel = self.shared.cancel.clone();
        // A stop request must not wait for a long verify command.
        let gates = tokio::select! {
            g = verify_gates(self.shared, self.task, &self.paths, &self.spawn, collected, self.report, &mut self.view) => g,
            _ = cancel.wait_for(|c| *c) => {
                return Err(stop(TaskStatus::Failed, "interrupted by the user during verification"))
            }
        };
        self.events.record(
            "verify",
            json!({"attempt": attempt, "gates": gates, "readback": self.report.readback}),
        );
        for e in crate::event::gate_events(self.id().as_str(), attempt, &gates) {
            self.shared.events.emit(e);
        }
        let failed: Vec<&GateResult> = gates.iter().filter(|g| !g.passed).collect();
        if failed.is_empty() {
            attempt_report.gates = gates.clone();
            self.report.verify = gates;
            self.report.attempt_history.push(attempt_report);
            return Ok(Judged::Passed(collected.commit));
        }
        if let Some(why) = failed
            .iter()
            .map(|g| verify::command::exhausted(g))
            .collect::<Option<Vec<_>>>()
            .and_then(|w| w.first().map(|w| w.to_string()))
        {
            // Every failure was the machine's: nothing for the agent to fix, no blame.
            attempt_report.failure = Some(why.clone());
            attempt_report.gates = gates.clone();
            self.report.verify = gates;
            self.report.attempt_history.push(attempt_report);
            return Err(stop(
                TaskStatus::Failed,
                format!("{why} (its commit stays on the task's branch)"),
            ));
        }
        let text = feedback_prompt(&failed, attempt, self.task.max_attempts);
        attempt_report.failure = Some(
            failed
                .iter()
                .map(|g| g.detail.clone().unwrap_or_else(|| g.gate.clone()))
                .collect::<Vec<_>>()
                .join("; "),
        );
        attempt_report.gates = gates.clone();
        self.report.verify = gates;
        self.report.attempt_history.push(attempt_report);
        self.events.record(
            "verify_failed",
            json!({"attempt": attempt, "feedback": text}),
        );
        if attempt >= self.task.max_attempts || *self.shared.cancel.borrow() {
            return Err(stop(
                TaskStatus::VerifyFailed,
                super::retry::verify_failed_error(self.report, attempt),
            ));
        }
        Ok(Judged::Failed(text))
    }

    /// Feedback: the gates' report for the agent's next turn, with Claude Code's root-cause
    /// diagnosis when the task asks for one.
    async fn feedback(
        &mut self,
        attempt: u32,
        mut text: String,
        collected: &Collected,
    ) -> Result<String, Stop> {
        if !self.task.diagnose {
            return Ok(text);
        }
        // It reads the commit's snapshot, never the workspace.
        let (shared, task, paths) = (self.shared, self.task, &self.paths);
        let view = &mut self.view;
        let diagnose = async {
            let snapshot = view
                .root(shared, task, collected, true)
                .await
                .map_err(|why| verify::claude::AskError::Start {
                    program: task.claude.clone(),
                    detail: why,
                })?;
            let place = verify::diagnose::Place {
                judges: &shared.judges,
                claude: &task.claude,
                snapshot,
                stderr_log: &paths.stderr_log,
                status_file: &paths.status_file,
            };
            verify::diagnose::diagnose(place, &task.spec.prompt, &text, &collected.summary.files)
                .await
        };
        let mut cancel = self.shared.cancel.clone();
        let diagnosis = tokio::select! {
            d = diagnose => d,
            _ = cancel.wait_for(|c| *c) => {
                return Err(stop(TaskStatus::Failed, "interrupted by the user during diagnosis"))
            }
        };
        match diagnosis {
            Ok(d) => {
                self.events
                    .record("diagnosis", json!({"attempt": attempt, "text": d}));
                self.shared.events.emit(EventKind::Diagnosis {
                    task: self.id().to_string(),
                    attempt,
                    text: d.clone(),
                });
                if let Some(a) = self.report.attempt_history.last_mut() {
                    a.diagnosis = Some(d.clone());
                }
                text.push_str(&verify::diagnose::section(&d));
            }
            Err(e) => self.shared.events.warn(
                Some(self.id().as_str()),
                &format!("no diagnosis for attempt {attempt}: {e}"),
            ),
        }
        Ok(text)
    }

    /// The agent's session ends: what it reported about itself and its sandbox is kept.
    async fn end_session(&mut self, session: Session) {
        self.report.agent = session.info();
        record_sandbox(
            self.report,
            self.report.agent.sandbox.clone(),
            &self.paths.status_file,
        );
        if let Some(sb) = self
            .report
            .agent
            .sandbox
            .as_ref()
            .filter(|s| s.status == crate::sandbox::EnforcementStatus::PartiallyEnforced)
        {
            self.shared.events.warn(
                Some(self.id().as_str()),
                &format!(
                    "the sandbox is only partially enforced (kernel ABI {}): missing {}",
                    sb.abi.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
                    sb.missing.join(", ")
                ),
            );
        }
        session.shutdown().await;
    }

    /// Ready (verified, waiting for integration), no changes, or ended early — with whatever
    /// the agent left committed on its branch, or its workspace kept.
    async fn finish(
        self,
        result: Result<Option<git2::Oid>, Stop>,
    ) -> Result<(Pending, Option<git2::Oid>), Stop> {
        let id = self.id().to_string();
        match result {
            Ok(Some(commit)) => {
                self.report.commit = Some(commit.to_string());
                self.events
                    .record("verified", json!({"commit": commit.to_string()}));
                self.shared.events.emit(EventKind::Committed {
                    task: id,
                    commit: commit.to_string(),
                });
                self.enter(TaskPhase::Ready);
                Ok((Pending::Ready(commit), Some(commit)))
            }
            Ok(None) => {
                self.report.status = TaskStatus::NoChanges;
                self.events.record("no_changes", json!({}));
                Ok((Pending::Done, None))
            }
            Err(mut s) => {
                // Keep whatever the agent left, on its branch, for the user to look at; when it
                // cannot be committed, the workspace itself is kept.
                if !self.collect_failed {
                    match collect_blocking(self.shared, &self.paths, self.start, self.task).await {
                        Ok(c) => {
                            fill_change(self.report, &c, &self.paths);
                            self.report.commit = c.commit.map(|c| c.to_string());
                        }
                        Err(e) => {
                            let kept = keep_workspace(self.shared, &self.paths, self.report, &e);
                            s.error = format!("{}; {}", s.error, kept.error);
                        }
                    }
                }
                self.events.record(
                    "task_failed",
                    json!({"status": s.status.as_str(), "error": s.error}),
                );
                Err(s)
            }
        }
    }
}
