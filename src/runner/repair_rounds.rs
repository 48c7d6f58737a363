/*!
The integration gate with repair rounds (`integrate: {verify, repair: N}`): the gate runs; each
task its bisection took out (not a group's) goes back to its own agent with the gate's output,
in a workspace at the integration plus its change (the tree that fails); a fix that passes the
task's own gates and the repair's scope joins the integration again as one commit (the task's
change and its fix), and the gate runs again. After N rounds what still fails stays out, as
without repair.
*/

use std::sync::Arc;

use git2::{Oid, Repository};

use super::integrate::{apply_ready, Integration};
use super::outcome::Rerun;
use super::pipelines::{rerun_all, RerunOf};
use super::repair::{feedback, RepairScope};
use super::shared::{Pending, RunError, Shared};
use crate::plan::IntegrateGate;
use crate::report::{IntegrationReport, TaskReport, TaskStatus};

/// The integration gate, with up to `gate.repair` repair rounds.
pub(super) fn run(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    gate: &IntegrateGate,
    reports: &mut [TaskReport],
    pendings: &mut [Pending],
    integration: &mut Integration,
) -> Result<IntegrationReport, RunError> {
    let mut report = super::gate::run(shared, gate, runtime.handle(), reports, integration);
    let mut runs = 0;
    let mut out_for_good: Vec<String> = Vec::new();
    // Repairs that gave no fix: they get the next round (from the same failing tree).
    let mut again: Vec<usize> = Vec::new();
    // Every task a round gave back to the integration.
    let mut given_back: Vec<usize> = Vec::new();
    for round in 1..=gate.repair {
        let mut culprits = repairable(shared, reports, &report);
        for i in again.drain(..) {
            if !culprits.contains(&i) {
                culprits.push(i);
            }
        }
        if culprits.is_empty() || shared.stop.requested() {
            break;
        }
        runs += report.verify_runs;
        out_for_good.extend(
            report
                .ejected
                .iter()
                .filter(|id| !culprits.iter().any(|&i| reports[i].id == **id))
                .cloned(),
        );
        let repo =
            Repository::open(&shared.repo_path).map_err(|source| crate::git::GitError::Op {
                what: "cannot open the repository for integration repair".into(),
                source,
            })?;
        let round = (round, gate.repair);
        let tasks = (&mut *reports, &mut *pendings);
        let (back, failed, over) =
            give_back(runtime, shared, &repo, tasks, integration, &culprits, round);
        again = failed;
        // Over the task's budget: out for good, `budget_exceeded` (issue 23).
        out_for_good.extend(over.iter().map(|&i| reports[i].id.clone()));
        for &i in &back {
            if !given_back.contains(&i) {
                given_back.push(i);
            }
        }
        if back.is_empty() {
            // Nothing changed: the integration stays as the gate left it (it passed).
            report.verify_runs = 0;
            report.ejected.clear();
            continue;
        }
        apply_ready(
            shared,
            reports,
            pendings,
            shared.stop.requested(),
            &back,
            integration,
        )?;
        report = super::gate::run(shared, gate, runtime.handle(), reports, integration);
    }
    report.verify_runs += runs;
    out_for_good.extend(again.iter().map(|&i| reports[i].id.clone()));
    for id in report.ejected.drain(..) {
        if !out_for_good.contains(&id) {
            out_for_good.push(id);
        }
    }
    report.ejected = out_for_good;
    mark_repaired(shared, reports, integration, &given_back);
    Ok(report)
}

/// The tasks given back that stayed merged: repaired in their current round, said in their
/// report and by a `repaired` event (their earlier `ejected` was not their outcome).
fn mark_repaired(
    shared: &Shared,
    reports: &mut [TaskReport],
    integration: &Integration,
    given_back: &[usize],
) {
    for &i in given_back {
        let r = &mut reports[i];
        if r.status != TaskStatus::Merged {
            continue;
        }
        let Some(&(_, commit)) = integration.merged.iter().rev().find(|(k, _)| *k == i) else {
            continue;
        };
        // Its rounds hold the current one (the repair) as the last.
        let round = r
            .rounds
            .iter()
            .rev()
            .find(|x| x.kind == crate::report::RoundKind::Repair)
            .or(r.rounds.last())
            .map_or(1, |x| x.round);
        r.repaired = Some(crate::report::Repaired {
            round,
            commit: commit.to_string(),
        });
        shared.events.emit(crate::event::EventKind::Repaired {
            task: r.id.clone(),
            round,
            commit: commit.to_string(),
        });
    }
}

/// One repair round of each culprit: the ones whose fix is ready to integrate again (as one
/// commit on the integration head), the ones that gave no fix, and the ones a budget stopped
/// (they keep `budget_exceeded`, their work on their branch, and get no further round).
fn give_back(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    repo: &Repository,
    (reports, pendings): (&mut [TaskReport], &mut [Pending]),
    integration: &Integration,
    culprits: &[usize],
    (round, rounds): (u32, u32),
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let reruns = repair_reruns(
        shared,
        repo,
        reports,
        pendings,
        integration,
        culprits,
        round,
        rounds,
    );
    let number = reruns
        .iter()
        .map(|r| r.2.len() as u32 + 1)
        .max()
        .unwrap_or(2);
    let results = runtime.block_on(rerun_all(shared.clone(), number, reruns));
    crate::process::stop_under(&shared.run_dir, crate::agent::STOP_GRACE);
    let (mut back, mut failed, mut over) = (Vec::new(), Vec::new(), Vec::new());
    for (i, task_report, pending) in results {
        let ejected = std::mem::replace(&mut reports[i], task_report);
        match rejoin(repo, &pending) {
            Some(squashed) => {
                pendings[i] = Pending::Ready(squashed);
                back.push(i);
            }
            None if reports[i].status == TaskStatus::BudgetExceeded => over.push(i),
            None => {
                still_out(&mut reports[i], &ejected);
                failed.push(i);
            }
        }
    }
    (back, failed, over)
}

