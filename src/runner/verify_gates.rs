//! The gates a task's commit must pass (scope and risky changes, verify command, read-back,
//! review) and the feedback a failed gate sends back; the snapshot of the commit the judges
//! (read-back, review, diagnosis) read.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::paths::Paths;
use super::shared::Shared;
use crate::git::collect::Collected;
use crate::git::snapshot::Which;
use crate::plan::PlannedTask;
use crate::process::SpawnSpec;
use crate::report::{GateResult, TaskReport};
use crate::verify;
use crate::verify::judges::Snapshot;

/// The snapshot of one attempt's commit, written when a judge first needs it: the changed
/// files for read-back alone, the whole tree when a review or diagnosis reads around the
/// change (a whole-tree snapshot serves read-back too). Removed when dropped.
#[derive(Default)]
pub(super) struct JudgeView {
    slot: Option<(bool, Result<Snapshot, String>)>,
}

impl JudgeView {
    /// The snapshot's root, or why it could not be written.
    pub(super) async fn root(
        &mut self,
        shared: &Arc<Shared>,
        task: &PlannedTask,
        collected: &Collected,
        whole: bool,
    ) -> Result<&Path, String> {
        let fits = matches!(&self.slot, Some((w, Ok(_))) if *w || !whole);
        if !fits {
            self.slot = None;
            let which = if whole {
                Which::All
            } else {
                Which::Paths(verify::readback::paths_to_read(collected))
            };
            let (s, tree, label) = (shared.clone(), collected.tree, task.id().to_string());
            let made = tokio::task::spawn_blocking(move || {
                s.judges
                    .snapshot(&s.repo_path, tree, &which, &label)
                    .map_err(|e| {
                        format!(
                            "cannot write the snapshot of the commit: {}",
                            crate::error_chain(&e)
                        )
                    })
            })
            .await
            .unwrap_or_else(|e| Err(format!("cannot write the snapshot of the commit: {e}")));
            if let Ok(snap) = &made {
                tamper_for_tests(snap.path(), collected);
            }
            self.slot = Some((whole, made));
        }
        match &self.slot {
            Some((_, Ok(snap))) => Ok(snap.path()),
            Some((_, Err(why))) => Err(why.clone()),
            None => Err("no snapshot".into()),
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
fn tamper_for_tests(_snapshot: &Path, _collected: &Collected) {}

/// TEST-ONLY hook (the `test-hooks` feature): `FANOUT_TEST_TAMPER_AFTER_COMMIT=<relative path>`
/// appends one byte to that file of the judges' snapshot (re-creating it if the task deleted
/// it) once it is written, so tests can prove that read-back catches a view of the commit that
/// does not match it. Only paths the task changed are touched.
#[cfg(feature = "test-hooks")]
fn tamper_for_tests(snapshot: &Path, collected: &Collected) {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let Some(rel) = std::env::var_os("FANOUT_TEST_TAMPER_AFTER_COMMIT") else {
        return;
    };
    let rel = rel.to_string_lossy();
    if !collected.summary.files.iter().any(|f| *f == rel) {
        return;
    }
    let path = snapshot.join(&*rel);
    let writable = |p: &Path, mode| {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    };
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
        writable(parent, 0o755);
    }
    writable(&path, 0o644);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
    {
        let _ = f.write_all(b"!");
    }
}

pub(super) async fn verify_gates(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    paths: &Paths,
    spawn: &SpawnSpec,
    collected: &Collected,
    report: &mut TaskReport,
    view: &mut JudgeView,
) -> Vec<GateResult> {
    let mut gates = Vec::new();
    gates.extend(scope_gate(task, collected));
    if let Some(cmd) = &task.verify {
        gates.push(command_gate(task, paths, spawn, cmd).await);
    }
    // Read-back of the commit's snapshot (a review reads the whole tree: one snapshot for both).
    let readback = readback_gate(shared, task, collected, view).await;
    gates.extend(readback.gate.clone());
    report.readback = Some(Box::new(readback.report));
    if let Some(review) = &task.review {
        gates.push(review_gate(shared, task, paths, collected, view, review).await);
    }
    gates
}

/// Scope, and risky changes the task's paths do not name explicitly; `None` when the task has
/// no scope and changed nothing risky.
fn scope_gate(task: &PlannedTask, collected: &Collected) -> Option<GateResult> {
    let unnamed: Vec<&crate::git::risky::RiskyChange> = collected
        .summary
        .risky
        .iter()
        .filter(|r| !verify::scope::named_explicitly(&task.spec.paths, &r.path))
        .collect();
    if task.spec.paths.is_empty() && unnamed.is_empty() {
        return None;
    }
    let scope = match verify::scope::Scope::new(&task.spec.paths) {
        Ok(scope) => scope,
        Err(e) => {
            return Some(GateResult {
                gate: "scope".into(),
                passed: false,
                detail: Some(format!("invalid scope: {e}")),
                paths: Vec::new(),
                output: None,
                stderr: None,
                flaky: false,
            })
        }
    };
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
    Some(GateResult {
        gate: "scope".into(),
        passed: why.is_empty(),
        detail: (!why.is_empty()).then(|| why.join("; ")),
        paths,
        output: None,
        stderr: None,
        flaky: false,
    })
}

/// The verify command, in the task's sandbox, in its worktree.
async fn command_gate(
    task: &PlannedTask,
    paths: &Paths,
    spawn: &SpawnSpec,
    cmd: &crate::taskfile::VerifyCommand,
) -> GateResult {
    let mut spec = spawn.clone();
    spec.cwd = paths.worktree.clone();
    spec.stderr_log = paths.stderr_log.with_extension("verify.log");
    spec.status_file = paths.status_file.with_extension("verify.json");
    // The verify phase's own allow-list (the task file's `network.verify`).
    spec.policy.egress = spawn.policy.egress.as_ref().map(|l| l.for_phase("verify"));
    let runs = verify::rerun::run(
        &spec,
        &cmd.argv(),
        Duration::from_secs_f64(task.verify_timeout_secs),
        Some(&paths.verify_log),
        task.verify_retries,
    )
    .await;
    let flaky = runs.flaky_detail();
    let out = runs.outcome;
    GateResult {
        gate: "command".into(),
        passed: out.passed,
        detail: if out.passed {
            flaky.clone()
        } else {
            Some(out.detail())
        },
        paths: Vec::new(),
        output: (!out.output.is_empty()).then(|| out.output.clone()),
        stderr: (!out.stderr.is_empty()).then(|| out.stderr.clone()),
        flaky: flaky.is_some(),
    }
}

/// Read-back through the verifier, of the commit's snapshot (skipped, saying why, without one).
async fn readback_gate(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    collected: &Collected,
    view: &mut JudgeView,
) -> verify::readback::ReadbackOutcome {
    let Some(verifier) = shared.verifier.as_deref() else {
        return verify::readback::check_task(
            None,
            shared.readback_skip.as_deref(),
            &shared.repo_path,
            Err("no verifier"),
            collected,
        )
        .await;
    };
    let root = view
        .root(shared, task, collected, task.review.is_some())
        .await;
    verify::readback::check_task(
        Some(verifier),
        None,
        &shared.repo_path,
        root.as_deref().map_err(String::as_str),
        collected,
    )
    .await
}

/// Review by Claude Code, confined as a judge, in the commit's snapshot.
async fn review_gate(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    paths: &Paths,
    collected: &Collected,
    view: &mut JudgeView,
    review: &crate::taskfile::ReviewSpec,
) -> GateResult {
    let snapshot = match view.root(shared, task, collected, true).await {
        Ok(snapshot) => snapshot,
        Err(why) => {
            return GateResult {
                gate: "review".into(),
                passed: false,
                detail: Some(format!("the review did not happen: {why}")),
                paths: Vec::new(),
                output: None,
                stderr: None,
                flaky: false,
            }
        }
    };
    let diff = String::from_utf8_lossy(&collected.patch);
    let input = verify::review::ReviewInput {
        judges: &shared.judges,
        claude: &task.claude,
        snapshot,
        stderr_log: &paths.stderr_log,
        status_file: &paths.status_file,
        task_prompt: &task.spec.prompt,
        diff: &diff,
    };
    verify::review::gate(review, input).await
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
        // The ends of the streams: a test runner's failure list is at the end of its output.
        if let Some(o) = &g.output {
            text.push_str("output:\n");
            text.push_str(&end_of(o, 4000));
            text.push('\n');
        }
        if let Some(e) = &g.stderr {
            text.push_str("stderr:\n");
            text.push_str(&end_of(e, 2000));
            text.push('\n');
        }
    }
    text
}

/// The last `max` bytes of `s`, marked as cut when they are not all of it.
fn end_of(s: &str, max: usize) -> String {
    let end = super::tail::tail(s, max);
    if end.len() < s.trim_end().len() {
        format!("… ({} bytes before)\n{end}", s.trim_end().len() - end.len())
    } else {
        end.to_string()
    }
}
