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
use super::paths::{Paths, Workplace};
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
        report.rounds = r.rounds.clone();
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
    // Issue 23: what the task spent in this run — every round, every candidate, the judges.
    let spent = shared.spending.task_spent(task.id().as_str());
    report.usage = (!spent.is_empty()).then(|| Box::new(spent));
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
    if !task.candidates.is_empty() {
        // Candidates: each takes a job slot of its own.
        let start = super::candidates::Start {
            index,
            dep_commits,
            rerun,
            jobs,
            attempt: |shared, at, deps, rerun, report| {
                Box::pin(in_workspace(shared, at, deps, rerun, report))
            },
        };
        return super::candidates::run(shared, start, report, slot).await;
    }
    let _permit = take_slot(shared, jobs, slot).await?;
    let paths = Paths::new(shared, id);
    let at = Workplace {
        task,
        env_index: index,
        paths,
    };
    in_workspace(shared, at, dep_commits, rerun.as_ref(), report).await
}

/// The phases from the workspace on: workspace, setup, the agent's turns with their gates,
/// and the end (ready, no changes, or ended early).
pub(super) async fn in_workspace(
    shared: &Arc<Shared>,
    at: Workplace<'_>,
    dep_commits: Vec<git2::Oid>,
    rerun: Option<&Rerun>,
    report: &mut TaskReport,
) -> Result<(Pending, Option<git2::Oid>), Stop> {
    let Workplace {
        task,
        env_index,
        mut paths,
    } = at;
    let id = task.id();
    enter(shared, id, TaskPhase::Workspace);
    let events = open_records(&paths, task, report)?;
    let made = task_workspace::make(shared, task, &mut paths, dep_commits, rerun).await?;
    workspace_ready(shared, task, &paths, &events, report, made.start);
    enter(shared, id, TaskPhase::Setup);
    let mut spawn = task_workspace::environment(shared, task, env_index, &mut paths).await?;
    let start = made.start;
    task_workspace::setup(shared, task, &mut paths, &mut spawn, made).await?;
    if let Some(r) = rerun.and_then(|r| r.resolve.clone()) {
        place_resolution(shared, task, &paths, r).await?;
    }
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
        round: rerun.cloned(),
        meter: Default::default(),
        turn_usage: None,
        clock: Some(super::budget::SessionClock::open(shared, id.as_str())),
    };
    // The task's time counts from the start of its agent's session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(task.timeout_secs);
    let mut session = run.start_session().await?;
    let result = run.turns(&mut session, rerun, deadline).await;
    let over_budget = matches!(&result, Err(s) if s.status == TaskStatus::BudgetExceeded);
    run.end_session(session, over_budget).await;
    run.finish(result).await
}

