/*!
The run's one event stream. The runner's dispatch loop is the only place that emits events;
a [`Reporter`] hands each to every output (terminal, `--json` lines, JUnit, HTML, report.json
and state.json). Events are owned, serialisable and versioned ([`EVENT_SCHEMA_VERSION`]); the
JSON form is `{"v":1,"t_ms":…,"run":"…","event":"task_ended",…fields}` and its JSON Schema is
printed by `fanout schema events`.
*/

use serde::{Deserialize, Serialize};

use crate::report::{
    GateResult, RunReport, SandboxSummary, TaskReport, TaskStatus, WorkspaceSummary,
};

/// Bumped when a field changes meaning or goes away (adding fields keeps the version).
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// One event of a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Event {
    /// [`EVENT_SCHEMA_VERSION`].
    pub v: u32,
    /// Milliseconds since the Unix epoch.
    pub t_ms: u64,
    /// The run id.
    pub run: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The run began (`mode`: `run`, `resume` or `retry`).
    RunStarted {
        mode: String,
        repo: String,
        base: String,
        base_rev: String,
        jobs: usize,
        tasks: Vec<String>,
        agents: Vec<String>,
        sandbox: Box<SandboxSummary>,
        /// The kind of task workspace (`overlay` or `worktree`) and why.
        #[serde(default)]
        workspace: Box<WorkspaceSummary>,
    },
    /// A task waits for its dependencies and a slot.
    TaskQueued { task: String, agent: String },
    /// The task got a slot (`slot`: 0-based job slot, for timelines). `round` 1 is its first
    /// run; a task run again after a conflict (`--on-conflict retry`) starts round 2, 3, …
    TaskStarted {
        task: String,
        slot: usize,
        #[serde(default = "first_round")]
        round: u32,
    },
    /// Its workspace exists, on `branch`, starting from `started_from`.
    WorkspaceReady {
        task: String,
        branch: String,
        started_from: String,
    },
    /// The agent was prompted (`attempt` 1 is the first prompt, then feedback rounds).
    AgentStarted { task: String, attempt: u32 },
    /// The task entered a phase of its life (`phase`: docs/architecture.md).
    Phase {
        task: String,
        phase: crate::phase::TaskPhase,
    },
    /// Something the agent reported (bounded summary; the raw event is in the task's log).
    AgentEvent {
        task: String,
        kind: String,
        summary: String,
    },
    /// An attempt was collected.
    AttemptEnded {
        task: String,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        files: usize,
        insertions: usize,
        deletions: usize,
        // Accounting (issue 23):
        /// What the agent's turn of this attempt spent, when the agent said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<crate::usage::Usage>,
    },
    /// A gate passed (`flaky`: only when run again after failing, `detail` says how).
    GatePassed {
        task: String,
        attempt: u32,
        gate: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        flaky: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A gate failed, and why.
    GateFailed {
        task: String,
        attempt: u32,
        gate: String,
        detail: String,
    },
    /// Claude Code's diagnosis of a failed attempt, sent to the agent with the feedback.
    Diagnosis {
        task: String,
        attempt: u32,
        text: String,
    },
    /// The task's verified commit waits for integration.
    Committed { task: String, commit: String },
    /// Integration of the verified commits began.
    IntegrationStarted { ready: usize },
    /// A task's commit is on the integration branch.
    Merged { task: String, commit: String },
    /// A task's commit conflicts with what was merged before it.
    Conflict { task: String, paths: Vec<String> },
    /// A task that conflicted runs again from the integration head (`--on-conflict retry`).
    ConflictRetry {
        task: String,
        round: u32,
        paths: Vec<String>,
    },
    // Overlap before dispatch and visible rounds (issue 21).
    /// Tasks whose declared `paths` overlap (`paths`: the patterns that meet), said at the
    /// start of a run; `serialized`: they run one after another in a lane (`overlap: serialize`).
    Overlap {
        tasks: Vec<String>,
        paths: Vec<String>,
        serialized: bool,
    },
    /// A round of a task began: its agent is asked (again), and why (`cause`).
    RoundStarted {
        task: String,
        round: u32,
        kind: crate::report::RoundKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// The integration gate took a merged task out again: it breaks the integration.
    Ejected { task: String, reason: String },
    // Integration repair (issue 21).
    /// A task the integration gate took out is merged again: its repair round `round` fixed
    /// it; `commit`: its change and fix as merged, one commit (its `ejected` was not final).
    Repaired {
        task: String,
        round: u32,
        commit: String,
    },
    /// The integration gate began: its verify command runs on the integration of `tasks`
    /// merged tasks (then, when that fails, on prefixes of it: bisection).
    IntegrationGateStarted { tasks: usize },
    /// One run of the integration gate's verify command began.
    GateStepStarted {
        #[serde(flatten)]
        step: GateStep,
    },
    /// One run of the integration gate's verify command ended: `passed`, after `elapsed_ms`.
    GateStepEnded {
        #[serde(flatten)]
        step: GateStep,
        passed: bool,
        elapsed_ms: u64,
    },
    /// The integration gate ended: whether the handed-over integration passes its verify
    /// command, after how many runs of it, in how long (`elapsed_ms`, the whole gate).
    IntegrationVerified {
        passed: bool,
        verify_runs: u32,
        #[serde(default)]
        elapsed_ms: u64,
        /// Runs that failed and then passed (`verify_retries`, or a failure that bisection
        /// could not reproduce).
        #[serde(default, skip_serializing_if = "is_zero")]
        flaky: u32,
        /// Why the last failing run failed, from its output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The task's final outcome, with everything the report says about it (before
    /// integration: a verified task's status becomes `merged` or `conflict` later), and its
    /// state for `fanout resume` (`verified`, `no_changes`, `failed`, `interrupted`, …).
    TaskEnded {
        task: String,
        report: Box<TaskReport>,
        resume_state: String,
    },
    /// A warning for the user (run-wide when `task` is absent).
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        message: String,
    },
    /// The run is over; `report` is report.json.
    RunEnded { report: std::sync::Arc<RunReport> },
    // Candidates (best-of-N).
    /// A candidate of a task began: its own workspace on `branch`, its own `agent`.
    CandidateStarted {
        task: String,
        candidate: u32,
        agent: String,
        branch: String,
    },
    /// A candidate ended: `passed`, `stopped` or how it failed; its commit and size.
    CandidateEnded {
        task: String,
        candidate: u32,
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        insertions: usize,
        deletions: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        // Accounting (issue 23):
        /// What the candidate spent: its agent's turns and its judges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<crate::usage::Usage>,
    },
    /// The task's commit is this candidate's, for `reason`.
    CandidateSelected {
        task: String,
        candidate: u32,
        reason: String,
        /// What the review that chose spent (`select: "review"`), counted as the task's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<crate::usage::Usage>,
    },
    // Egress refusals (issue 19).
    /// The egress proxy refused a destination to a process of `task` in `phase` (`agent`,
    /// `setup`, `verify`); `port` is 0 when the request named none.
    EgressRefused {
        task: String,
        phase: String,
        host: String,
        port: u16,
        reason: String,
    },
}

fn first_round() -> u32 {
    1
}

/// What one run of the integration gate's verify command checks.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateStepKind {
    /// The whole integration (of the tasks still in).
    Full,
    /// A bisection step: the first `prefix` tasks in merge order.
    Bisect,
    /// The failing prefix once more, before a task is blamed.
    Confirm,
    /// The base commit, with no task: whether the command fails without any.
    Base,
}

