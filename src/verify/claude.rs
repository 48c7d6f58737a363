/*!
One question to Claude Code: `claude -p --output-format json`, started through the task's
sandbox spawn path (it may write only the worktree and the task's scratch folder), with
read-only tools. The review gate and diagnoses use it.

The prompt goes on stdin (a diff can be longer than an argument may be). Claude Code gets a
private `CLAUDE_CONFIG_DIR` in the task's scratch, the quiet settings of the `claude-code` MCP
server, and `ANTHROPIC_BASE_URL` / `ANTHROPIC_API_KEY` from fanout's environment; a non-443
endpoint port is opened in the sandbox.
*/

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::agent::mcp_servers::{CLAUDE_ENV, CLAUDE_PASS_THROUGH};
use crate::process::{describe_exit, AgentProcess, SpawnSpec};
use crate::sandbox::NetPolicy;

/// The most of Claude Code's answer that is kept.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("cannot start Claude Code ({program}): {detail}")]
    Start { program: String, detail: String },
    #[error("Claude Code did not answer within {0:.0} s")]
    Timeout(f64),
    #[error("Claude Code failed ({status}){}", tail_hint(.stderr))]
    Failed { status: String, stderr: String },
    #[error("Claude Code's answer is not its JSON result: {0}")]
    BadAnswer(String),
    #[error("Claude Code reported an error: {0}")]
    Reported(String),
}

fn tail_hint(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", crate::jsonrpc::truncate(stderr.trim(), 600))
    }
}

/// What to ask and how.
pub struct Question<'a> {
    /// The task's sandboxed spawn settings (policy, cwd = worktree, env, logs).
    pub spec: &'a SpawnSpec,
    /// The `claude` program (resolved on PATH when it has no `/`).
    pub claude: &'a str,
    /// Where Claude Code runs (the task's worktree) and keeps its config (the scratch folder).
    pub worktree: &'a Path,
    pub scratch: &'a Path,
    /// Names the config folder and logs apart (`review`, `diagnose`).
    pub purpose: &'a str,
    pub prompt: String,
    pub timeout: Duration,
}

/// Asks, and returns the text of Claude Code's result.
pub async fn ask(q: Question<'_>) -> Result<String, AskError> {
    let program = crate::which::find_program(q.claude).map_err(|e| AskError::Start {
        program: q.claude.to_string(),
        detail: e.to_string(),
    })?;
    let mut spec = q.spec.clone();
    spec.program = program.display().to_string();
    spec.args = [
        "-p",
        "--output-format",
        "json",
        "--tools",
        "Read,Grep,Glob",
        "--strict-mcp-config",
        "--no-session-persistence",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spec.cwd = q.worktree.to_path_buf();
    let config_dir = q.scratch.join(format!("claude-{}", q.purpose));
    std::fs::create_dir_all(&config_dir).map_err(|e| AskError::Start {
        program: spec.program.clone(),
        detail: format!("cannot create {}: {e}", config_dir.display()),
    })?;
    for (k, v) in CLAUDE_ENV {
        spec.env.insert(k.to_string(), v.to_string());
    }
    spec.env
        .insert("CLAUDE_CONFIG_DIR".into(), config_dir.display().to_string());
    for var in CLAUDE_PASS_THROUGH {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            if var.ends_with("_KEY") {
                crate::redact::register(&v);
            }
            spec.env.insert(var.to_string(), v);
        }
    }
    if let Some(port) = spec
        .env
        .get("ANTHROPIC_BASE_URL")
        .and_then(|u| crate::agent::url::url_port(u))
    {
        if let NetPolicy::ConnectPorts(ports) = &mut spec.policy.net {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    spec.stderr_log = spec.stderr_log.with_extension(format!("{}.log", q.purpose));
    spec.status_file = spec
        .status_file
        .with_extension(format!("{}.json", q.purpose));
    let _ = std::fs::write(&spec.stderr_log, b"");
    let mut proc = AgentProcess::spawn(&spec).map_err(|e| AskError::Start {
        program: spec.program.clone(),
        detail: e.to_string(),
    })?;
    if let Some(mut stdin) = proc.stdin.take() {
        let prompt = q.prompt.into_bytes();
        // Written on its own task: a large prompt must not block reading the answer.
        tokio::spawn(async move {
            let _ = stdin.write_all(&prompt).await;
            let _ = stdin.shutdown().await;
        });
    }
    let stdout = proc.stdout.take();
    let reader = tokio::spawn(async move {
        let mut kept = Vec::new();
        if let Some(out) = stdout {
            let _ = out.take(MAX_ANSWER as u64 * 4).read_to_end(&mut kept).await;
        }
        kept
    });
    let status = proc.wait_until(Instant::now() + q.timeout).await;
    let Some(status) = status else {
        proc.terminate(crate::agent::STOP_GRACE).await;
        return Err(AskError::Timeout(q.timeout.as_secs_f64()));
    };
    // Nothing it started may outlive it.
    proc.terminate(Duration::ZERO).await;
    let out = reader.await.unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    let parsed: Option<serde_json::Value> = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok());
    match parsed {
        Some(v) if v["is_error"] == true => Err(AskError::Reported(crate::jsonrpc::truncate(
            v["result"].as_str().unwrap_or("(no message)"),
            600,
        ))),
        Some(v) => match v["result"].as_str() {
            Some(r) => Ok(crate::jsonrpc::truncate(r.trim(), MAX_ANSWER)),
            None => Err(AskError::BadAnswer(crate::jsonrpc::truncate(&text, 300))),
        },
        None if !status.success() => Err(AskError::Failed {
            status: describe_exit(&status),
            stderr: proc.stderr_tail().await,
        }),
        None => Err(AskError::BadAnswer(crate::jsonrpc::truncate(&text, 300))),
    }
}
