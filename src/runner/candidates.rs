/*!
Candidates (best-of-N): a task with `candidates` runs each candidate as an attempt of its own —
its own workspace (named `<id>+candidate-<k>`), job slot, agent and branch
`fanout/<run>/task/<id>/candidate-<k>` — with every gate; then [`super::select`] picks the
task's commit among the passing ones. Under `select: "first"` the first to pass stops the
others at once (their futures are dropped: their agents' process trees get SIGTERM).
The other candidates' branches stay until `fanout clean --branches`.

Spending (issue 23): each candidate's tokens and money come from the task's ledger
([`super::spending::Spending`]), so a stopped candidate's count too; the task's are the sum of its
candidates' and of the review that chose among them. Once the run's budget is spent (or the
task's) no further candidate starts: those end `skipped` (`budget_exceeded`), and the task is
stopped by the budget — its candidates' work on their branches, not merged — for `fanout
resume --budget` to run again.
*/

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::candidate_outcome::{Ended, Outcome};
use super::outcome::{stop, Rerun};
use super::paths::{Paths, Workplace};
use super::shared::{Pending, Shared};
use crate::event::EventKind;
use crate::phase::TaskPhase;
use crate::report::{CandidateReport, TaskReport, TaskStatus};
use crate::taskfile::SelectMode;

/// One attempt at a task in a workspace: `runner::task::in_workspace` (passed in, so this
/// module does not import the task's).
pub(super) type Attempt = for<'a> fn(
    &'a Arc<Shared>,
    Workplace<'a>,
    Vec<git2::Oid>,
    Option<&'a Rerun>,
    &'a mut TaskReport,
) -> Pin<Box<dyn Future<Output = Ended> + Send + 'a>>;

/// Where a task's candidates start.
pub(super) struct Start {
    pub index: usize,
    pub dep_commits: Vec<git2::Oid>,
    pub rerun: Option<Rerun>,
    pub jobs: Arc<Semaphore>,
    pub attempt: Attempt,
}