impl GateStepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GateStepKind::Full => "full",
            GateStepKind::Bisect => "bisect",
            GateStepKind::Confirm => "confirm",
            GateStepKind::Base => "base",
        }
    }
}

/// One run of the integration gate's verify command (`gate_step_started`/`_ended`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct GateStep {
    /// Which run of the verify command this is in the gate (1, 2, …; `run` is the run's id).
    pub verify_run: u32,
    pub kind: GateStepKind,
    /// Bisection steps: this is step `step` of (at most) `steps` of the current search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// The tasks checked: the first `prefix` of the `tasks` still in, in merge order.
    pub prefix: usize,
    pub tasks: usize,
}

impl GateStep {
    /// What it checks, for people: `bisect step 2/4: first 7 of 12 tasks`.
    pub fn describe(&self) -> String {
        match self.kind {
            GateStepKind::Full => format!("integration gate: all {} task(s)", self.tasks),
            GateStepKind::Bisect => format!(
                "bisect step {}/{}: first {} of {} task(s)",
                self.step.unwrap_or(0),
                self.steps.unwrap_or(0),
                self.prefix,
                self.tasks
            ),
            GateStepKind::Confirm => format!(
                "integration gate: confirming the failure of the first {} of {} task(s)",
                self.prefix, self.tasks
            ),
            GateStepKind::Base => "integration gate: the base commit alone".into(),
        }
    }
}

