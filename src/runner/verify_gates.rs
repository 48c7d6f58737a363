//! The gates a task's commit must pass (scope and risky changes, verify command, read-back,
//! review) and the feedback a failed gate sends back.

use std::sync::Arc;
use std::time::Duration;

use super::paths::Paths;
use super::Shared;
use crate::git::collect::Collected;
use crate::plan::PlannedTask;
use crate::process::SpawnSpec;
use crate::report::{GateResult, TaskReport};
use crate::verify;

pub(super) async fn verify_gates(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    paths: &Paths,
    spawn: &SpawnSpec,
    collected: &Collected,
    report: &mut TaskReport,
) -> Vec<GateResult> {
    let mut gates = Vec::new();
    // Scope, and risky changes the task's paths do not name explicitly.
    let unnamed: Vec<&crate::git::risky::RiskyChange> = collected
        .summary
        .risky
        .iter()
        .filter(|r| !verify::scope::named_explicitly(&task.spec.paths, &r.path))
        .collect();
    if !task.spec.paths.is_empty() || !unnamed.is_empty() {
        let gate = match verify::scope::Scope::new(&task.spec.paths) {
            Ok(scope) => {
                let outside = scope.violations(&collected.summary.files);
                let mut why = Vec::new();
                if !outside.is_empty() {
                    why.push(format!(
                        "changed paths outside the task's scope: {}",
                        outside.join(", ")
                    ));
                }
                if !unnamed.is_empty() {
                    why.push(format!(
                        "changes that need the task's paths to name them explicitly: {}",
                        unnamed
                            .iter()
                            .map(|r| format!("{} ({})", r.path, r.why))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                let mut paths = outside;
                paths.extend(unnamed.iter().map(|r| r.path.clone()));
                paths.sort();
                paths.dedup();
                GateResult {
                    gate: "scope".into(),
                    passed: why.is_empty(),
                    detail: (!why.is_empty()).then(|| why.join("; ")),
                    paths,
                    output: None,
                }
            }
            Err(e) => GateResult {
                gate: "scope".into(),
                passed: false,
                detail: Some(format!("invalid scope: {e}")),
                paths: Vec::new(),
                output: None,
            },
        };
        gates.push(gate);
    }
    // Verify command, in the same sandbox.
    if let Some(cmd) = &task.verify {
        let mut spec = spawn.clone();
        spec.cwd = paths.worktree.clone();
        spec.stderr_log = paths.stderr_log.with_extension("verify.log");
        spec.status_file = paths.status_file.with_extension("verify.json");
        let argv = cmd.argv();
        let log = paths.verify_log.clone();
        let out = verify::command::run_logged(
            &spec,
            &argv,
            Duration::from_secs_f64(task.verify_timeout_secs),
            Some(&log),
        )
        .await;
        gates.push(GateResult {
            gate: "command".into(),
            passed: out.passed,
            detail: (!out.passed).then(|| out.summary.clone()),
            paths: Vec::new(),
            output: (!out.output.is_empty()).then_some(out.output),
        });
    }
    // Read-back through the verifier.
    let readback = verify::readback::check_task(
        shared.verifier.as_deref(),
        shared.readback_skip.as_deref(),
        &shared.repo_path,
        paths.readable_root(),
        collected,
    )
    .await;
    if let Some(gate) = readback.gate.clone() {
        gates.push(gate);
    }
    report.readback = Some(readback.report);
    // Review by Claude Code, confined like the agent.
    if let Some(review) = &task.review {
        let diff = String::from_utf8_lossy(&collected.patch);
        let input = verify::review::ReviewInput {
            spec: spawn,
            claude: &task.claude,
            worktree: &paths.worktree,
            scratch: &paths.scratch,
            task_prompt: &task.spec.prompt,
            diff: &diff,
        };
        gates.push(verify::review::gate(review, input).await);
    }
    gates
}

pub(super) fn feedback_prompt(failed: &[&GateResult], attempt: u32, max: u32) -> String {
    let mut text = format!(
        "fanout checked your change and it did not pass verification (attempt {attempt} of {max}). Fix the problems below, keep the rest of the change, and finish.\n"
    );
    for g in failed {
        text.push_str(&format!("\n## {} gate\n", g.gate));
        if let Some(d) = &g.detail {
            text.push_str(d);
            text.push('\n');
        }
        if !g.paths.is_empty() {
            text.push_str(&format!("paths: {}\n", g.paths.join(", ")));
        }
        if let Some(o) = &g.output {
            text.push_str("output:\n");
            text.push_str(&crate::jsonrpc::truncate(o, 4000));
            text.push('\n');
        }
    }
    text
}
