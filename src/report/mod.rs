/*!
What a run produced, as data: the per-task outcome and the run summary, written as
`report.json` (schema version 1), shown as the terminal table, and kept in the run folder.
The wire types here carry no logic; the runner fills them.
*/

pub mod table;

use serde::{Deserialize, Serialize};

use crate::agent::AgentInfo;
use crate::git::collect::FileChange;
pub use crate::usage::Usage;

/// Final state of a task.
#[derive(schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Merged,
    Conflict,
    NoChanges,
    Failed,
    TimedOut,
    VerifyFailed,
    Skipped,
    /// Merged, then taken out again: the integration gate found that it breaks the
    /// integration result.
    IntegrationFailed,
    /// Cut off by a stop request (Ctrl-C, SIGTERM, `fanout_cancel`) before it ended or was
    /// integrated: `fanout resume` continues it (a verified commit is kept for that).
    Interrupted,
    // Budgets (issue 23):
    /// Stopped because it spent its task budget (`budget.task`): its work so far is committed
    /// on its branch, not merged.
    BudgetExceeded,
    // Shards (`fanout combine`):
    /// Its shard handed nothing over (`fanout combine`): it never ran here.
    Missing,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Merged => "merged",
            TaskStatus::Conflict => "conflict",
            TaskStatus::NoChanges => "no_changes",
            TaskStatus::Failed => "failed",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::VerifyFailed => "verify_failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::IntegrationFailed => "integration_failed",
            TaskStatus::Interrupted => "interrupted",
            TaskStatus::BudgetExceeded => "budget_exceeded",
            TaskStatus::Missing => "missing",
        }
    }

    /// Statuses that let the run exit 0.
    pub fn is_success(self) -> bool {
        matches!(self, TaskStatus::Merged | TaskStatus::NoChanges)
    }
}

/// One verification gate's result.
#[derive(schemars::JsonSchema, Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GateResult {
    /// `scope`, `command` or `readback`.
    pub gate: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The end of the command's stdout (of its stderr too, for gates other than `command`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The end of the command's stderr, kept apart from its stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Passed only when run again after failing (`verify_retries`): `detail` says how.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flaky: bool,
}

impl GateResult {
    /// The gate's output for a human: stdout, then stderr under a marker.
    pub fn both_outputs(&self) -> Option<String> {
        match (&self.output, &self.stderr) {
            (None, None) => None,
            (o, e) => Some(both_streams(
                o.as_deref().unwrap_or(""),
                e.as_deref().unwrap_or(""),
            )),
        }
    }
}

/// stdout, then stderr under a `--- stderr ---` line (each may be empty).
pub fn both_streams(stdout: &str, stderr: &str) -> String {
    match (stdout.is_empty(), stderr.is_empty()) {
        (_, true) => stdout.to_string(),
        (true, false) => format!("--- stderr ---\n{stderr}"),
        (false, false) => format!("{stdout}\n--- stderr ---\n{stderr}"),
    }
}

/// One attempt of the agent at the task (the first prompt, then each feedback round).
#[derive(schemars::JsonSchema, Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AttemptReport {
    pub number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub gates: Vec<GateResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Claude Code's root-cause diagnosis of the failure, sent with the feedback
    /// (`defaults.diagnose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    // Accounting (issue 23):
    /// What this attempt spent: the agent's turn and the judges (review, diagnosis) of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Result of reading a task's files back through the verifier.
#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReadbackReport {
    /// `passed`, `failed`, or `skipped (<why>)`.
    pub result: String,
    pub files_read: usize,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_binary: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<String>,
    /// Text files not compared, each `path: why` (symbolic links, submodules, types the
    /// verifier does not show as text, lines longer than it can show).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Deleted (or renamed-from) paths confirmed unreadable.
    #[serde(default)]
    pub deleted_checked: usize,
}

