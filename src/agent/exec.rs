/*!
The `exec` protocol: run a plain command in the worktree with the prompt on stdin and in
`FANOUT_PROMPT`. Exit code 0 means the agent finished. A follow-up turn runs the command
again with the feedback as the prompt (and `FANOUT_ATTEMPT` counting up).
*/

use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::time::Instant;

use super::{check_sandbox, AgentContext, AgentError, AgentInfo, TurnResult, STOP_GRACE};
use crate::jsonrpc::{read_capped_line, Line};
use crate::process::{describe_exit, AgentProcess};

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

    pub async fn turn(
        &mut self,
        prompt: &str,
        deadline: Instant,
    ) -> Result<TurnResult, AgentError> {
        self.attempt += 1;
        let mut spec = self.ctx.spawn.clone();
        spec.env.insert("FANOUT_PROMPT".into(), prompt.to_string());
        spec.env
            .insert("FANOUT_ATTEMPT".into(), self.attempt.to_string());
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
            let text = prompt.to_string();
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

fn remaining_hint(_deadline: Instant) -> f64 {
    f64::INFINITY
}