/// Runs the task's candidates side by side and makes the chosen one's commit the task's.
pub(super) async fn run(
    shared: &Arc<Shared>,
    start: Start,
    report: &mut TaskReport,
    slot: &mut Option<Instant>,
) -> Ended {
    let task = &shared.tasks[start.index];
    let n = task.candidates.len() as u32;
    shared.spending.begin_candidates(task.id().as_str());
    let start = Arc::new(start);
    let mut set = tokio::task::JoinSet::new();
    for k in 1..=n {
        set.spawn(one(shared.clone(), start.clone(), k));
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut first_passed = None;
    while let Some(joined) = set.join_next().await {
        // A candidate stopped by `first` (aborted) has no outcome: it is `stopped`.
        let Ok(o) = joined else { continue };
        ended_event(shared, task.id().as_str(), &o);
        if o.commit().is_some() && first_passed.is_none() {
            first_passed = Some(o.k);
            if task.select == SelectMode::First {
                set.abort_all();
            }
        }
        outcomes.push(o);
    }
    outcomes.sort_by_key(|o| o.k);
    *slot = outcomes.iter().filter_map(|o| o.slot).min();
    let stopped: Vec<u32> = (1..=n)
        .filter(|k| !outcomes.iter().any(|o| o.k == *k))
        .collect();
    for &k in &stopped {
        stopped_candidate(shared, start.index, k).await;
    }
    if let Some(stop) = budget_stop(&outcomes) {
        let choice = super::select::not_chosen(&outcomes, &stopped, first_passed);
        report.candidates = (1..=n)
            .map(|k| candidate_report(shared, task, &outcomes, &choice, k))
            .collect();
        return Err(stop);
    }
    let (choice, judged) = crate::usage::scope::counting(super::select::choose(
        shared,
        start.index,
        &outcomes,
        &stopped,
        first_passed,
    ))
    .await;
    let spent = account_selection(shared, task.id().as_str(), judged);
    // The review that chose may have taken the task over its budget: nothing is merged then.
    if let Some(why) = super::budget::task_spent_over(shared, task.id().as_str()) {
        report.candidates = (1..=n)
            .map(|k| candidate_report(shared, task, &outcomes, &choice, k))
            .collect();
        report.select_usage = spent.map(Box::new);
        return Err(stop(
            TaskStatus::BudgetExceeded,
            format!("{why} after the review that chose among its candidates (their work is on their branches, not merged)"),
        ));
    }
    conclude(shared, start.index, outcomes, (choice, spent), report)
}

/// The task stopped by a budget when one of its candidates was: one not started because the
/// run's budget was spent (the task is `skipped` when none started), or one over the task's.
fn budget_stop(outcomes: &[Outcome]) -> Option<super::outcome::Stop> {
    let stopped: Vec<&Outcome> = outcomes.iter().filter(|o| o.by_budget()).collect();
    let first = stopped.first()?;
    let why = first.error().unwrap_or_default();
    if stopped.len() == outcomes.len() && outcomes.iter().all(|o| o.slot.is_none()) {
        return Some(stop(TaskStatus::Skipped, why));
    }
    let each: Vec<String> = outcomes
        .iter()
        .map(|o| format!("candidate {} {}", o.k, o.status()))
        .collect();
    Some(stop(
        TaskStatus::BudgetExceeded,
        format!(
            "{why}; {} (their work is on their branches, not merged)",
            each.join(", ")
        ),
    ))
}

/// What the review that chose among the candidates spent, priced, counted as the task's (a
/// judge of it) and the run's.
fn account_selection(
    shared: &Shared,
    task: &str,
    judged: Vec<crate::usage::scope::Spent>,
) -> Option<crate::usage::Usage> {
    let mut sum = None;
    for (usage, model) in judged {
        let (usage, warning) = shared.spending.price(model.as_deref(), usage);
        if let Some(w) = warning {
            shared.events.warn(Some(task), &w);
        }
        crate::usage::Usage::add_to(&mut sum, Some(&usage));
    }
    let spent = sum?;
    shared.spending.record(task, None, &spent);
    Some(spent)
}

/// One candidate: its slot, then the task's phases in its own workspace; its leftovers go as
/// soon as it ended (unless kept).
async fn one(shared: Arc<Shared>, start: Arc<Start>, k: u32) -> Outcome {
    let base = &shared.tasks[start.index];
    let planned = &base.candidates[(k - 1) as usize];
    let mut task = base.clone();
    task.agent_name = planned.agent_name.clone();
    task.profile = std::sync::Arc::new(planned.profile.clone());
    task.launch = planned.launch.clone();
    let mut report = TaskReport::new(task.id().as_str(), &task.agent_name);
    let paths = Paths::candidate(&shared, task.id(), k);
    let permit = match start.jobs.clone().acquire_owned().await {
        Ok(p) if !*shared.cancel.borrow() => p,
        _ => {
            let result = Err(stop(TaskStatus::Failed, "interrupted before it started"));
            return Outcome {
                k,
                report,
                result,
                slot: None,
            };
        }
    };
    // Issue 23: no candidate starts once the run's budget (or the task's) is spent.
    let over = shared
        .spending
        .run_spent()
        .map(|why| (TaskStatus::Skipped, why));
    let over = over.or_else(|| {
        super::budget::task_over(&shared, task.id().as_str()).map(|why| {
            (
                TaskStatus::BudgetExceeded,
                format!("{why} before it started"),
            )
        })
    });
    if let Some((status, why)) = over {
        return Outcome {
            k,
            report,
            result: Err(stop(status, why)),
            slot: None,
        };
    }
    let slot = Some(Instant::now());
    shared.events.emit(EventKind::CandidateStarted {
        task: task.id().to_string(),
        candidate: k,
        agent: task.agent_name.clone(),
        branch: paths.branch.clone(),
    });
    let env_index = env_index(&shared, start.index, k);
    let (key, scratch) = (paths.key.clone(), paths.scratch.clone());
    let at = Workplace {
        task: &task,
        env_index,
        paths,
    };
    let deps = start.dep_commits.clone();
    let result = (start.attempt)(&shared, at, deps, start.rerun.as_ref(), &mut report).await;
    if let Some(t) = slot {
        report.duration_ms = t.elapsed().as_millis() as u64;
    }
    release(&shared, &key, &scratch, env_index, &report).await;
    drop(permit);
    Outcome {
        k,
        report,
        result,
        slot,
    }
}

/// Candidate `k`'s index for its short TMPDIR and egress sockets: after every task's.
fn env_index(shared: &Shared, index: usize, k: u32) -> usize {
    index + shared.tasks.len() * k as usize
}

/// A candidate's workspace, TMPDIR and cache layers go (kept with `--keep-worktrees`, or when
/// its work could not be committed).
async fn release(
    shared: &Arc<Shared>,
    key: &str,
    scratch: &std::path::Path,
    env: usize,
    report: &TaskReport,
) {
    crate::caches::remove_task_layers(&crate::taskenv::cache_layers_dir(scratch));
    if super::integrate::keeps_workspace(shared.options.keep_worktrees, report) {
        super::integrate::secure_kept(shared, key);
        return;
    }
    crate::taskenv::remove_task_tmp(&shared.run_dir, env);
    let (s, key) = (shared.clone(), key.to_string());
    let id = report.id.clone();
    let keep_thread = super::threads::may_continue(shared);
    if let Err(e) = super::steps::blocking(move || {
        super::integrate::remove_workspace_files(&s, &key, keep_thread)
    })
    .await
    {
        shared.events.warn(Some(&id), &e);
    }
}

/// A candidate stopped before it ended: said, and its workspace removed.
async fn stopped_candidate(shared: &Arc<Shared>, index: usize, k: u32) {
    let task = &shared.tasks[index];
    shared.events.emit(EventKind::CandidateEnded {
        task: task.id().to_string(),
        candidate: k,
        status: "stopped".into(),
        commit: None,
        insertions: 0,
        deletions: 0,
        error: None,
        usage: shared.spending.candidate_spent(task.id().as_str(), k),
    });
    let paths = Paths::candidate(shared, task.id(), k);
    let report = TaskReport::new(task.id().as_str(), "");
    let env = env_index(shared, index, k);
    release(shared, &paths.key, &paths.scratch, env, &report).await;
}

fn ended_event(shared: &Shared, task: &str, o: &Outcome) {
    shared.events.emit(EventKind::CandidateEnded {
        task: task.to_string(),
        candidate: o.k,
        status: o.status(),
        commit: o.commit().map(|c| c.to_string()),
        insertions: o.report.insertions,
        deletions: o.report.deletions,
        error: o.error(),
        usage: shared.spending.candidate_spent(task, o.k),
    });
}

/// The task's report and outcome from its candidates and the choice among them.
fn conclude(
    shared: &Arc<Shared>,
    index: usize,
    outcomes: Vec<Outcome>,
    (choice, select_usage): (super::select::Choice, Option<crate::usage::Usage>),
    report: &mut TaskReport,
) -> Ended {
    let task = &shared.tasks[index];
    let n = task.candidates.len() as u32;
    let candidates: Vec<CandidateReport> = (1..=n)
        .map(|k| candidate_report(shared, task, &outcomes, &choice, k))
        .collect();
    let Some((k, reason)) = choice.chosen.clone() else {
        report.candidates = candidates;
        report.select_usage = select_usage.clone().map(Box::new);
        return no_candidate_passed(&outcomes, report);
    };
    let chosen = outcomes.into_iter().find(|o| o.k == k);
    let Some(Outcome {
        report: mut r,
        result,
        ..
    }) = chosen
    else {
        return Err(stop(
            TaskStatus::Failed,
            "the chosen candidate has no outcome",
        ));
    };
    let commit = match result {
        Ok((Pending::Ready(c), _)) => c,
        _ => {
            return Err(stop(
                TaskStatus::Failed,
                "the chosen candidate has no commit",
            ))
        }
    };
    // The task's patch is the chosen candidate's.
    let task_patch = crate::run_dir::RunDir::new(&shared.run_dir)
        .task(task.id().as_str())
        .patch;
    if let Some(p) = &r.patch {
        if std::fs::copy(p, &task_patch).is_ok() {
            r.patch = Some(task_patch.display().to_string());
        }
    }
    r.candidates = candidates;
    r.candidate = Some(k);
    r.select_usage = select_usage.clone().map(Box::new);
    // A run again (after a conflict) keeps the task's earlier rounds before the chosen one's.
    let mut rounds = std::mem::take(&mut report.rounds);
    rounds.append(&mut r.rounds);
    for (n, round) in rounds.iter_mut().enumerate() {
        round.round = n as u32 + 1;
    }
    r.rounds = rounds;
    *report = r;
    shared.events.emit(EventKind::CandidateSelected {
        task: task.id().to_string(),
        candidate: k,
        reason,
        usage: select_usage,
    });
    shared.events.emit(EventKind::Committed {
        task: task.id().to_string(),
        commit: commit.to_string(),
    });
    shared.events.emit(EventKind::Phase {
        task: task.id().to_string(),
        phase: TaskPhase::Ready,
    });
    Ok((Pending::Ready(commit), Some(commit)))
}

/// No candidate passed: no changes when none changed anything, else the task fails with
/// each candidate's failure.
fn no_candidate_passed(outcomes: &[Outcome], report: &mut TaskReport) -> Ended {
    if !outcomes.is_empty() && outcomes.iter().all(|o| o.result.is_ok()) {
        report.status = TaskStatus::NoChanges;
        return Ok((Pending::Done, None));
    }
    let status = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|s| s.status))
        .find(|s| *s == TaskStatus::VerifyFailed)
        .unwrap_or(TaskStatus::Failed);
    let each: Vec<String> = outcomes
        .iter()
        .map(|o| {
            let why = o.error().unwrap_or_else(|| o.status());
            format!("candidate {} ({}): {}", o.k, o.status(), why)
        })
        .collect();
    Err(stop(
        status,
        format!("no candidate passed: {}", each.join("; ")),
    ))
}