/// The run's verifier process, for the report.
#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VerifierSummary {
    /// The program that was started (resolved path).
    pub command: String,
    pub args: Vec<String>,
    pub tool: String,
    /// `serverInfo` of its `initialize` answer.
    pub server: Option<String>,
    pub version: Option<String>,
    /// Process id of the last start (gone after the run).
    pub pid: Option<i32>,
    pub stderr_log: String,
    /// Tool calls made.
    pub calls: u64,
    /// Restarts after it died or hung.
    pub restarts: u32,
}

// Egress refusals (issue 19): what a task's processes asked the egress proxy for and were
// refused, once per phase and destination.
/// One destination the egress proxy refused a task, with how often.
#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EgressRefusal {
    /// `agent`, `setup` or `verify`.
    pub phase: String,
    /// The host asked for (or the request line, when it named none).
    pub host: String,
    /// 0 when the request named no port.
    pub port: u16,
    pub reason: String,
    /// How many times it was refused.
    pub count: u32,
}

impl EgressRefusal {
    /// `host:port` (or what was asked, when it named no port).
    pub fn destination(&self) -> String {
        match self.port {
            0 => self.host.clone(),
            p if self.host.contains(':') => format!("[{}]:{p}", self.host),
            p => format!("{}:{p}", self.host),
        }
    }

    /// The line the terminal summary and the HTML page show.
    pub fn line(&self) -> String {
        let times = if self.count > 1 {
            format!(" ({} times)", self.count)
        } else {
            String::new()
        };
        format!(
            "network refused: {} → {}{times} — allow it with network.{}",
            self.phase,
            self.destination(),
            self.phase
        )
    }
}

#[derive(schemars::JsonSchema, Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TaskReport {
    pub id: String,
    pub status: TaskStatus,
    pub agent_name: String,
    /// The task branch (kept for merged and conflicting tasks; deleted when it holds nothing).
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// The commit the task started from (the base, or an integration of its dependencies).
    pub started_from: Option<String>,
    pub files: Vec<String>,
    pub changes: Vec<FileChange>,
    pub insertions: usize,
    pub deletions: usize,
    /// Run time: from getting a job slot to the end (0 when it never got one).
    pub duration_ms: u64,
    /// Time before that: waiting for dependencies and for a free slot (`--jobs`).
    pub queued_ms: u64,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflict_paths: Vec<String>,
    /// How many times the agent was prompted (the first prompt plus feedback rounds).
    pub attempts: usize,
    /// Each attempt: its commit, its gate results and why it failed.
    pub attempt_history: Vec<AttemptReport>,
    pub verify: Vec<GateResult>,
    pub readback: Option<Box<ReadbackReport>>,
    /// Landlock status of the agent: fully_enforced, partially_enforced, not_enforced or off.
    pub sandbox: String,
    pub sandbox_abi: Option<u32>,
    /// What confined the agent's network: `namespace`, `landlock-ports` or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub agent: AgentInfo,
    pub patch: Option<String>,
    pub event_log: Option<String>,
    pub stderr_log: Option<String>,
    /// A workspace kept because the agent's work in it could not be committed (collect failed):
    /// nothing removes it; `fanout collect RUN TASK` commits it again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Changes that deserve a human look (see docs/verify.md); unless the task's `paths` name
    /// them explicitly they also fail the scope gate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub risky: Vec<crate::git::risky::RiskyChange>,
    /// Egress refusals (issue 19): destinations the egress proxy refused the task's
    /// processes, deduplicated per phase and destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_refused: Vec<EgressRefusal>,
    /// When it got a job slot, in ms since the Unix epoch (its last round's, when it ran again;
    /// 0 when it never got one).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub started_ms: u64,
    /// A task that ran again after a conflict (`--on-conflict retry`): every round, the first
    /// run included, in order; the last one is the run the rest of this report is about.
    /// Empty when it ran once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<RoundReport>,
    // Accounting (issue 23):
    /// What the task spent, every attempt and round, its agent and its judges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Box<Usage>>,
    // Candidates (best-of-N).
    /// Every candidate of a task with `candidates`, in order (empty without candidates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateReport>,
    /// The candidate whose commit is the task's (1, 2, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<u32>,
    /// What the review that chose among the candidates spent (`select: "review"`); the task's
    /// `usage` counts it with its candidates'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_usage: Option<Box<Usage>>,
    // Integration repair (issue 21): the integration gate took the task out, and its repair
    // round `round` got it merged again (the gate's earlier `ejected` is not its outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repaired>,
    // Shards (`fanout combine`):
    /// The shard the task ran in (`K/N`), in a combined run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The machine its shard ran on, in a combined run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The repair round that got a task the integration gate took out merged again.
