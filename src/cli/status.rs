//! `fanout status`: list runs, or show one run's tasks.

use super::args::StatusArgs;
use super::common::{EXIT_OK, EXIT_USAGE};
use crate::state::StateFile;

pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    let repo = super::common::open_repo(&a.repo)?;
    let runs_dir = repo.runs_dir();
    let Some(run) = a.run else {
        let runs = super::common::list_runs(&repo);
        if runs.is_empty() {
            super::out::outln!("no runs in {}", runs_dir.display())?;
        }
        for r in runs {
            let state = StateFile::read(&crate::run_dir::RunDir::new(runs_dir.join(&r)).state());
            let line = match state {
                Some(s) => {
                    let status = if s.is_orphaned() {
                        "interrupted (its fanout process is gone)".to_string()
                    } else {
                        s.status.clone()
                    };
                    let mut counts = std::collections::BTreeMap::new();
                    for t in s.tasks.values() {
                        *counts.entry(t.status.clone()).or_insert(0usize) += 1;
                    }
                    let counts: Vec<String> =
                        counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
                    format!("{r}  {status}  {}", counts.join(", "))
                }
                None => format!("{r}  (no state)"),
            };
            super::out::outln!("{line}")?;
        }
        return Ok(EXIT_OK);
    };
    let run = super::common::resolve_run(&a.repo, &run)?;
    let dir = runs_dir.join(run.as_str());
    if a.json {
        match std::fs::read_to_string(crate::run_dir::RunDir::new(dir).report()) {
            Ok(t) => super::out::print(t)?,
            Err(_) => {
                eprintln!("fanout: run {run} has no report.json (still running, or interrupted)");
                return Ok(EXIT_USAGE);
            }
        }
        return Ok(EXIT_OK);
    }
    let Some(state) = StateFile::read(&crate::run_dir::RunDir::new(dir).state()) else {
        eprintln!("fanout: no run {run} in {}", runs_dir.display());
        return Ok(EXIT_USAGE);
    };
    let status = if state.is_orphaned() {
        "interrupted (its fanout process is gone; `fanout resume` continues it, `fanout clean` removes its worktrees)"
    } else {
        &state.status
    };
    super::out::outln!("run {}: {status}", state.run_id)?;
    super::out::outln!(
        "base {}  integration branch {}",
        state.base,
        state.integration_branch
    )?;
    // Accounting (issue 23): what the run and each task spent, once the run has a report.
    let mut spent = spent_of(&crate::run_dir::RunDir::new(runs_dir.join(run.as_str())).report());
    if spent.is_empty() {
        // No report yet (the run goes on): what its state says the tasks spent so far.
        let so_far = state
            .tasks
            .iter()
            .filter_map(|(id, t)| t.usage.clone().map(|u| (id.clone(), u)));
        spent.extend(so_far);
        let total = crate::usage::Usage::sum(spent.values());
        if !total.is_empty() {
            spent.insert(String::new(), total);
        }
    }
    if let Some(u) = spent.get("") {
        super::out::outln!("spent {}", u.brief())?;
    }
    let order = if state.order.is_empty() {
        state.tasks.keys().cloned().collect()
    } else {
        state.order.clone()
    };
    for id in order {
        if let Some(t) = state.tasks.get(&id) {
            // Where a task still at work (or cut off by a stop or kill -9) was: its last
            // phase, which `fanout resume` decides from.
            let cut_off = matches!(t.status.as_str(), "running" | "interrupted");
            let phase = t
                .phase
                .filter(|p| cut_off && p.is_running())
                .map(|p| format!("  ({})", p.describe()))
                .unwrap_or_default();
            let usage = spent
                .get(&id)
                .map(|u| format!("  {}", u.brief()))
                .unwrap_or_default();
            let commit = t
                .commit
                .as_deref()
                .map(|c| c.get(..12).unwrap_or(c))
                .unwrap_or("");
            let commit = match usage.is_empty() {
                true => commit.to_string(),
                false => format!("{commit:<12}"),
            };
            super::out::outln!("  {id:<24} {:<13} {commit}{phase}{usage}", t.status)?;
        }
    }
    Ok(EXIT_OK)
}

/// What the run's report says each task (by id) and the run (`""`) spent; empty without a
/// report.
fn spent_of(report: &std::path::Path) -> std::collections::BTreeMap<String, crate::usage::Usage> {
    let mut spent = std::collections::BTreeMap::new();
    let Some(r) = std::fs::read(report)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::report::RunReport>(&b).ok())
    else {
        return spent;
    };
    if let Some(u) = r.usage {
        spent.insert(String::new(), u);
    }
    for t in r.tasks {
        if let Some(u) = t.usage {
            spent.insert(t.id, *u);
        }
    }
    spent
}