/// The tasks the gate took out that a repair round may give back: found by bisection (not
/// taken out with another), not in a group.
fn repairable(shared: &Shared, reports: &[TaskReport], report: &IntegrationReport) -> Vec<usize> {
    report
        .ejected
        .iter()
        .filter_map(|id| shared.tasks.iter().position(|t| t.id().as_str() == id))
        .filter(|&i| reports[i].status == TaskStatus::IntegrationFailed)
        .filter(|&i| shared.tasks[i].spec.group.is_none())
        .collect()
}

/// One repair round per culprit: its workspace at the integration plus its change, the gate's
/// output as feedback, its scope.
#[allow(clippy::too_many_arguments)]
fn repair_reruns(
    shared: &Shared,
    repo: &Repository,
    reports: &[TaskReport],
    pendings: &[Pending],
    integration: &Integration,
    culprits: &[usize],
    round: u32,
    rounds: u32,
) -> Vec<RerunOf> {
    let mut out = Vec::new();
    let command = shared
        .integrate
        .as_ref()
        .map(|g| super::repair::command_text(&g.verify))
        .unwrap_or_default();
    for &i in culprits {
        let Pending::Ready(commit) = pendings[i] else {
            continue;
        };
        let failing = match with_change(shared, repo, integration.head, commit) {
            Ok(t) => t,
            Err(e) => {
                shared.events.warn(
                    Some(&reports[i].id),
                    &format!("integration repair: cannot rebuild the failing integration: {e}"),
                );
                continue;
            }
        };
        let output = gate_output(&reports[i]);
        let task = &shared.tasks[i];
        let scope = RepairScope {
            changed: changed_paths(repo, commit).unwrap_or_default(),
            paths: task.spec.paths.clone(),
            protect: task.protect.clone(),
        };
        let reason = output.lines().next().unwrap_or("").to_string();
        let rerun = Rerun {
            start: failing,
            feedback: feedback(task.id().as_str(), &command, &output, (round, rounds)),
            resolve: None,
            repair: Some(Arc::new(scope)),
            cause: format!("the integration gate failed: {reason}"),
            thread: super::threads::thread_of(&reports[i]),
            earlier: super::threads::earlier_round(&reports[i]),
            rounds: Vec::new(),
        };
        out.push((i, rerun, super::rounds::before_rerun(&reports[i])));
    }
    out
}

/// The integration `head` with the task's change (`commit` against its parent) on top: the
/// tree that fails.
fn with_change(shared: &Shared, repo: &Repository, head: Oid, commit: Oid) -> Result<Oid, String> {
    let mut integ = crate::git::merge::Integrator::new(repo, head).with_rules(&shared.merge_rules);
    match integ
        .apply(commit, "fanout: the integration that fails")
        .map_err(|e| crate::error_chain(&e))?
    {
        crate::git::merge::Applied::Merged(t) => Ok(t),
        crate::git::merge::Applied::Conflict(paths) => Err(format!(
            "the change conflicts with the integration in {}",
            paths.join(", ")
        )),
    }
}

/// The output of the gate's failing run, as the task's report keeps it.
fn gate_output(report: &TaskReport) -> String {
    report
        .verify
        .iter()
        .rev()
        .find(|g| g.gate == "integration" && !g.passed)
        .and_then(|g| g.output.clone())
        .or_else(|| report.error.clone())
        .unwrap_or_default()
}

/// The paths a commit changed against its parent.
fn changed_paths(repo: &Repository, commit: Oid) -> Result<Vec<String>, git2::Error> {
    let c = repo.find_commit(commit)?;
    let diff = repo.diff_tree_to_tree(Some(&c.parent(0)?.tree()?), Some(&c.tree()?), None)?;
    let mut out = Vec::new();
    for d in diff.deltas() {
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path().and_then(|p| p.to_str()) {
                if !out.iter().any(|o: &String| o == p) {
                    out.push(p.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// A repaired task's change and fix as one commit on the integration `head` (its tree is the
/// fix's), to integrate again; `None` when the round gave no verified fix.
fn rejoin(repo: &Repository, pending: &Pending) -> Option<Oid> {
    let Pending::Ready(fix) = pending else {
        return None;
    };
    let fix = repo.find_commit(*fix).ok()?;
    // The fix's parent is the failing tree (the head and the change on it): the fix's tree
    // on that head carries both.
    let failing = repo.find_commit(fix.parent_id(0).ok()?).ok()?;
    let on = repo.find_commit(failing.parent_id(0).ok()?).ok()?;
    let tree = fix.tree().ok()?;
    let sig = crate::git::fanout_signature().ok()?;
    let message = fix.message().unwrap_or("fanout: repaired task").to_string();
    let author = fix.author().to_owned();
    let made = repo.commit(None, &author, &sig, &message, &tree, &[&on]);
    made.ok()
}

/// A repair that gave no fix: the task stays out, as the gate left it, the round's failure said.
fn still_out(report: &mut TaskReport, ejected: &TaskReport) {
    let why = report
        .error
        .clone()
        .unwrap_or_else(|| report.status.as_str().to_string());
    report.status = TaskStatus::IntegrationFailed;
    report.error = Some(format!(
        "{}\nits repair round did not fix it: {why}",
        first_part(ejected.error.as_deref().unwrap_or_default())
    ));
}

/// An ejected task's error without what earlier repair rounds added to it.
fn first_part(error: &str) -> &str {
    error
        .split("\nits repair round did not fix it: ")
        .next()
        .unwrap_or(error)
}
