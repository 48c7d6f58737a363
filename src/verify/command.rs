/*!
The verify command gate: runs the task's `verify` command in its worktree, inside the same
sandbox as the agent, with its own timeout. Non-zero exit fails the gate; the ends of its stdout
and of its stderr are kept apart (a chatty stderr cannot push the test runner's failure list
out), with the reason read from them ([`super::summary`]), for the report and for feedback.

A command that failed because the machine ran out of something (processes, memory, disk, open
files — another task's fork bomb, a full disk) says nothing about the change: it runs once more,
and when it runs out again the gate's detail says so ([`exhausted`]) and the runner fails the
task without blaming the change (no feedback turn, not `verify_failed`).
*/

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::process::{AgentProcess, SpawnSpec};

/// How much of each of stdout and stderr is kept.
pub const MAX_OUTPUT: usize = 64 * 1024;

pub struct CommandOutcome {
    pub passed: bool,
    /// How it ended: `verify command failed (exited with status 1)`.
    pub summary: String,
    /// The end of its stdout, secrets masked.
    pub output: String,
    /// The end of its stderr, secrets masked.
    pub stderr: String,
    /// Why it failed, in one line, from its own output (a test runner's summary).
    pub reason: Option<String>,
    /// It did not finish in its time.
    pub timed_out: bool,
}

impl CommandOutcome {
    fn failed(summary: String) -> CommandOutcome {
        CommandOutcome {
            passed: false,
            summary,
            output: String::new(),
            stderr: String::new(),
            reason: None,
            timed_out: false,
        }
    }

    /// The summary, and the reason after it when there is one.
    pub fn detail(&self) -> String {
        match &self.reason {
            Some(r) => format!("{}: {r}", self.summary),
            None => self.summary.clone(),
        }
    }

    /// Both streams for a human: stdout, then stderr under a marker.
    pub fn both(&self) -> String {
        both(&self.output, &self.stderr)
    }
}

pub use crate::report::both_streams as both;

/// How a failed gate's detail starts when the machine, not the change, made it fail.
const OUT_OF: &str = "the machine ran out of";

/// What the machine ran out of, judged from a failed command's output: the messages the C
/// library, shells and runtimes print for EAGAIN on fork, ENOMEM, ENOSPC, EDQUOT and ENFILE.
fn ran_out_of(output: &str) -> Option<&'static str> {
    const SIGNS: &[(&str, &str)] = &[
        ("fork: Resource temporarily unavailable", "processes"),
        ("fork: retry: Resource temporarily unavailable", "processes"),
        ("Cannot fork", "processes"),
        ("can't fork", "processes"),
        (
            "pthread_create failed: Resource temporarily unavailable",
            "processes",
        ),
        (
            "BlockingIOError: [Errno 11] Resource temporarily unavailable",
            "processes",
        ),
        ("fork: Cannot allocate memory", "memory"),
        ("Cannot allocate memory", "memory"),
        ("MemoryError", "memory"),
        ("JavaScript heap out of memory", "memory"),
        ("No space left on device", "disk space"),
        ("Disk quota exceeded", "disk space"),
        ("Too many open files in system", "open files"),
    ];
    SIGNS
        .iter()
        .find(|(sign, _)| output.contains(sign))
        .map(|(_, what)| *what)
}

/// The reason when a failed gate failed only because the machine ran out of something.
pub fn exhausted(gate: &crate::report::GateResult) -> Option<&str> {
    gate.detail
        .as_deref()
        .filter(|d| !gate.passed && d.starts_with(OUT_OF))
}

/// The command failed only because the machine ran out of something (it ran twice already).
pub fn ran_out(outcome: &CommandOutcome) -> bool {
    !outcome.passed && outcome.summary.starts_with(OUT_OF)
}

/// Largest verify log kept per task; the rest is counted, not written.
const MAX_LOG: u64 = 16 * 1024 * 1024;

/// Runs `argv` with `spec`'s sandbox, cwd and environment.
pub async fn run(spec: &SpawnSpec, argv: &[String], timeout: Duration) -> CommandOutcome {
    run_logged(spec, argv, timeout, None).await
}