impl Event {
    pub fn new(run: &str, kind: EventKind) -> Event {
        Event {
            v: EVENT_SCHEMA_VERSION,
            t_ms: now_ms(),
            run: run.to_string(),
            kind,
        }
    }

    /// The task the event is about, if any.
    pub fn task(&self) -> Option<&str> {
        use EventKind::*;
        match &self.kind {
            TaskQueued { task, .. }
            | TaskStarted { task, .. }
            | WorkspaceReady { task, .. }
            | AgentStarted { task, .. }
            | Phase { task, .. }
            | AgentEvent { task, .. }
            | AttemptEnded { task, .. }
            | GatePassed { task, .. }
            | GateFailed { task, .. }
            | Diagnosis { task, .. }
            | Committed { task, .. }
            | Merged { task, .. }
            | Conflict { task, .. }
            | ConflictRetry { task, .. }
            | RoundStarted { task, .. }
            | Ejected { task, .. }
            | Repaired { task, .. }
            | TaskEnded { task, .. }
            | CandidateStarted { task, .. }
            | CandidateEnded { task, .. }
            | CandidateSelected { task, .. }
            | EgressRefused { task, .. } => Some(task),
            Warning { task, .. } => task.as_deref(),
            RunStarted { .. }
            | Overlap { .. }
            | IntegrationStarted { .. }
            | IntegrationGateStarted { .. }
            | GateStepStarted { .. }
            | GateStepEnded { .. }
            | IntegrationVerified { .. }
            | RunEnded { .. } => None,
        }
    }