#[derive(schemars::JsonSchema, Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Repaired {
    /// The task's round (as in `rounds`) whose fix passed.
    pub round: u32,
    /// The commit of its change and fix that was merged (one commit, the fix's tree).
    pub commit: String,
}

// Candidates (best-of-N).
/// One candidate of a task: its own workspace, branch, agent and gates, and why it was or was
/// not chosen.
#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CandidateReport {
    /// 1, 2, … (`FANOUT_CANDIDATE` in its agent's environment).
    pub candidate: u32,
    pub agent_name: String,
    /// `fanout/<run>/task/<id>/candidate-<k>`.
    pub branch: Option<String>,
    /// `passed`, `stopped` (another candidate passed first), or how it failed (`verify_failed`,
    /// `failed`, `timed_out`, `no_changes`, `interrupted`).
    pub status: String,
    pub commit: Option<String>,
    pub files: Vec<String>,
    pub insertions: usize,
    pub deletions: usize,
    pub duration_ms: u64,
    /// How many times its agent was prompted.
    pub attempts: usize,
    /// Its last attempt's gates.
    pub gates: Vec<GateResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its commit is the task's.
    pub chosen: bool,
    /// Why it was chosen, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub patch: Option<String>,
    pub event_log: Option<String>,
    pub stderr_log: Option<String>,
    /// What its agent reported: protocol, thread, tokens (its cost).
    pub agent: AgentInfo,
    // Accounting (issue 23):
    /// What it spent: its agent's turns and its judges (also when it was stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl CandidateReport {
    /// Changed lines: what `select: "smallest"` compares.
    pub fn size(&self) -> usize {
        self.insertions + self.deletions
    }
}

/// One round of a task: its first run, or a run again from the integration after a conflict.
#[derive(schemars::JsonSchema, Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoundReport {
    /// 1 for the first run, then 2, 3, …
    pub round: u32,
    /// When it got a job slot (ms since the Unix epoch).
    pub started_ms: u64,
    pub duration_ms: u64,
    /// How the round ended: `conflict` for each round that was run again; the last round's
    /// is the task's status.
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// What it conflicted in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflict_paths: Vec<String>,
    /// How many times the agent was prompted in this round.
    #[serde(default)]
    pub attempts: usize,
    // Visible rounds (issue 21): what kind of round it was and what caused it.
    #[serde(default)]
    pub kind: RoundKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// Visible rounds (issue 21): what made a round of a task.
#[derive(
    schemars::JsonSchema, Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum RoundKind {
    /// The task's first run.
    #[default]
    Agent,
    /// A turn after a failed gate.
    Feedback,
    /// Run again in a fresh session after a conflict (`--on-conflict retry`).
    Retry,
    /// Given back to its agent to resolve a conflict (`--on-conflict resolve`).
    Resolve,
    /// Given back to its agent to fix a failing integration gate (`integrate.repair`).
    Repair,
}

impl RoundKind {
    /// Its name, as in report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            RoundKind::Agent => "agent",
            RoundKind::Feedback => "feedback",
            RoundKind::Retry => "retry",
            RoundKind::Resolve => "resolve",
            RoundKind::Repair => "repair",
        }
    }
}

impl Default for TaskReport {
    fn default() -> Self {
        TaskReport::new("", "")
    }
}

impl TaskReport {
    /// Gives back the spare capacity of its lists once the task ended: a list grown by one
    /// push holds room for four, and a run keeps every report to its end.
    pub fn shrink_to_fit(&mut self) {
        self.files.shrink_to_fit();
        self.changes.shrink_to_fit();
        self.conflict_paths.shrink_to_fit();
        self.attempt_history.shrink_to_fit();
        for a in &mut self.attempt_history {
            a.gates.shrink_to_fit();
        }
        self.verify.shrink_to_fit();
        self.risky.shrink_to_fit();
        self.egress_refused.shrink_to_fit();
        self.rounds.shrink_to_fit();
        for r in &mut self.rounds {
            r.conflict_paths.shrink_to_fit();
        }
        self.candidates.shrink_to_fit();
    }

