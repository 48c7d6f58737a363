/*!
One question to Claude Code: `claude -p --output-format json`, run as a judge
(`verify::judges`): in a read-only snapshot of the task's commit (its working folder), with
read-only tools, confined (Landlock, reads limited to the system, its install folders, the
snapshot and its private home; TCP to the model endpoint's port only — or, when the run
isolates the network, a namespace whose only way out is the egress proxy's Anthropic route,
with a placeholder key: `verify::judge_net`), never as root. The review gate and diagnoses use it.

Nothing the agent wrote is loaded as settings, instructions, hooks or MCP servers: Claude Code
gets `--setting-sources user` (the committed `.claude/settings*.json` and `CLAUDE.md` are
ignored; measured with 2.1.332 — `--bare` does not stop them), `--strict-mcp-config` (no
`.mcp.json`), and a fresh private `CLAUDE_CONFIG_DIR` (so "user" settings are fanout's: none).
Its environment is built from nothing: `ANTHROPIC_BASE_URL` / `ANTHROPIC_API_KEY` from fanout's
environment and the quiet settings of the `claude-code` MCP server. The prompt goes on stdin (a
diff can be longer than an argument may be).
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::judges::{Judge, Judges};
use crate::agent::mcp_servers::{CLAUDE_ENV, CLAUDE_PASS_THROUGH};
use crate::process::{describe_exit, AgentProcess};

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
    pub judges: &'a Judges,
    /// The `claude` program (resolved on PATH when it has no `/`).
    pub claude: &'a str,
    /// The snapshot of the task's commit: Claude Code's working folder, all it may read.
    pub snapshot: &'a Path,
    /// Where its stderr goes and the sandbox writes its status (`.<purpose>` is added).
    pub stderr_log: &'a Path,
    pub status_file: &'a Path,
    /// Names the logs apart (`review`, `diagnose`).
    pub purpose: &'a str,
    pub prompt: String,
    pub timeout: Duration,
}

/// The arguments of every question: JSON out, read-only tools, and nothing loaded from the
/// working folder (settings, instructions, hooks, MCP servers).
const ARGS: &[&str] = &[
    "-p",
    "--output-format",
    "json",
    "--tools",
    "Read,Grep,Glob",
    "--setting-sources",
    "user",
    "--strict-mcp-config",
    "--no-session-persistence",
];

/// Claude Code's environment: the endpoint and key from fanout's environment (never from the
/// task), the quiet settings, its private config folder.
fn claude_env(config_dir: &Path) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = CLAUDE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("CLAUDE_CONFIG_DIR".into(), config_dir.display().to_string());
    for var in CLAUDE_PASS_THROUGH {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            if var.ends_with("_KEY") {
                crate::redact::register(&v);
            }
            env.insert(var.to_string(), v);
        }
    }
    env
}

/// Appends what the question's egress proxy refused to its stderr log and to `notes`.
fn log_refusals(log: &Path, lines: Vec<String>, notes: &mut Vec<String>) {
    use std::io::Write;
    if lines.is_empty() {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(f, "{}", lines.join("\n"));
    }
    notes.extend(lines);
}

fn with_purpose(path: &Path, purpose: &str, ext: &str) -> PathBuf {
    path.with_extension(format!("{purpose}.{ext}"))
}

/// Asks, and returns the text of Claude Code's result.
pub async fn ask(q: Question<'_>) -> Result<String, AskError> {
    ask_noting_refusals(q).await.0
}

/// [`ask`], and notes on its network: why it was not confined to the proxy although the run
/// isolates the network, what its egress proxy refused (one line each; also in its stderr log).
pub async fn ask_noting_refusals(q: Question<'_>) -> (Result<String, AskError>, Vec<String>) {
    let mut refused = Vec::new();
    let answer = ask_into(q, &mut refused).await;
    (answer, refused)
}

async fn ask_into(q: Question<'_>, refused: &mut Vec<String>) -> Result<String, AskError> {
    let program = crate::which::find_program(q.claude).map_err(|e| AskError::Start {
        program: q.claude.to_string(),
        detail: e.to_string(),
    })?;
    let start_error = |detail: String| AskError::Start {
        program: program.display().to_string(),
        detail,
    };
    let home = q
        .judges
        .private_dir(q.purpose)
        .map_err(|e| start_error(crate::error_chain(&e)))?;
    let mut env = claude_env(home.path());
    let mut net = super::judge_net::for_question(q.judges, &mut env).await;
    refused.extend(net.warning.clone());
    let spec = q.judges.spawn_spec(Judge {
        program: program.display().to_string(),
        args: ARGS.iter().map(|s| s.to_string()).collect(),
        cwd: q.snapshot.to_path_buf(),
        home: home.path(),
        readable: vec![q.snapshot.to_path_buf()],
        net: net.net.clone(),
        isolate_net: net.isolate_net,
        egress: net.egress.clone(),
        env,
        stderr_log: with_purpose(q.stderr_log, q.purpose, "log"),
        status_file: with_purpose(q.status_file, q.purpose, "json"),
    });
    let warning = net.warning.as_ref().map(|w| format!("{w}\n"));
    let _ = std::fs::write(&spec.stderr_log, warning.unwrap_or_default());
    let mut proc = AgentProcess::spawn(&spec).map_err(|e| start_error(crate::error_chain(&e)))?;
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
        log_refusals(&spec.stderr_log, net.refusals(q.purpose), refused);
        return Err(AskError::Timeout(q.timeout.as_secs_f64()));
    };
    // Nothing it started may outlive it.
    proc.terminate(Duration::ZERO).await;
    log_refusals(&spec.stderr_log, net.refusals(q.purpose), refused);
    let out = reader.await.unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    let parsed: Option<serde_json::Value> = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok());
    // Accounting (issue 23): what the answer spent, for the runner's count of its judges.
    if let Some(v) = &parsed {
        if let Some(usage) = crate::usage::read::claude_result(v) {
            crate::usage::scope::record(usage, crate::usage::read::claude_model(v));
        }
    }
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