/// [`run`], also appending the command line, its whole stdout (secrets masked, bounded), its
/// stderr and the outcome to `log` (`logs/<task>.verify.log`): the gate keeps only the tail.
pub async fn run_logged(
    spec: &SpawnSpec,
    argv: &[String],
    timeout: Duration,
    log: Option<&std::path::Path>,
) -> CommandOutcome {
    let mut log_file = match log {
        Some(p) => tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .await
            .ok(),
        None => None,
    };
    if let Some(f) = log_file.as_mut() {
        use tokio::io::AsyncWriteExt;
        let line = format!("$ {}\n", argv.join(" "));
        let _ = f.write_all(crate::redact::redact(&line).as_bytes()).await;
    }
    let (mut outcome, mut log_file) = run_inner(spec, argv, timeout, log_file).await;
    if let Some(what) = (!outcome.passed)
        .then(|| ran_out_of(&outcome.both()))
        .flatten()
    {
        // Not the change's doing: once more, after a moment for the machine to recover.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(f) = log_file.as_mut() {
            use tokio::io::AsyncWriteExt;
            let line = format!("--- the machine ran out of {what}: running it once more ---\n");
            let _ = f.write_all(line.as_bytes()).await;
        }
        let (again, log) = run_inner(spec, argv, timeout, log_file).await;
        log_file = log;
        outcome = match (!again.passed).then(|| ran_out_of(&again.both())).flatten() {
            Some(what) => CommandOutcome {
                summary: format!(
                    "{OUT_OF} {what} while the verify command ran, twice ({}); the change was not judged",
                    again.summary
                ),
                reason: None,
                ..again
            },
            None => again,
        };
    }
    if let Some(mut f) = log_file {
        use tokio::io::AsyncWriteExt;
        let stderr = crate::process::tail_of_file(&spec.stderr_log, 1024 * 1024);
        let mut text = String::new();
        if !stderr.is_empty() {
            text.push_str("--- stderr ---\n");
            text.push_str(&stderr);
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        text.push_str(&format!("--- {} ---\n\n", outcome.summary));
        let _ = f.write_all(text.as_bytes()).await;
        let _ = f.flush().await;
    }
    outcome
}

async fn run_inner(
    spec: &SpawnSpec,
    argv: &[String],
    timeout: Duration,
    mut log: Option<tokio::fs::File>,
) -> (CommandOutcome, Option<tokio::fs::File>) {
    let Some((program, args)) = argv.split_first() else {
        return (CommandOutcome::failed("empty verify command".into()), log);
    };
    let mut spec = spec.clone();
    spec.program = program.clone();
    spec.args = args.to_vec();
    let _ = std::fs::write(&spec.stderr_log, b"");
    let mut proc = match AgentProcess::spawn(&spec) {
        Ok(p) => p,
        Err(e) => {
            let outcome = CommandOutcome::failed(format!("cannot start the verify command: {e}"));
            return (outcome, log);
        }
    };
    drop(proc.stdin.take());
    let stdout = proc.stdout.take();
    let mut log_file = log.take();
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // Keep only the tail: verify commands can be chatty. The log gets all of it, bounded.
        let mut kept: Vec<u8> = Vec::new();
        let mut logged = 0u64;
        // Masks across reads: a secret split between two reads is still masked whole.
        let mut redactor = crate::redact::StreamRedactor::new();
        let mut masked = Vec::new();
        if let Some(mut out) = stdout {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if let Some(f) = log_file.as_mut() {
                    if logged < MAX_LOG {
                        masked.clear();
                        redactor.push(&buf[..n], &mut masked);
                        logged += masked.len() as u64;
                        if logged >= MAX_LOG {
                            redactor.finish(&mut masked);
                        }
                        let _ = f.write_all(&masked).await;
                    }
                }
                if kept.len() > 2 * MAX_OUTPUT {
                    kept.drain(..kept.len() - MAX_OUTPUT);
                }
            }
        }
        if let Some(f) = log_file.as_mut() {
            masked.clear();
            redactor.finish(&mut masked);
            let _ = f.write_all(&masked).await;
        }
        (kept, log_file)
    });
    let status = proc.wait_until(Instant::now() + timeout).await;
    let (passed, summary) = match status {
        Some(s) if s.success() => (true, "verify command passed".to_string()),
        Some(s) => (
            false,
            format!(
                "verify command failed ({})",
                super::exit::describe(&s, &spec.status_file)
            ),
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
    let (stdout, log) = reader.await.unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = proc.stderr_tail_max(MAX_OUTPUT).await;
    // The output goes into the report and back to the agent as feedback: masked whole before
    // it is cut, so no secret is cut into an unrecognisable piece.
    let output = tail(&crate::redact::redact(&stdout), MAX_OUTPUT);
    let stderr = tail(&crate::redact::redact(&stderr), MAX_OUTPUT);
    let reason = (!passed)
        .then(|| super::summary::reason(&output, &stderr))
        .flatten();
    let outcome = CommandOutcome {
        passed,
        summary,
        output,
        stderr,
        reason,
        timed_out: status.is_none(),
    };
    (outcome, log)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_what_the_machine_ran_out_of() {
        assert_eq!(ran_out_of("sh: 1: Cannot fork\n"), Some("processes"));
        assert_eq!(
            ran_out_of("bash: fork: retry: Resource temporarily unavailable"),
            Some("processes")
        );
        assert_eq!(
            ran_out_of("OSError: [Errno 28] No space left on device"),
            Some("disk space")
        );
        assert_eq!(ran_out_of("AssertionError: 1 != 2"), None);
    }

    #[test]
    fn only_an_exhausted_failure_is_excused() {
        let gate = |passed: bool, detail: &str| crate::report::GateResult {
            gate: "command".into(),
            passed,
            detail: Some(detail.into()),
            paths: Vec::new(),
            output: None,
            stderr: None,
            flaky: false,
        };
        let out = format!("{OUT_OF} processes while the verify command ran, twice (exit 2)");
        assert!(exhausted(&gate(false, &out)).is_some());
        assert!(exhausted(&gate(false, "verify command failed (exit 1)")).is_none());
        assert!(exhausted(&gate(true, &out)).is_none());
    }
}