fn candidate_report(
    shared: &Shared,
    task: &crate::plan::PlannedTask,
    outcomes: &[Outcome],
    choice: &super::select::Choice,
    k: u32,
) -> CandidateReport {
    let reason = choice.reasons.get(&k).cloned();
    let chosen = choice.chosen.as_ref().is_some_and(|(c, _)| *c == k);
    let agent_name = task.candidates[(k - 1) as usize].agent_name.clone();
    let branch = Paths::candidate(shared, task.id(), k).branch;
    let usage = shared.spending.candidate_spent(task.id().as_str(), k);
    let Some(o) = outcomes.iter().find(|o| o.k == k) else {
        return CandidateReport {
            candidate: k,
            agent_name,
            branch: Some(branch),
            status: "stopped".into(),
            reason,
            usage,
            ..Default::default()
        };
    };
    let r = &o.report;
    CandidateReport {
        candidate: k,
        agent_name,
        branch: Some(branch),
        status: o.status(),
        commit: o
            .commit()
            .map(|c| c.to_string())
            .or_else(|| r.commit.clone()),
        files: r.files.clone(),
        insertions: r.insertions,
        deletions: r.deletions,
        duration_ms: r.duration_ms,
        attempts: r.attempt_history.len(),
        gates: r.verify.clone(),
        error: o.error(),
        chosen,
        reason,
        patch: r.patch.clone(),
        event_log: r.event_log.clone(),
        stderr_log: r.stderr_log.clone(),
        agent: r.agent.clone(),
        usage,
    }
}
