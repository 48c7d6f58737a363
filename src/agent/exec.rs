/*!
The `exec` protocol: run a plain command in the worktree with the prompt on stdin, in the file
named by `FANOUT_PROMPT_FILE` (in the task's scratch folder) and — when it is at most
[`MAX_ENV_PROMPT`] bytes — in `FANOUT_PROMPT`. Exit code 0 means the agent finished. A
follow-up turn runs the command again with the same prompt and the verification feedback
apart (`FANOUT_FEEDBACK`, `FANOUT_FEEDBACK_FILE`, and on stdin after the prompt), with
`FANOUT_ATTEMPT` counting up.

Why the cap: Linux limits one environment string to 128 KiB (`MAX_ARG_STRLEN`) and argv plus
environment together to a few MiB, so a larger `FANOUT_PROMPT` would make every start fail
with `Argument list too long`. Above the cap `FANOUT_PROMPT` is left unset (never cut: a
silently truncated prompt is worse than none) and `FANOUT_PROMPT_BYTES` says how long it is.
*/

use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::time::Instant;

use super::common::{check_sandbox, AgentContext, AgentError, AgentInfo, TurnResult, STOP_GRACE};
use crate::jsonrpc::{read_capped_line, Line};
use crate::process::{describe_exit, AgentProcess};

/// Longest prompt also passed in `FANOUT_PROMPT` (bytes).
pub const MAX_ENV_PROMPT: usize = 64 * 1024;

/// Longest stdout line kept in the event log; exec agents are not trusted to be brief.
const MAX_STDOUT_LINE: usize = 8 * 1024;

pub struct ExecSession {
    ctx: AgentContext,
    attempt: u32,
    pub info: AgentInfo,
}

impl ExecSession {
    pub fn new(ctx: AgentContext) -> ExecSession {
        ExecSession {
            ctx,
            attempt: 0,
            info: AgentInfo {
                protocol: "exec".into(),
                ..AgentInfo::default()
            },
        }
    }

