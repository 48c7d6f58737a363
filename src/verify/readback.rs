/*!
Read-back through a verifier MCP server (Claude Code's `claude mcp serve` `Read` tool).
PLACEHOLDER interface: the implementation lands with the verification work.
*/

use std::path::Path;

use crate::git::collect::Collected;
use crate::plan::Plan;
use crate::report::{GateResult, ReadbackReport};
use crate::runner::Progress;

/// One verifier connection shared by all tasks of a run.
pub struct Verifier;

impl Verifier {
    pub async fn shutdown(&mut self) {}
}

/// What read-back of one task produced.
pub struct ReadbackOutcome {
    pub gate: Option<GateResult>,
    pub report: ReadbackReport,
}

/// Starts the verifier for a run, or says why read-back is skipped.
pub async fn start_for_run(
    _plan: &Plan,
    _progress: &Progress,
) -> Result<(Option<Verifier>, Option<String>), String> {
    Ok((None, Some("read-back is not implemented yet".into())))
}

pub(crate) async fn check_task(
    shared: &crate::runner::Shared,
    _worktree: &Path,
    _collected: &Collected,
) -> ReadbackOutcome {
    ReadbackOutcome {
        gate: None,
        report: ReadbackReport {
            result: format!(
                "skipped ({})",
                shared
                    .readback_skip
                    .clone()
                    .unwrap_or_else(|| "no verifier".into())
            ),
            ..ReadbackReport::default()
        },
    }
}

/// One line for `fanout doctor` about the verifier binary.
pub fn doctor_line(command: &str) -> String {
    match std::process::Command::new(command).arg("--version").output() {
        Ok(out) if out.status.success() => format!(
            "ok    verifier: {command} {} (read-back through `mcp serve` / Read)",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        _ => format!(
            "warn  verifier: {command} not found; read-back will be skipped (install @anthropic-ai/claude-code)"
        ),
    }
}
