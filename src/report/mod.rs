/*!
What a run produced, as data: the per-task outcome and the run summary, written as
`report.json` (schema version 1), shown as the terminal table, and kept in the run folder.
The wire types here carry no logic; the runner fills them.
*/

pub mod table;

use serde::{Deserialize, Serialize};

use crate::agent::AgentInfo;
use crate::git::collect::FileChange;

/// Final state of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Merged,
    Conflict,
    NoChanges,
    Failed,
    TimedOut,
    VerifyFailed,
    Skipped,
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
        }
    }

    /// Statuses that let the run exit 0.
    pub fn is_success(self) -> bool {
        matches!(self, TaskStatus::Merged | TaskStatus::NoChanges)
    }
}

/// One verification gate's result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GateResult {
    /// `scope`, `command` or `readback`.
    pub gate: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// One attempt of the agent at the task (the first prompt, then each feedback round).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AttemptReport {
    pub number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub gates: Vec<GateResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Result of reading a task's files back through the verifier.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
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
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
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

#[derive(Clone, Debug, Serialize)]
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
    pub duration_ms: u64,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflict_paths: Vec<String>,
    /// How many times the agent was prompted (the first prompt plus feedback rounds).
    pub attempts: usize,
    /// Each attempt: its commit, its gate results and why it failed.
    pub attempt_history: Vec<AttemptReport>,
    pub verify: Vec<GateResult>,
    pub readback: Option<ReadbackReport>,
    /// Landlock status of the agent: fully_enforced, partially_enforced, not_enforced or off.
    pub sandbox: String,
    pub sandbox_abi: Option<u32>,
    pub agent: AgentInfo,
    pub patch: Option<String>,
    pub event_log: Option<String>,
    pub stderr_log: Option<String>,
    /// The task's workspace, kept because its work could not be committed (never removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

impl TaskReport {
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
            error: None,
            conflict_paths: Vec::new(),
            attempts: 0,
            attempt_history: Vec::new(),
            verify: Vec::new(),
            readback: None,
            sandbox: "not_started".into(),
            sandbox_abi: None,
            agent: AgentInfo::default(),
            patch: None,
            event_log: None,
            stderr_log: None,
            workspace: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SandboxSummary {
    /// `landlock` or `off`.
    pub mode: String,
    pub kernel_abi: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
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
    pub sandbox: SandboxSummary,
    /// The read-back verifier, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifier: Option<VerifierSummary>,
    pub duration_ms: u64,
    pub counts: std::collections::BTreeMap<String, usize>,
    pub tasks: Vec<TaskReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl RunReport {
    /// 0 when every task merged or had nothing to change, 1 otherwise, 130 when interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else if self.tasks.iter().all(|t| t.status.is_success()) {
            0
        } else {
            1
        }
    }
}

/// Writes `value` as pretty JSON to `path` atomically (temp file + fsync + rename), secrets masked.
pub fn write_json_atomic<T: Serialize>(path: &std::path::Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let text = serde_json::to_string_pretty(value)?;
    tmp.write_all(crate::redact::redact(&text).as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