    /// Runs the command once. `feedback` is what verification said about the previous attempt:
    /// a codemod re-run must still see its original prompt (its instructions), so the feedback
    /// comes apart, in `FANOUT_FEEDBACK` / `FANOUT_FEEDBACK_FILE` and on stdin after the prompt.
    pub async fn turn(
        &mut self,
        prompt: &str,
        feedback: Option<&str>,
        deadline: Instant,
    ) -> Result<TurnResult, AgentError> {
        self.attempt += 1;
        let mut spec = self.ctx.spawn.clone();
        match feedback {
            Some(text) => {
                let file = self.ctx.scratch.join("feedback.txt");
                write_prompt_file(&file, text).map_err(|e| {
                    AgentError::Spawn(format!(
                        "cannot write the feedback file {}: {e}",
                        file.display()
                    ))
                })?;
                spec.env
                    .insert("FANOUT_FEEDBACK_FILE".into(), file.display().to_string());
                if text.len() <= MAX_ENV_PROMPT {
                    spec.env.insert("FANOUT_FEEDBACK".into(), text.to_string());
                } else {
                    spec.env_remove.push("FANOUT_FEEDBACK".into());
                }
            }
            None => {
                // An inherited value would be mistaken for feedback on a first attempt.
                spec.env_remove.push("FANOUT_FEEDBACK".into());
                spec.env_remove.push("FANOUT_FEEDBACK_FILE".into());
            }
        }
        let prompt_file = self.ctx.scratch.join("prompt.txt");
        write_prompt_file(&prompt_file, prompt).map_err(|e| {
            AgentError::Spawn(format!(
                "cannot write the prompt file {}: {e}",
                prompt_file.display()
            ))
        })?;
        spec.env.insert(
            "FANOUT_PROMPT_FILE".into(),
            prompt_file.display().to_string(),
        );
        spec.env
            .insert("FANOUT_PROMPT_BYTES".into(), prompt.len().to_string());
        if prompt.len() <= MAX_ENV_PROMPT {
            spec.env.insert("FANOUT_PROMPT".into(), prompt.to_string());
        } else {
            // An inherited FANOUT_PROMPT would be mistaken for this one.
            spec.env_remove.push("FANOUT_PROMPT".into());
        }
        spec.env
            .insert("FANOUT_ATTEMPT".into(), self.attempt.to_string());
        // Issue 23: the agent may say what it spent, as JSON in this file (docs/report.md).
        let usage_file = self.ctx.scratch.join("usage.json");
        let _ = std::fs::remove_file(&usage_file);
        spec.env
            .insert("FANOUT_USAGE".into(), usage_file.display().to_string());
        let mut proc =
            AgentProcess::spawn(&spec).map_err(|e| AgentError::Spawn(crate::error_chain(&e)))?;
        self.info.commands_run += 1;
        let events = self.ctx.events.clone();
        events.record(
            "exec_start",
            json!({"attempt": self.attempt, "command": spec.program}),
        );

        // Feed the prompt and close stdin; an agent that never reads it must not block us.
        if let Some(mut stdin) = proc.stdin.take() {
            let mut text = prompt.to_string();
            if let Some(f) = feedback {
                // The prompt first, then the feedback, told apart by a blank line and a heading.
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str("\n## fanout feedback\n\n");
                text.push_str(f);
            }
            tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let stdout = proc.stdout.take();
        let reader = tokio::spawn(async move {
            let mut last = None;
            let mut lines = 0u64;
            if let Some(out) = stdout {
                let mut r = BufReader::new(out);
                // Capped lines: an agent printing one endless line must not grow our memory.
                while let Ok(Some(line)) = read_capped_line(&mut r, MAX_STDOUT_LINE).await {
                    lines += 1;
                    let text = match line {
                        Line::Text(bytes) => String::from_utf8_lossy(&bytes).trim_end().to_string(),
                        Line::TooLong(n) => format!("(a line of {n} bytes, not kept)"),
                    };
                    events.record("stdout", json!({"line": text}));
                    if !text.trim().is_empty() {
                        last = Some(text);
                    }
                }
            }
            (last, lines)
        });

        let status = match proc.wait_until(deadline).await {
            Some(s) => s,
            None => {
                proc.terminate(STOP_GRACE).await;
                reader.abort();
                let secs = self.ctx.profile.tool_timeout_sec;
                return Err(AgentError::Timeout(secs.min(remaining_hint(deadline))));
            }
        };
        let (last, _lines) = reader.await.unwrap_or((None, 0));
        self.read_usage(&usage_file);
        check_sandbox(&proc.status_file, &mut self.info)?;
        self.ctx
            .events
            .record("exec_exit", json!({"status": describe_exit(&status)}));
        if !status.success() {
            return Err(AgentError::Crashed {
                status: describe_exit(&status),
                stderr: proc.stderr_tail().await,
            });
        }
        self.info.last_message = last.clone();
        Ok(TurnResult { message: last })
    }
}

impl ExecSession {
    /// Adds what the run just ended wrote to `$FANOUT_USAGE` (Codex's snake-case token names,
    /// and `model`) to the session's total. The file is the agent's: read bounded, and a file
    /// that is not such JSON is ignored (and said in the event log).
    fn read_usage(&mut self, file: &std::path::Path) {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // Not through a link, and never waiting on a FIFO the agent left there.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(file);
        let Ok(f) = opened else {
            if std::fs::symlink_metadata(file).is_ok() {
                self.ctx
                    .events
                    .record("usage_ignored", json!({"why": "not a regular file"}));
            }
            return;
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            self.ctx
                .events
                .record("usage_ignored", json!({"why": "not a regular file"}));
            return;
        }
        let mut text = String::new();
        if f.take(64 * 1024).read_to_string(&mut text).is_err() {
            return;
        }
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let Some(usage) = crate::usage::read::codex_snake_case(&value) else {
            self.ctx.events.record(
                "usage_ignored",
                json!({"why": "not a JSON object of token counts"}),
            );
            return;
        };
        if let Some(m) = value.get("model").and_then(serde_json::Value::as_str) {
            self.info.model = Some(m.chars().take(200).collect());
        }
        let total = self.info.usage.get_or_insert_with(Default::default);
        total.add(&usage);
        self.ctx.meter.set((**total).clone());
    }
}

/// Writes the prompt through a temp file and a rename, so an agent never reads half of it.
fn write_prompt_file(path: &std::path::Path, prompt: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(prompt.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn remaining_hint(_deadline: Instant) -> f64 {
    f64::INFINITY
}
