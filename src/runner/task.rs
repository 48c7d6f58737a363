/*!
One task's pipeline: wait for dependencies → worktree → agent session (in the sandbox) →
collect and commit → verify (scope, command, read-back) → feedback and retry, bounded →
pending integration.
*/

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{watch, Semaphore};

use super::launch::*;
use super::steps::*;
use super::verify_gates::*;
use super::{Pending, Shared};
use crate::agent::{AgentContext, AgentError, Session};
use crate::event::EventKind;
use crate::eventlog::EventLog;
use crate::git::worktree;
use crate::ids::task_branch;
use crate::report::{AttemptReport, GateResult, TaskReport, TaskStatus};
use crate::sandbox::user::workspace_dir;
use crate::verify;

/// What dependents learn about a finished task.
#[derive(Clone, Debug)]
pub struct DepResult {
    /// The verified commit, if the task produced one.
    pub commit: Option<git2::Oid>,
    /// Whether dependents may run (verified, or nothing to change).
    pub ok: bool,
    pub status: TaskStatus,
}

pub(super) struct Paths {
    pub(super) worktree: PathBuf,
    pub(super) scratch: PathBuf,
    pub(super) events: PathBuf,
    pub(super) stderr_log: PathBuf,
    pub(super) status_file: PathBuf,
    pub(super) patch: PathBuf,
    pub(super) wt_name: String,
    pub(super) branch: String,
    /// The overlay's layers when the run uses overlay workspaces (`worktree` is then where
    /// the view is mounted, inside the task's processes only).
    pub(super) overlay: Option<super::workspace::Layers>,
}

impl Paths {
    /// Where fanout itself reads the task's changed files: the upper folder of an overlay
    /// workspace (it holds every changed file; deleted ones are whiteouts), else the worktree.
    pub(super) fn readable_root(&self) -> &Path {
        match &self.overlay {
            Some(l) => &l.spec.upper,
            None => &self.worktree,
        }
    }
}

/// A task run again after it conflicted (`--on-conflict retry`): from this commit (the
/// integration head), told which paths conflicted.
#[derive(Clone, Debug)]
pub(crate) struct Rerun {
    pub start: git2::Oid,
    pub feedback: String,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    index: usize,
    deps: Vec<(String, watch::Receiver<Option<DepResult>>)>,
    jobs: Arc<Semaphore>,
    rerun: Option<Rerun>,
) -> (TaskReport, Pending, DepResult) {
    let task = &shared.tasks[index];
    let mut report = TaskReport::new(task.id().as_str(), &task.agent_name);
    let started = shared.run_started;

    let mut slot = None;
    let (pending, commit) =
        match pipeline(&shared, index, deps, jobs, rerun, &mut report, &mut slot).await {
            Ok(r) => r,
            Err(Stop { status, error }) => {
                report.status = status;
                report.error = Some(error);
                (Pending::Done, None)
            }
        };
    if !shared.options.keep_worktrees {
        crate::taskenv::remove_task_tmp(&shared.run_dir, index);
    }
    if report.patch.is_none() {
        // One patch per task, empty when the task changed nothing (or never ran).
        let patch = shared
            .run_dir
            .join("patches")
            .join(format!("{}.patch", task.id()));
        if std::fs::write(&patch, b"").is_ok() {
            report.patch = Some(patch.display().to_string());
        }
    }
    // Queued until it got a job slot, running from then on.
    let (queued, ran) = match slot {
        Some(t) => (t.duration_since(started), t.elapsed()),
        None => (started.elapsed(), Duration::ZERO),
    };
    report.queued_ms = queued.as_millis() as u64;
    report.duration_ms = ran.as_millis() as u64;
    report.attempts = report.attempt_history.len();
    let ok = matches!(pending, Pending::Ready(_)) || report.status == TaskStatus::NoChanges;
    let dep = DepResult {
        commit,
        ok,
        status: report.status,
    };
    (report, pending, dep)
}