    /// Its status for people, with the round it ended in when it ran more than once and
    /// whether a gate passed only when run again (`merged (round 2, flaky)`).
    pub fn status_text(&self) -> String {
        let mut notes = Vec::new();
        if let Some(r) = &self.repaired {
            notes.push(format!("repaired in round {}", r.round));
        } else if let Some(last) = self.rounds.last().filter(|_| self.rounds.len() > 1) {
            notes.push(format!("round {}", last.round));
        }
        if self.verify.iter().any(|g| g.flaky) {
            notes.push("flaky".to_string());
        }
        match notes.is_empty() {
            true => self.status.as_str().to_string(),
            false => format!("{} ({})", self.status.as_str(), notes.join(", ")),
        }
    }

    /// Whether a budget stopped it or kept it from starting (issue 23).
    pub fn stopped_by_budget(&self) -> bool {
        self.status == TaskStatus::BudgetExceeded
            || self.status == TaskStatus::Skipped
                && self
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("run budget spent"))
    }

    pub fn new(id: &str, agent_name: &str) -> TaskReport {
        TaskReport {
            id: id.into(),
            status: TaskStatus::Failed,
            agent_name: agent_name.into(),
            branch: None,
            commit: None,
            started_from: None,
            files: Vec::new(),
            changes: Vec::new(),
            insertions: 0,
            deletions: 0,
            duration_ms: 0,
            queued_ms: 0,
            error: None,
            conflict_paths: Vec::new(),
            attempts: 0,
            attempt_history: Vec::new(),
            verify: Vec::new(),
            readback: None,
            sandbox: "not_started".into(),
            sandbox_abi: None,
            network: None,
            agent: AgentInfo::default(),
            patch: None,
            event_log: None,
            stderr_log: None,
            workspace: None,
            risky: Vec::new(),
            started_ms: 0,
            rounds: Vec::new(),
            usage: None,
            candidates: Vec::new(),
            candidate: None,
            select_usage: None,
            repaired: None,
            shard: None,
            host: None,
            // Egress refusals (issue 19).
            egress_refused: Vec::new(),
        }
    }
}

#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SandboxSummary {
    /// `landlock` or `off`.
    pub mode: String,
    pub kernel_abi: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Whether fanout itself ran as root (effective uid 0).
    #[serde(default)]
    pub root: bool,
    /// Who agents ran as when fanout was root, e.g. `uid 65534 (nobody), gid 65534`, with no
    /// capabilities; absent when agents ran as the invoker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_user: Option<String>,
    /// What the run asked to confine the network with: `namespace` (`--net isolated`; a task
    /// that could not get one says `landlock-ports` in its own `network`), `landlock-ports`
    /// or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// The kind of task workspace a run used (`--workspace`), and why: docs/workspaces.md.
#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspaceSummary {
    /// `overlay` or `worktree`.
    pub mode: String,
    pub reason: String,
    /// Worktree mode: how many tasks ran in a worktree reused from an earlier task (reset
    /// in the sandbox) instead of a new checkout.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reused: usize,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RunReport {
    pub schema_version: u32,
    pub run_id: String,
    pub repo: String,
    pub base: String,
    pub base_rev: String,
    pub integration_branch: String,
    pub integration_commit: String,
    pub run_dir: String,
    pub interrupted: bool,
    /// The signal that stopped the run, in words (`terminated (SIGTERM)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_by: Option<String>,
    pub sandbox: SandboxSummary,
    /// The kind of task workspace the run used, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSummary>,
    /// The read-back verifier, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifier: Option<VerifierSummary>,
    pub duration_ms: u64,
    pub counts: std::collections::BTreeMap<String, usize>,
    pub tasks: Vec<TaskReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Outputs that failed (`--junit PATH: …`): the run was stopped and exits non-zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_failures: Vec<String>,
    /// The integration gate (`integrate` in the task file), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<IntegrationReport>,
    // Accounting (issue 23):
    /// What the run spent: every task's usage summed (a task's counts its rounds, its
    /// candidates and the review that chose among them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What the integration gate did.
