//! What every agent session shares: what it starts from, how it fails, what it reports, and
//! the helpers of the JSON-RPC sessions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::eventlog::EventLog;
use crate::ids::TaskId;
use crate::process::SpawnSpec;
use crate::sandbox::SandboxReport;
use crate::taskfile::{AgentProfile, Protocol};

/// Everything an agent session needs to start.
#[derive(Clone)]
pub struct AgentContext {
    pub task_id: TaskId,
    pub worktree: PathBuf,
    /// The task's private scratch folder (TMPDIR, caches, CODEX_HOME).
    pub scratch: PathBuf,
    /// The profile, with `env` already expanded.
    pub profile: AgentProfile,
    pub protocol: Protocol,
    /// The Codex installation the plan found for this profile (`None`: not Codex, or found
    /// when the session starts).
    pub codex: Option<crate::agent::codex::error::Installed>,
    pub events: EventLog,
    /// How to start the process (program/args/env filled from the profile by the caller).
    pub spawn: SpawnSpec,
    /// Threads that outlive their process (issue 21): the thread of the task's earlier round,
    /// continued where the protocol allows it (app-server `thread/resume`).
    pub resume_thread: Option<String>,
    /// Where the session reports what it has spent so far (issue 23: budgets).
    pub meter: crate::usage::meter::Meter,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start the agent: {0}")]
    Spawn(String),
    #[error("the sandbox was not enforced: {0}")]
    SandboxNotEnforced(String),
    #[error(
        "the agent did not finish starting (answer initialize and tools/list) within {0:.0} s{1}"
    )]
    StartupTimeout(f64, String),
    #[error("the agent did not finish within {0:.0} s; it was stopped")]
    Timeout(f64),
    #[error("the agent exited unexpectedly ({status}){}", stderr_hint(.stderr))]
    Crashed { status: String, stderr: String },
    #[error("the agent broke the protocol: {0}")]
    Protocol(String),
    #[error("the agent reported an error: {0}")]
    Reported(String),
}

fn stderr_hint(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(
            "; its stderr ends with: {}",
            crate::jsonrpc::truncate(stderr, 600)
        )
    }
}

impl AgentError {
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            AgentError::Timeout(_) | AgentError::StartupTimeout(..)
        )
    }
}

impl AgentInfo {
    /// Counts and logs a line that was not JSON-RPC (logged, never fatal).
    pub fn note_garbage(&mut self, events: &EventLog, line: String) {
        self.garbage_lines += 1;
        if self.first_garbage.is_none() {
            self.first_garbage = Some(crate::jsonrpc::truncate(&line, 200));
        }
        events.record("garbage", serde_json::json!({"line": line}));
    }

    /// " (it printed N lines that are not JSON-RPC, the first: …)" when it did.
    pub fn garbage_hint(&self) -> String {
        match (&self.first_garbage, self.garbage_lines) {
            (Some(first), n) if n > 0 => {
                format!("; it printed {n} line(s) that are not JSON-RPC, the first: {first:?}")
            }
            _ => String::new(),
        }
    }
}

/// What one turn produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TurnResult {
    /// The agent's final message, when it gave one.
    pub message: Option<String>,
}

/// Facts about the agent gathered during the session, for the report.
#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct AgentInfo {
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Boxed, as `usage`: only agents that report tokens have them (a report is kept per task
    /// for the whole run).
    pub tokens: Option<Box<TokenUsage>>,
    pub commands_run: u32,
    pub notifications: u64,
    pub garbage_lines: u64,
    /// The first line that was not JSON-RPC, cut short (for error messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_garbage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxReport>,
    /// Threads that outlive their process (issue 21): the session continued the thread of an
    /// earlier round (`thread_id` is that thread).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    // Accounting (issue 23):
    /// Every token the session spent so far, as the agent reported it (thread totals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Box<crate::usage::Usage>>,
    /// The model the agent said it used (for `pricing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

/// Grace period between SIGTERM and SIGKILL when stopping an agent.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Builds the environment fanout gives every agent on top of its own.
pub fn base_env(
    ctx_task: &TaskId,
    worktree: &std::path::Path,
    scratch: &std::path::Path,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("FANOUT_TASK_ID".into(), ctx_task.to_string());
    env.insert("FANOUT_WORKTREE".into(), worktree.display().to_string());
    env.insert("FANOUT_SCRATCH".into(), scratch.display().to_string());
    let tmp = scratch.join("tmp");
    env.insert("TMPDIR".into(), tmp.display().to_string());
    env
}

/// Reads the sandbox report the supervisor wrote, failing closed when it says "not enforced".
pub fn check_sandbox(
    status_file: &std::path::Path,
    info: &mut AgentInfo,
) -> Result<(), AgentError> {
    if let Ok(report) = crate::sandbox::read_report(status_file) {
        let not_enforced = report.status == crate::sandbox::EnforcementStatus::NotEnforced;
        let message = report.message.clone();
        info.sandbox = Some(report);
        if not_enforced {
            return Err(AgentError::SandboxNotEnforced(message.unwrap_or_else(
                || "Landlock is not available on this kernel".into(),
            )));
        }
    }
    Ok(())
}

/// The failure mapping shared by the JSON-RPC sessions (mcp, app-server): a timeout stops the
/// tree; a closed pipe becomes a crash with the exit status and the end of stderr (or the
/// sandbox's refusal); a JSON-RPC error becomes the agent's own report.
pub(crate) async fn rpc_failure(
    proc: &mut crate::process::AgentProcess,
    info: &mut AgentInfo,
    e: crate::jsonrpc::JsonRpcError,
    secs: f64,
    startup: bool,
) -> AgentError {
    use crate::jsonrpc::JsonRpcError;
    match e {
        JsonRpcError::Timeout { .. } => {
            proc.terminate(STOP_GRACE).await;
            if startup {
                AgentError::StartupTimeout(secs, info.garbage_hint())
            } else {
                AgentError::Timeout(secs)
            }
        }
        JsonRpcError::Closed(_) | JsonRpcError::Write(_) => {
            let status = proc
                .wait_until(Instant::now() + Duration::from_secs(3))
                .await;
            if let Err(sandbox) = check_sandbox(&proc.status_file, info) {
                proc.terminate(STOP_GRACE).await;
                return sandbox;
            }
            let status = match status {
                Some(s) => crate::process::describe_exit(&s),
                None => {
                    proc.terminate(STOP_GRACE).await;
                    "it closed its output but kept running".into()
                }
            };
            // Whatever a launcher wrapper did, leave nothing of the tree behind.
            proc.terminate(Duration::ZERO).await;
            AgentError::Crashed {
                status,
                stderr: proc.stderr_tail().await,
            }
        }
        JsonRpcError::Remote {
            method,
            message,
            code,
            ..
        } => {
            if startup {
                proc.terminate(STOP_GRACE).await;
            }
            if code == 0 {
                AgentError::Protocol(message)
            } else {
                AgentError::Reported(format!("{method}: {message} (error {code})"))
            }
        }
    }
}

/// Stdio shutdown once the session has no more work: close stdin and stop the tree at once.
/// No wait for a voluntary exit: Codex's app-server never makes one (each task lost ~1.5 s
/// in that wait, holding its slot), and collection needs the tree stopped anyway. A tree
/// that ignores SIGTERM is killed after the supervisor's grace, as before.
pub(crate) async fn rpc_shutdown(
    conn: &crate::jsonrpc::Connection,
    proc: &mut crate::process::AgentProcess,
) {
    conn.close_input().await;
    proc.terminate(STOP_GRACE).await;
}