/// Ends a pipeline early with a status and a message.
pub(crate) struct Stop {
    status: TaskStatus,
    error: String,
}

pub(crate) fn stop(status: TaskStatus, error: impl Into<String>) -> Stop {
    Stop {
        status,
        error: error.into(),
    }
}

async fn pipeline(
    shared: &Arc<Shared>,
    index: usize,
    deps: Vec<(String, watch::Receiver<Option<DepResult>>)>,
    jobs: Arc<Semaphore>,
    rerun: Option<Rerun>,
    report: &mut TaskReport,
    slot: &mut Option<Instant>,
) -> Result<(Pending, Option<git2::Oid>), Stop> {
    let task = &shared.tasks[index];
    // 1. Dependencies: all must be verified; the task starts from base + their commits.
    let mut dep_commits = Vec::new();
    for (name, mut rx) in deps {
        let result = loop {
            if let Some(r) = rx.borrow().clone() {
                break r;
            }
            if rx.changed().await.is_err() {
                break DepResult {
                    commit: None,
                    ok: false,
                    status: TaskStatus::Failed,
                };
            }
        };
        if !result.ok {
            return Err(stop(
                TaskStatus::Skipped,
                format!("dependency {name} ended {}", result.status.as_str()),
            ));
        }
        dep_commits.extend(result.commit);
    }
    if *shared.cancel.borrow() {
        return Err(stop(TaskStatus::Failed, "interrupted before it started"));
    }
    let _permit = jobs
        .acquire_owned()
        .await
        .map_err(|_| stop(TaskStatus::Failed, "the job limiter closed"))?;
    *slot = Some(Instant::now());
    if *shared.cancel.borrow() {
        return Err(stop(TaskStatus::Failed, "interrupted before it started"));
    }

    let id = task.id().clone();
    let mut paths = Paths {
        // Real paths: as root they lie outside the run folder, which agents may not reach.
        worktree: workspace_dir(&shared.run_dir, "worktrees").join(id.as_str()),
        scratch: workspace_dir(&shared.run_dir, "scratch").join(id.as_str()),
        events: shared.run_dir.join("events").join(format!("{id}.jsonl")),
        stderr_log: shared.run_dir.join("logs").join(format!("{id}.stderr.log")),
        status_file: shared.run_dir.join("status").join(format!("{id}.json")),
        patch: shared.run_dir.join("patches").join(format!("{id}.patch")),
        wt_name: worktree::worktree_name(shared.run_id.as_str(), id.as_str()),
        branch: task_branch(&shared.run_id, &id),
        overlay: None,
    };
    report.event_log = Some(paths.events.display().to_string());
    report.stderr_log = Some(paths.stderr_log.display().to_string());
    let events = EventLog::open(&paths.events).map_err(|e| {
        stop(
            TaskStatus::Failed,
            format!("cannot open the event log {}: {e}", paths.events.display()),
        )
    })?;
    events.record(
        "task_started",
        json!({"task": id, "agent": task.agent_name}),
    );

    // 2. Worktree (and the dependency integration commit it starts from).
    let (start, layers, taken) = {
        let (shared2, id2) = (shared.clone(), id.clone());
        let (common, base, wt, name, branch, scratch) = (
            shared.repo_path.clone(),
            shared.base,
            paths.worktree.clone(),
            paths.wt_name.clone(),
            paths.branch.clone(),
            paths.scratch.clone(),
        );
        let (rerun_start, common_dir) =
            (rerun.as_ref().map(|r| r.start), shared.common_dir.clone());
        let (workdir, include, sink, task_id) = (
            shared.workdir.clone(),
            task.include.clone(),
            shared.events.clone(),
            id.to_string(),
        );
        blocking(move || {
            let repo = git2::Repository::open(&common)
                .map_err(|e| format!("cannot open the repository: {e}"))?;
            let start = match rerun_start {
                Some(start) => {
                    // The first run's workspace (kept with --keep-worktrees) and branch go:
                    // the task starts afresh from the integration head.
                    worktree::remove(&common_dir, &name, &wt)
                        .map_err(|e| crate::error_chain(&e))?;
                    worktree::remove_tree(&scratch)
                        .map_err(|e| format!("cannot remove {}: {e}", scratch.display()))?;
                    if let Ok(mut b) = repo.find_branch(&branch, git2::BranchType::Local) {
                        b.delete()
                            .map_err(|e| format!("cannot replace branch {branch}: {e}"))?;
                    }
                    start
                }
                None => super::integrate::dependency_base(&repo, base, &dep_commits)?,
            };
            let ws = &shared2.workspaces;
            let mut taken = None;
            let layers = if ws.overlay() {
                Some(ws.create_overlay(&shared2, &repo, &branch, start, &wt, id2.as_str())?)
            } else {
                // A parked worktree is only registered here; the sandboxed reset (below, once
                // the task's sandbox is known) brings it to `start`.
                taken = ws.pool.take(&wt);
                match &taken {
                    Some(_) => worktree::adopt(&repo, &name, &branch, start, &wt),
                    None => worktree::create(&repo, &name, &branch, start, &wt),
                }
                .map_err(|e| crate::error_chain(&e))?;
                None
            };
            if taken.is_none() {
                // `include`: ignored files of the checkout, before anything runs in the
                // workspace (an overlay's view is its upper folder until the sandbox mounts it).
                let target = layers
                    .as_ref()
                    .map(|l| l.spec.upper.clone())
                    .unwrap_or_else(|| wt.clone());
                copy_include(&workdir, &target, &include, &sink, &task_id)?;
            }
            for sub in ["tmp", "home"] {
                std::fs::create_dir_all(scratch.join(sub))
                    .map_err(|e| format!("cannot create scratch folder: {e}"))?;
            }
            Ok((start, layers, taken))
        })
        .await
        .map_err(|e| stop(TaskStatus::Failed, e))?
    };
    paths.overlay = layers;
    report.branch = Some(paths.branch.clone());
    report.started_from = Some(start.to_string());
    shared.events.emit(EventKind::WorkspaceReady {
        task: id.to_string(),
        branch: paths.branch.clone(),
        started_from: start.to_string(),
    });
    {
        let (sink, task) = (shared.events.clone(), id.to_string());
        events.forward_to(move |kind, summary| {
            sink.emit(EventKind::AgentEvent {
                task: task.clone(),
                kind,
                summary,
            })
        });
    }
    let task_env = {
        let (run_dir, common, scratch, caches, run_as) = (
            shared.run_dir.clone(),
            shared.common_dir.clone(),
            paths.scratch.clone(),
            task.caches.clone(),
            shared.options.sandbox.run_as,
        );
        blocking(move || {
            crate::taskenv::prepare_task(&run_dir, &common, index, &scratch, &caches, run_as)
                .map_err(|e| crate::error_chain(&e))
        })
        .await
        .map_err(|e| stop(TaskStatus::Failed, e))?
    };

    // 3. Agent session, after the workspace setup (same sandbox and environment).
    let spawn = spawn_spec(shared, task, &paths, &task_env);
    if let Some(taken) = taken {
        reset_reused_worktree(shared, task, &paths, &spawn, taken, start)
            .await
            .map_err(|e| stop(TaskStatus::Failed, e))?;
    }
    if let Some(cmd) = &task.setup {
        let log = shared.run_dir.join("logs").join(format!("{id}.setup.log"));
        let mut cancel = shared.cancel.clone();
        // A stop request must not wait for a long setup (its process is stopped on drop).
        tokio::select! {
            r = crate::setup::run(&spawn, &paths.worktree, cmd, task.setup_timeout_secs, &log) => {
                r.map_err(|e| stop(TaskStatus::Failed, e))?
            }
            _ = cancel.wait_for(|c| *c) => {
                return Err(stop(TaskStatus::Failed, "interrupted by the user during setup"))
            }
        }
    }
    let ctx = AgentContext {
        task_id: id.clone(),
        worktree: paths.worktree.clone(),
        scratch: paths.scratch.clone(),
        profile: task.profile.clone(),
        protocol: task.profile.protocol,
        events: events.clone(),
        spawn: spawn.clone(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(task.timeout_secs);
    let mut cancel = shared.cancel.clone();
    let session = tokio::select! {
        s = Session::start(ctx) => s,
        _ = cancel.wait_for(|c| *c) => Err(AgentError::Reported("interrupted".into())),
    };
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            record_sandbox(report, None, &paths.status_file);
            return Err(agent_stop(e));
        }
    };

    // A task run again after a conflict starts a fresh session: an exec agent gets the
    // conflict as feedback (`FANOUT_FEEDBACK`), a conversational one in its prompt.
    let is_exec = task.profile.protocol == crate::taskfile::Protocol::Exec;
    let first_prompt = match &rerun {
        Some(r) if !is_exec => format!("{}\n\n{}", task.spec.prompt, r.feedback),
        _ => task.spec.prompt.clone(),
    };
    let mut feedback: Option<String> = rerun
        .as_ref()
        .filter(|_| is_exec)
        .map(|r| r.feedback.clone());
    let mut attempt = 0u32;
    let mut collect_failed = false;
    let result = loop {
        attempt += 1;
        if attempt > 1 {
            // Collections leave an overlay task's index alone; the agent's next turn should
            // see `git status` clean but for what it changes next.
            super::steps::refresh_index(shared, &paths, start, task).await;
        }
        let turn_deadline = deadline.min(
            tokio::time::Instant::now() + Duration::from_secs_f64(task.profile.tool_timeout_sec),
        );
        events.record("turn_started", json!({"attempt": attempt}));
        shared.events.emit(EventKind::AgentStarted {
            task: id.to_string(),
            attempt,
        });
        let turn = tokio::select! {
            t = async {
                match &feedback {
                    Some(f) => session.feedback(&task.spec.prompt, f, turn_deadline).await,
                    None => session.turn(&first_prompt, turn_deadline).await,
                }
            } => t,
            _ = cancel.wait_for(|c| *c) => Err(AgentError::Reported("interrupted by the user".into())),
        };
        if let Err(e) = turn {
            // A feedback round that fails leaves the gate failure as the task's outcome.
            break Err(match feedback {
                Some(_) if attempt > 1 && !*shared.cancel.borrow() => {
                    super::retry::feedback_round_failed(report, &e)
                }
                _ => agent_stop(e),
            });
        }
        // 4. Collect.
        let collected = collect_blocking(shared, &paths, start, task).await;
        let collected = match collected {
            Ok(c) => c,
            Err(e) => {
                collect_failed = true;
                break Err(keep_workspace(shared, &paths, report, &e));
            }
        };
        let mut attempt_report = AttemptReport {
            number: attempt,
            commit: collected.commit.map(|c| c.to_string()),
            gates: Vec::new(),
            failure: None,
            diagnosis: None,
        };
        fill_change(report, &collected, &paths);
        shared.events.emit(EventKind::AttemptEnded {
            task: id.to_string(),
            attempt,
            commit: collected.commit.map(|c| c.to_string()),
            files: collected.summary.files.len(),
            insertions: collected.summary.insertions,
            deletions: collected.summary.deletions,
        });
        if !collected.summary.risky.is_empty() {
            events.record(
                "risky_changes",
                json!({"attempt": attempt, "changes": collected.summary.risky}),
            );
            shared.events.warn(
                Some(id.as_str()),
                &format!(
                    "changes that deserve a look: {}",
                    collected
                        .summary
                        .risky
                        .iter()
                        .map(|r| format!("{} ({})", r.path, r.why))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if collected.commit.is_none() {
            report.attempt_history.push(attempt_report);
            break Ok(None);
        }
        // 5. Verify. The judges read a snapshot of the commit, removed with `view`.
        let mut view = JudgeView::default();
        // A stop request must not wait for a long verify command.
        let gates = tokio::select! {
            g = verify_gates(shared, task, &paths, &spawn, &collected, report, &mut view) => g,
            _ = cancel.wait_for(|c| *c) => break Err(stop(TaskStatus::Failed, "interrupted by the user during verification")),
        };
        events.record(
            "verify",
            json!({"attempt": attempt, "gates": gates, "readback": report.readback}),
        );
        for e in crate::event::gate_events(id.as_str(), attempt, &gates) {
            shared.events.emit(e);
        }
        let failed: Vec<&GateResult> = gates.iter().filter(|g| !g.passed).collect();
        if failed.is_empty() {
            attempt_report.gates = gates.clone();
            report.verify = gates;
            report.attempt_history.push(attempt_report);
            break Ok(collected.commit);
        }
        let text = feedback_prompt(&failed, attempt, task.max_attempts);
        attempt_report.failure = Some(
            failed
                .iter()
                .map(|g| g.detail.clone().unwrap_or_else(|| g.gate.clone()))
                .collect::<Vec<_>>()
                .join("; "),
        );
        attempt_report.gates = gates.clone();
        report.verify = gates;
        report.attempt_history.push(attempt_report);
        events.record(
            "verify_failed",
            json!({"attempt": attempt, "feedback": text}),
        );
        if attempt >= task.max_attempts || *shared.cancel.borrow() {
            break Err(stop(
                TaskStatus::VerifyFailed,
                super::retry::verify_failed_error(report, attempt),
            ));
        }
        let mut text = text;
        if task.diagnose {
            // A root-cause diagnosis by Claude Code goes with the gates' output; it reads the
            // commit's snapshot, never the workspace.
            let diagnose = async {
                let snapshot = view
                    .root(shared, task, &collected, true)
                    .await
                    .map_err(|why| verify::claude::AskError::Start {
                        program: task.claude.clone(),
                        detail: why,
                    })?;
                let place = verify::diagnose::Place {
                    judges: &shared.judges,
                    claude: &task.claude,
                    snapshot,
                    stderr_log: &paths.stderr_log,
                    status_file: &paths.status_file,
                };
                verify::diagnose::diagnose(
                    place,
                    &task.spec.prompt,
                    &text,
                    &collected.summary.files,
                )
                .await
            };
            let diagnosis = tokio::select! {
                d = diagnose => d,
                _ = cancel.wait_for(|c| *c) => break Err(stop(TaskStatus::Failed, "interrupted by the user during diagnosis")),
            };
            match diagnosis {
                Ok(d) => {
                    events.record("diagnosis", json!({"attempt": attempt, "text": d}));
                    shared.events.emit(EventKind::Diagnosis {
                        task: id.to_string(),
                        attempt,
                        text: d.clone(),
                    });
                    if let Some(a) = report.attempt_history.last_mut() {
                        a.diagnosis = Some(d.clone());
                    }
                    text.push_str(&verify::diagnose::section(&d));
                }
                Err(e) => shared.events.warn(
                    Some(id.as_str()),
                    &format!("no diagnosis for attempt {attempt}: {e}"),
                ),
            }
        }
        feedback = Some(text);
    };
    report.agent = session.info();
    record_sandbox(report, report.agent.sandbox.clone(), &paths.status_file);
    if let Some(sb) = report
        .agent
        .sandbox
        .as_ref()
        .filter(|s| s.status == crate::sandbox::EnforcementStatus::PartiallyEnforced)
    {
        shared.events.warn(
            Some(id.as_str()),
            &format!(
                "the sandbox is only partially enforced (kernel ABI {}): missing {}",
                sb.abi.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
                sb.missing.join(", ")
            ),
        );
    }
    session.shutdown().await;

    match result {
        Ok(Some(commit)) => {
            report.commit = Some(commit.to_string());
            events.record("verified", json!({"commit": commit.to_string()}));
            shared.events.emit(EventKind::Committed {
                task: id.to_string(),
                commit: commit.to_string(),
            });
            Ok((Pending::Ready(commit), Some(commit)))
        }
        Ok(None) => {
            report.status = TaskStatus::NoChanges;
            events.record("no_changes", json!({}));
            Ok((Pending::Done, None))
        }
        Err(mut s) => {
            // Keep whatever the agent left, on its branch, for the user to look at; when it
            // cannot be committed, the workspace itself is kept.
            if !collect_failed {
                match collect_blocking(shared, &paths, start, task).await {
                    Ok(c) => {
                        fill_change(report, &c, &paths);
                        report.commit = c.commit.map(|c| c.to_string());
                    }
                    Err(e) => {
                        let kept = keep_workspace(shared, &paths, report, &e);
                        s.error = format!("{}; {}", s.error, kept.error);
                    }
                }
            }
            events.record(
                "task_failed",
                json!({"status": s.status.as_str(), "error": s.error}),
            );
            Err(s)
        }
    }
}

/// Copies the task's `include` files (ignored files of the user's checkout) into `target`.
fn copy_include(
    workdir: &Path,
    target: &Path,
    include: &[crate::include::Entry],
    sink: &super::events::Events,
    task_id: &str,
) -> Result<(), String> {
    for w in crate::include::copy(workdir, target, include).map_err(|e| crate::error_chain(&e))? {
        sink.warn(Some(task_id), &w);
    }
    Ok(())
}

/// Brings a worktree taken from the pool to `start` inside the task's sandbox; when that does
/// not work, the worktree is removed and checked out afresh. Then the `include` files.
async fn reset_reused_worktree(
    shared: &Arc<Shared>,
    task: &super::PlannedTask,
    paths: &Paths,
    spawn: &crate::process::SpawnSpec,
    taken: super::pool::Taken,
    start: git2::Oid,
) -> Result<(), String> {
    let admin = worktree::admin_dir(&shared.common_dir, &paths.wt_name);
    let admin = std::path::absolute(&admin).unwrap_or(admin);
    let log = shared
        .run_dir
        .join("logs")
        .join(format!("{}.reset.log", task.id()));
    let reset = shared
        .workspaces
        .pool
        .reset(super::pool::ResetJob {
            spec: spawn,
            taken: &taken,
            wt: &paths.worktree,
            admin: &admin,
            scratch: &paths.scratch,
            start,
            log: &log,
        })
        .await;
    if reset.is_err() && *shared.cancel.borrow() {
        // Stopped by the interrupt: no fresh checkout (cleanup removes the worktree).
        return Err("interrupted by the user while the workspace was reset".into());
    }
    let (s, wt, name) = (
        shared.clone(),
        paths.worktree.clone(),
        paths.wt_name.clone(),
    );
    let (include, task_id) = (task.include.clone(), task.id().to_string());
    blocking(move || {
        if let Err(e) = reset {
            // A repository with submodules is simply not pooled: nothing to warn about.
            if let super::pool::ResetError::Failed(why) = e {
                s.events.warn(
                    Some(&task_id),
                    &format!(
                        "a reused worktree was checked out afresh, and worktrees are no longer reused in this run: {why}"
                    ),
                );
            }
            worktree::remove_tree(&wt)
                .map_err(|e| format!("cannot remove {}: {e}", wt.display()))?;
            let repo = git2::Repository::open(&s.repo_path)
                .map_err(|e| format!("cannot open the repository: {e}"))?;
            worktree::check_out(&repo, &name, start, &wt).map_err(|e| crate::error_chain(&e))?;
        }
        copy_include(&s.workdir, &wt, &include, &s.events, &task_id)
    })
    .await
}