#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct IntegrationReport {
    /// How many times the verify command ran (the full integration, bisection steps, rechecks).
    pub verify_runs: u32,
    /// Tasks taken out because they broke the integration, in the order they were found.
    pub ejected: Vec<String>,
    /// Whether the integration branch handed over passed the verify command.
    pub passed: bool,
    /// Runs of the verify command that failed and then passed (a flaky command): run again
    /// by `integrate.verify_retries`, or a failure bisection could not reproduce. Nobody was
    /// taken out for them.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub flaky: u32,
    /// Why the last failing run failed, in one line: its exit and the test runner's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The end of the last verify run's output (or why the gate could not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl RunReport {
    /// 0 when every task merged or had nothing to change, 3 when a budget stopped a task or
    /// kept one from starting, 1 otherwise, 130 when interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            crate::exit::INTERRUPTED
        } else if self.tasks.iter().any(TaskReport::stopped_by_budget) {
            crate::exit::BUDGET_SPENT
        } else if self.output_failures.is_empty()
            && self.integration.as_ref().is_none_or(|i| i.passed)
            && self.tasks.iter().all(|t| t.status.is_success())
        {
            crate::exit::OK
        } else {
            crate::exit::TASKS_FAILED
        }
    }
}

/// Writes `value` as pretty JSON to `path` atomically (temp file + fsync + rename), secrets masked.
///
/// The JSON is streamed to the file, never held whole in memory: a 10 000-task report is tens
/// of megabytes of text.
pub fn write_json_atomic<T: Serialize>(path: &std::path::Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut out = RedactLines::new(std::io::BufWriter::new(tmp.as_file_mut()));
        serde_json::to_writer_pretty(&mut out, value)?;
        out.write_all(b"\n")?;
        out.finish()?;
    }
    readable(tmp.as_file())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `text` to `path` atomically (temp file + fsync + rename), secrets masked.
pub fn write_text_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(crate::redact::redact(text).as_bytes())?;
    readable(tmp.as_file())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A writer that masks secrets line by line. Serialized JSON has raw newlines only between
/// tokens (inside strings they are escaped), so no secret that can appear in it spans a line
/// break, and masking each line is masking the whole text.
struct RedactLines<W: std::io::Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: std::io::Write> RedactLines<W> {
    fn new(inner: W) -> Self {
        RedactLines {
            inner,
            pending: Vec::new(),
        }
    }

    fn emit(&mut self, upto: usize) -> std::io::Result<()> {
        let text = crate::redact::redact_bytes(&self.pending[..upto]);
        self.inner.write_all(&text)?;
        drop(text);
        self.pending.drain(..upto);
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.emit(self.pending.len())?;
        self.inner.flush()
    }
}

impl<W: std::io::Write> std::io::Write for RedactLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        // Whole lines in batches of at least 64 KiB.
        if self.pending.len() >= 64 * 1024 {
            if let Some(nl) = self.pending.iter().rposition(|&b| b == b'\n') {
                self.emit(nl + 1)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Partial lines stay until they are complete (or `finish`).
        self.inner.flush()
    }
}

/// Reports are for people and CI to read: `rw-r--r--`, not the temp file's `rw-------`.
fn readable(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_json_is_whole_and_masked_across_batches() {
        crate::redact::register("streamed-secret-42");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let value: Vec<String> = (0..20_000)
            .map(|i| format!("line {i} streamed-secret-42 end"))
            .collect();
        write_json_atomic(&path, &value).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("streamed-secret-42"));
        let back: Vec<String> = serde_json::from_str(&text).unwrap();
        assert_eq!(back.len(), 20_000);
        assert_eq!(back[12_345], "line 12345 [redacted] end");
        assert!(text.ends_with("]\n"));
    }
}
