/*!
The verify command gate: runs the task's `verify` command in its worktree, inside the same
sandbox as the agent, with its own timeout. Non-zero exit fails the gate; the output is kept
(trimmed) for the report and for feedback to the agent.
*/

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::process::{describe_exit, AgentProcess, SpawnSpec};

/// How much verify output is kept.
pub const MAX_OUTPUT: usize = 8 * 1024;

pub struct CommandOutcome {
    pub passed: bool,
    pub summary: String,
    pub output: String,
}

/// Runs `argv` with `spec`'s sandbox, cwd and environment.
pub async fn run(spec: &SpawnSpec, argv: &[String], timeout: Duration) -> CommandOutcome {
    let Some((program, args)) = argv.split_first() else {
        return CommandOutcome {
            passed: false,
            summary: "empty verify command".into(),
            output: String::new(),
        };
    };
    let mut spec = spec.clone();
    spec.program = program.clone();
    spec.args = args.to_vec();
    let _ = std::fs::write(&spec.stderr_log, b"");
    let mut proc = match AgentProcess::spawn(&spec) {
        Ok(p) => p,
        Err(e) => {
            return CommandOutcome {
                passed: false,
                summary: format!("cannot start the verify command: {e}"),
                output: String::new(),
            }
        }
    };
    drop(proc.stdin.take());
    let stdout = proc.stdout.take();
    let reader = tokio::spawn(async move {
        // Keep only the tail: verify commands can be chatty.
        let mut kept: Vec<u8> = Vec::new();
        if let Some(mut out) = stdout {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * MAX_OUTPUT {
                    kept.drain(..kept.len() - MAX_OUTPUT);
                }
            }
        }
        kept
    });
    let status = proc.wait_until(Instant::now() + timeout).await;
    let (passed, summary) = match status {
        Some(s) if s.success() => (true, "verify command passed".to_string()),
        Some(s) => (
            false,
            format!("verify command failed ({})", describe_exit(&s)),
        ),
        None => {
            proc.terminate(crate::agent::STOP_GRACE).await;
            (
                false,
                format!(
                    "verify command did not finish within {:.0} s",
                    timeout.as_secs_f64()
                ),
            )
        }
    };
    let stdout = reader.await.unwrap_or_default();
    let mut output = String::from_utf8_lossy(&stdout).into_owned();
    let err = proc.stderr_tail_max(MAX_OUTPUT).await;
    if !err.is_empty() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&err);
    }
    let output = tail(&output, MAX_OUTPUT);
    CommandOutcome {
        passed,
        summary,
        output,
    }
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.trim_end().to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", s[start..].trim_end())
}