    /// The event's name (`task_ended`).
    pub fn name(&self) -> &'static str {
        use EventKind::*;
        match &self.kind {
            RunStarted { .. } => "run_started",
            TaskQueued { .. } => "task_queued",
            TaskStarted { .. } => "task_started",
            WorkspaceReady { .. } => "workspace_ready",
            AgentStarted { .. } => "agent_started",
            Phase { .. } => "phase",
            AgentEvent { .. } => "agent_event",
            AttemptEnded { .. } => "attempt_ended",
            GatePassed { .. } => "gate_passed",
            GateFailed { .. } => "gate_failed",
            Diagnosis { .. } => "diagnosis",
            Committed { .. } => "committed",
            IntegrationStarted { .. } => "integration_started",
            Merged { .. } => "merged",
            Conflict { .. } => "conflict",
            ConflictRetry { .. } => "conflict_retry",
            Overlap { .. } => "overlap",
            RoundStarted { .. } => "round_started",
            Ejected { .. } => "ejected",
            Repaired { .. } => "repaired",
            IntegrationGateStarted { .. } => "integration_gate_started",
            GateStepStarted { .. } => "gate_step_started",
            GateStepEnded { .. } => "gate_step_ended",
            IntegrationVerified { .. } => "integration_verified",
            TaskEnded { .. } => "task_ended",
            Warning { .. } => "warning",
            RunEnded { .. } => "run_ended",
            CandidateStarted { .. } => "candidate_started",
            CandidateEnded { .. } => "candidate_ended",
            CandidateSelected { .. } => "candidate_selected",
            EgressRefused { .. } => "egress_refused",
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Gate events for one attempt's results, in gate order.
pub fn gate_events(task: &str, attempt: u32, gates: &[GateResult]) -> Vec<EventKind> {
    gates
        .iter()
        .map(|g| {
            if g.passed {
                EventKind::GatePassed {
                    task: task.into(),
                    attempt,
                    gate: g.gate.clone(),
                    flaky: g.flaky,
                    detail: g.flaky.then(|| g.detail.clone()).flatten(),
                }
            } else {
                EventKind::GateFailed {
                    task: task.into(),
                    attempt,
                    gate: g.gate.clone(),
                    detail: g.detail.clone().unwrap_or_else(|| g.gate.clone()),
                }
            }
        })
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why an output stopped.
#[derive(Debug, thiserror::Error)]
#[error("{output}: {message}")]
pub struct OutputError {
    pub output: String,
    pub message: String,
}

impl OutputError {
    pub fn new(output: &str, e: impl std::fmt::Display) -> OutputError {
        OutputError {
            output: output.into(),
            message: e.to_string(),
        }
    }
}

/// One consumer of the event stream.
pub trait Output: Send {
    /// Its name in error messages (`--junit report.xml`).
    fn name(&self) -> String;
    fn event(&mut self, event: &Event) -> Result<(), OutputError>;
    /// Called a few times a second while the run goes on (live displays redraw).
    fn tick(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// Hands every event to every output. An output that fails is dropped (and its error kept):
/// the run is cancelled by the caller, the other outputs keep reporting.
#[derive(Default)]
pub struct Reporter {
    outputs: Vec<Box<dyn Output>>,
    failures: Vec<OutputError>,
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter::default()
    }

    pub fn add(&mut self, output: Box<dyn Output>) {
        self.outputs.push(output);
    }

    /// Emits one event; returns the errors of outputs that failed on it.
    pub fn emit(&mut self, event: &Event) -> Vec<OutputError> {
        self.each(|o| o.event(event))
    }

    /// Lets live outputs redraw; returns the errors of outputs that failed.
    pub fn tick(&mut self) -> Vec<OutputError> {
        self.each(|o| o.tick())
    }

    /// Calls `f` on every output; one that fails is dropped and its error kept.
    fn each(
        &mut self,
        mut f: impl FnMut(&mut dyn Output) -> Result<(), OutputError>,
    ) -> Vec<OutputError> {
        let mut failed = Vec::new();
        let mut i = 0;
        while i < self.outputs.len() {
            match f(self.outputs[i].as_mut()) {
                Ok(()) => i += 1,
                Err(e) => {
                    self.outputs.remove(i);
                    failed.push(OutputError::new(&e.output, &e.message));
                    self.failures.push(e);
                }
            }
        }
        failed
    }

    /// Every output failure so far.
    pub fn failures(&self) -> &[OutputError] {
        &self.failures
    }
}

/// What the events of one run add up to: the view JUnit, HTML and `fanout report` render.
#[derive(Clone, Debug, Default)]
pub struct RunView {
    pub run: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub tasks: Vec<TaskView>,
    pub report: Option<RunReport>,
    pub warnings: Vec<String>,
    /// The integration gate, from its start to its end (`integration_verified`).
    pub gate: Option<Span>,
    /// Each run of the gate's verify command (the full integration, bisection steps, …).
    pub gate_steps: Vec<Span>,
}

/// Something of the run that took time, for timelines.
#[derive(Clone, Debug, Default)]
pub struct Span {
    pub label: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub passed: Option<bool>,
}

/// One round of a task: its first run, or a run again after a conflict.
#[derive(Clone, Debug, Default)]
pub struct RoundView {
    pub round: u32,
    pub slot: usize,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// How the round's pipeline ended (`verified`, `failed`, …).
    pub outcome: Option<String>,
}

/// One task in a [`RunView`].
#[derive(Clone, Debug, Default)]
pub struct TaskView {
    pub id: String,
    pub slot: Option<usize>,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub status: Option<TaskStatus>,
    pub report: Option<TaskReport>,
    /// Each time it ran (one, unless it ran again after a conflict).
    pub rounds: Vec<RoundView>,
}

impl RunView {
    /// Adds one event.
    pub fn apply(&mut self, e: &Event) {
        if self.run.is_empty() {
            self.run = e.run.clone();
            self.started_ms = e.t_ms;
        }
        match &e.kind {
            EventKind::RunStarted { tasks, .. } => {
                self.started_ms = e.t_ms;
                for t in tasks {
                    self.task_mut(t);
                }
            }
            EventKind::TaskStarted { task, slot, round } => {
                let t = self.task_mut(task);
                t.slot = Some(*slot);
                t.started_ms.get_or_insert(e.t_ms);
                t.rounds.push(RoundView {
                    round: *round,
                    slot: *slot,
                    started_ms: e.t_ms,
                    ..RoundView::default()
                });
            }
            EventKind::TaskEnded {
                task,
                report,
                resume_state,
            } => {
                let t = self.task_mut(task);
                t.ended_ms = Some(e.t_ms);
                t.status = Some(report.status);
                t.report = Some((**report).clone());
                if let Some(r) = t.rounds.last_mut().filter(|r| r.ended_ms.is_none()) {
                    r.ended_ms = Some(e.t_ms);
                    r.outcome = Some(resume_state.clone());
                }
            }
            EventKind::IntegrationGateStarted { tasks } => {
                self.gate = Some(Span {
                    label: format!("integration gate ({tasks} task(s))"),
                    started_ms: e.t_ms,
                    ..Span::default()
                });
            }
            EventKind::GateStepStarted { step } => self.gate_steps.push(Span {
                label: step.describe(),
                started_ms: e.t_ms,
                ..Span::default()
            }),
            EventKind::GateStepEnded { passed, .. } => {
                if let Some(s) = self.gate_steps.last_mut() {
                    s.ended_ms = Some(e.t_ms);
                    s.passed = Some(*passed);
                }
            }
            EventKind::IntegrationVerified { passed, .. } => {
                if let Some(g) = &mut self.gate {
                    g.ended_ms = Some(e.t_ms);
                    g.passed = Some(*passed);
                }
            }
            EventKind::Merged { task, .. } => {
                let t = self.task_mut(task);
                t.status = Some(TaskStatus::Merged);
                if let Some(r) = &mut t.report {
                    r.status = TaskStatus::Merged;
                }
            }
            EventKind::Conflict { task, .. } => {
                let t = self.task_mut(task);
                t.status = Some(TaskStatus::Conflict);
                if let Some(r) = &mut t.report {
                    r.status = TaskStatus::Conflict;
                }
            }
            EventKind::Ejected { task, .. } => {
                let t = self.task_mut(task);
                t.status = Some(TaskStatus::IntegrationFailed);
                if let Some(r) = &mut t.report {
                    r.status = TaskStatus::IntegrationFailed;
                }
            }
            EventKind::Repaired { task, .. } => {
                let t = self.task_mut(task);
                t.status = Some(TaskStatus::Merged);
                if let Some(r) = &mut t.report {
                    r.status = TaskStatus::Merged;
                }
            }
            EventKind::Warning { task, message } => self.warnings.push(match task {
                Some(t) => format!("{t}: {message}"),
                None => message.clone(),
            }),
            EventKind::RunEnded { report } => {
                self.ended_ms = Some(e.t_ms);
                // The final report is the truth for every task's status.
                for tr in &report.tasks {
                    let t = self.task_mut(&tr.id);
                    t.status = Some(tr.status);
                    t.report = Some(tr.clone());
                }
                self.report = Some((**report).clone());
            }
            _ => {}
        }
    }

    fn task_mut(&mut self, id: &str) -> &mut TaskView {
        if let Some(i) = self.tasks.iter().position(|t| t.id == id) {
            return &mut self.tasks[i];
        }
        self.tasks.push(TaskView {
            id: id.to_string(),
            ..TaskView::default()
        });
        let last = self.tasks.len() - 1;
        &mut self.tasks[last]
    }
}

/// The JSON Schema (draft 2020-12) of one event line (`fanout schema events`).
pub fn schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Event)).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "title".into(),
            serde_json::Value::String(format!("fanout event, version {EVENT_SCHEMA_VERSION}")),
        );
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_their_name_as_tag() {
        let e = Event::new(
            "r1",
            EventKind::GateFailed {
                task: "t".into(),
                attempt: 1,
                gate: "scope".into(),
                detail: "outside".into(),
            },
        );
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"event\":\"gate_failed\""), "{text}");
        assert!(text.contains("\"v\":1"), "{text}");
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.task(), Some("t"));
        assert_eq!(back.name(), "gate_failed");
    }

    struct Failing;
    impl Output for Failing {
        fn name(&self) -> String {
            "failing".into()
        }
        fn event(&mut self, _: &Event) -> Result<(), OutputError> {
            Err(OutputError::new("failing", "disk full"))
        }
    }
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Output for Counting {
        fn name(&self) -> String {
            "counting".into()
        }
        fn event(&mut self, _: &Event) -> Result<(), OutputError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_is_dropped_and_the_others_keep_reporting() {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut r = Reporter::new();
        r.add(Box::new(Failing));
        r.add(Box::new(Counting(n.clone())));
        let e = Event::new("r", EventKind::IntegrationStarted { ready: 1 });
        assert_eq!(r.emit(&e).len(), 1);
        assert!(r.emit(&e).is_empty());
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(r.failures().len(), 1);
    }
}