/// A resolve round's workspace: the task's change merged onto the integration head, conflicts
/// marked, written before the agent starts (an overlay's upper folder, else the worktree).
async fn place_resolution(
    shared: &Shared,
    task: &PlannedTask,
    paths: &Paths,
    resolution: Arc<super::resolve::Resolution>,
) -> Result<(), Stop> {
    let root = paths.readable_root().to_path_buf();
    let overlay = paths.overlay.is_some();
    let owner = super::identity::task_user(shared, task.id().as_str());
    blocking(move || super::resolve::write(&root, overlay, &resolution, owner))
        .await
        .map_err(|e| stop(TaskStatus::Failed, e))
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
    // Issue 23: once the run's budget is spent no new task starts (`fanout resume --budget`).
    if let Some(why) = shared.spending.run_spent() {
        return Err(stop(TaskStatus::Skipped, why));
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
    /// A round after the first (retry, resolve, repair): its own gates come from it.
    round: Option<Rerun>,
    // Accounting and budgets (issue 23):
    /// The session's running total, as the agent reports it.
    meter: crate::usage::meter::Meter,
    /// What the last agent turn spent, until its attempt is recorded.
    turn_usage: Option<crate::usage::Usage>,
    /// The agent's session counts towards the task's time (`budget.task.seconds`) while open.
    clock: Option<super::budget::SessionClock>,
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

    /// `attempt 2`, or for the first turn of a later round `its retry round`.
    fn which_turn(&self, attempt: u32) -> String {
        match (&self.round, attempt) {
            (Some(r), 1) => format!("its {} round", r.kind().as_str()),
            _ => format!("attempt {attempt}"),
        }
    }

    /// The agent's session, started in the task's sandbox (a stop request ends the wait).
    async fn start_session(&mut self) -> Result<Session, Stop> {
        let ctx = AgentContext {
            task_id: self.id().clone(),
            worktree: self.paths.worktree.clone(),
            scratch: self.paths.scratch.clone(),
            profile: (*self.task.profile).clone(),
            protocol: self.task.launch.protocol,
            codex: self.task.launch.codex.clone(),
            events: self.events.clone(),
            spawn: self.spawn.clone(),
            resume_thread: self.round.as_ref().and_then(|r| r.thread.clone()),
            meter: self.meter.clone(),
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
        // A continued thread already holds the task and its earlier turns; a new session is
        // told the earlier round (resolve, repair).
        let first_prompt = match rerun {
            Some(r) if !is_exec && session.info().resumed => r.feedback.clone(),
            Some(r) if !is_exec => {
                format!("{}\n\n{}{}", self.task.spec.prompt, r.earlier, r.feedback)
            }
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
                usage: self.turn_usage.take(),
            };
            if collected.commit.is_none() {
                self.report.attempt_history.push(attempt_report);
                return Ok(None);
            }
            self.enter(TaskPhase::Gates { turn: attempt });
            match self.gates(attempt, &collected, attempt_report).await? {
                Judged::Passed(commit) => {
                    // Its judges may have taken it over its budget: then it is not merged.
                    if let Some(why) =
                        super::budget::task_spent_over(self.shared, self.id().as_str())
                    {
                        return Err(stop(
                            TaskStatus::BudgetExceeded,
                            format!("{why} after its gates passed (its work is on its branch, not merged)"),
                        ));
                    }
                    return Ok(commit);
                }
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
                rerun.map_or(crate::report::RoundKind::Agent, |r| r.kind()),
                rerun.map(|r| r.cause.clone()),
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
        // No turn once the task's budget is spent (its earlier rounds and other candidates
        // count), nor a further one once the run's is.
        let shared = self.shared;
        let over = super::budget::task_over(shared, self.id().as_str())
            .or_else(|| (attempt > 1).then(|| shared.spending.run_spent()).flatten());
        if let Some(why) = over {
            return Err(stop(
                TaskStatus::BudgetExceeded,
                format!(
                    "{why} before {} (its work so far is on its branch, not merged)",
                    self.which_turn(attempt)
                ),
            ));
        }
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
        let before = session.info();
        let limit = super::budget::task_limit(
            self.shared.clone(),
            self.meter.clone(),
            before.clone(),
            self.id().to_string(),
        );
        let in_flight = super::budget::TurnInFlight::start(
            self.shared,
            (self.id().as_str(), self.paths.candidate),
            &self.meter,
            &before,
        );
        let turn = tokio::select! {
            t = async {
                match feedback {
                    Some(f) => session.feedback(&self.task.spec.prompt, f, turn_deadline).await,
                    None => session.turn(first_prompt, turn_deadline).await,
                }
            } => t,
            _ = cancel.wait_for(|c| *c) => Err(AgentError::Reported("interrupted by the user".into())),
            why = limit => Err(AgentError::Reported(why)),
        };
        in_flight.done();
        self.account_turn(&before, &session.info());
        // A turn that took the task over its budget ends it, however the turn ended.
        if let Some(why) = super::budget::task_over(self.shared, self.id().as_str()) {
            return Err(stop(
                TaskStatus::BudgetExceeded,
                format!("{why} (its work so far is on its branch, not merged)"),
            ));
        }
        turn.map(|_| ()).map_err(|e| match feedback {
            // A feedback round that fails leaves the gate failure as the task's outcome.
            Some(_) if attempt > 1 && !*self.shared.cancel.borrow() => {
                super::retry::feedback_round_failed(self.report, &e)
            }
            _ => agent_stop(e),
        })
    }

    /// What the turn spent (the growth of the session's total), priced, added to the task's
    /// and the run's totals and kept for the attempt's record.
    fn account_turn(&mut self, before: &crate::agent::AgentInfo, after: &crate::agent::AgentInfo) {
        let Some(total) = after.usage.as_ref() else {
            return;
        };
        let turn = crate::usage::read::since(&before.usage.clone().unwrap_or_default(), total);
        let (turn, warning) = self.shared.spending.price(after.model.as_deref(), turn);
        if let Some(w) = warning {
            self.shared.events.warn(Some(self.id().as_str()), &w);
        }
        self.report
            .usage
            .get_or_insert_with(Box::default)
            .add(&turn);
        let (id, candidate) = (self.task.id().as_str(), self.paths.candidate);
        self.shared.spending.record(id, candidate, &turn);
        self.events
            .record("usage", serde_json::to_value(&turn).unwrap_or_default());
        self.turn_usage = Some(turn);
    }

    /// What the judges of an attempt (review, diagnosis) spent, priced, added to the task's and
    /// the run's totals; returned for the attempt's record.
    fn account_judges(
        &mut self,
        judged: Vec<crate::usage::scope::Spent>,
    ) -> Option<crate::usage::Usage> {
        let mut sum = None;
        for (usage, model) in judged {
            let (usage, warning) = self.shared.spending.price(model.as_deref(), usage);
            if let Some(w) = warning {
                self.shared.events.warn(Some(self.id().as_str()), &w);
            }
            crate::usage::Usage::add_to(&mut sum, Some(&usage));
        }
        let spent = sum?;
        self.report
            .usage
            .get_or_insert_with(Box::default)
            .add(&spent);
        let (id, candidate) = (self.task.id().as_str(), self.paths.candidate);
        self.shared.spending.record(id, candidate, &spent);
        self.events.record(
            "judges_usage",
            serde_json::to_value(&spent).unwrap_or_default(),
        );
        Some(spent)
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
            usage: self.turn_usage.clone(),
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
            (g, judged) = crate::usage::scope::counting(verify_gates(self.shared, self.task, &self.paths, &self.spawn, collected, self.report, &mut self.view)) => {
                let spent = self.account_judges(judged);
                crate::usage::Usage::add_to(&mut attempt_report.usage, spent.as_ref());
                g
            }
            _ = cancel.wait_for(|c| *c) => {
                return Err(stop(TaskStatus::Failed, "interrupted by the user during verification"))
            }
        };
        let mut gates = gates;
        gates.extend(self.round_gates(collected).await);
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

    /// The gates of a resolve round (no conflict marker left) and of a repair round (nothing
    /// outside the task's paths, nothing protected).
    async fn round_gates(&self, collected: &Collected) -> Vec<GateResult> {
        let Some(round) = self.round.clone() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(scope) = &round.repair {
            out.push(super::repair::scope_gate(scope, &collected.summary.files));
        }
        let (Some(resolution), Some(commit)) = (round.resolve, collected.commit) else {
            return out;
        };
        let repo_path = self.shared.repo_path.clone();
        let marked = blocking(move || {
            let repo = git2::Repository::open(&repo_path).map_err(|e| e.to_string())?;
            super::resolve::markers_gate(&repo, commit, &resolution.marked)
                .map_err(|e| e.to_string())
        })
        .await;
        out.push(marked.unwrap_or_else(|e| GateResult {
            gate: "conflict_markers".into(),
            passed: false,
            detail: Some(format!("cannot read the resolution: {e}")),
            paths: Vec::new(),
            output: None,
            stderr: None,
            flaky: false,
        }));
        out
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
            (d, judged) = crate::usage::scope::counting(diagnose) => {
                let spent = self.account_judges(judged);
                if let Some(a) = self.report.attempt_history.last_mut() {
                    crate::usage::Usage::add_to(&mut a.usage, spent.as_ref());
                }
                d
            }
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
    async fn end_session(&mut self, session: Session, over_budget: bool) {
        self.report.agent = session.info();
        // Stopping it takes no more of the task's time.
        self.clock = None;
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
        if let Some(sb) = self
            .report
            .agent
            .sandbox
            .as_ref()
            .filter(|s| !s.credentials_visible.is_empty())
        {
            self.shared.events.warn(
                Some(self.id().as_str()),
                &format!(
                    "credential paths left readable to the agent (they hold its workspace, the run's folders or its program): {}",
                    sb.credentials_visible.join(", ")
                ),
            );
        }
        match over_budget {
            true => session.stop_now().await,
            false => session.shutdown().await,
        }
    }

    /// Ready (verified, waiting for integration), no changes, or ended early — with whatever
    /// the agent left committed on its branch, or its workspace kept.
    async fn finish(
        self,
        result: Result<Option<git2::Oid>, Stop>,
    ) -> Result<(Pending, Option<git2::Oid>), Stop> {
        let id = self.id().to_string();
        match result {
            Ok(Some(commit)) if self.paths.candidate.is_some() => {
                // Candidates: the task's commit is announced once one is chosen.
                self.report.commit = Some(commit.to_string());
                self.events
                    .record("verified", json!({"commit": commit.to_string()}));
                Ok((Pending::Ready(commit), Some(commit)))
            }
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
