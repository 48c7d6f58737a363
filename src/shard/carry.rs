//! The hand-overs as the combined run's carried-over outcomes: a verified commit is
//! integrated like a resumed run's, every other outcome is kept, and a task no hand-over
//! mentions is `missing`. Each task's report keeps its shard's details plus `shard` and `host`.

use std::collections::BTreeMap;

use super::error::HandOverError;
use super::import::Gathered;
use crate::ids::{task_branch, RunId, TaskId};
use crate::report::{TaskReport, TaskStatus};
use crate::state::Prior;

/// What the combined run starts from.
pub struct Carried {
    pub priors: BTreeMap<String, Prior>,
    pub reports: BTreeMap<String, TaskReport>,
    /// Ids of the tasks no hand-over accounts for, with their expected shard.
    pub missing: Vec<(String, u32)>,
    pub notes: Vec<String>,
}

/// Every task of the plan (`ids`, in file order, `shards` their shard) matched with the
/// hand-overs; the verified commits get their task branches in the combining repository.
pub fn carry(
    repo: &git2::Repository,
    run: &RunId,
    gathered: &Gathered,
    ids: &[String],
    shards: &[u32],
) -> Result<Carried, HandOverError> {
    let mut found: BTreeMap<&str, (u32, &super::manifest::ManifestTask)> = BTreeMap::new();
    for (k, f) in &gathered.shards {
        for t in &f.manifest.tasks {
            found.insert(t.id.as_str(), (*k, t));
        }
    }
    let shard_reports: BTreeMap<(u32, &str), &TaskReport> = gathered
        .shards
        .iter()
        .flat_map(|(k, f)| {
            f.report
                .iter()
                .flat_map(move |r| r.tasks.iter().map(move |t| ((*k, t.id.as_str()), t)))
        })
        .collect();
    let mut out = Carried {
        priors: BTreeMap::new(),
        reports: BTreeMap::new(),
        missing: Vec::new(),
        notes: Vec::new(),
    };
    for (id, expected) in ids.iter().zip(shards) {
        let Some((k, t)) = found.remove(id.as_str()) else {
            out.missing.push((id.clone(), *expected));
            out.reports
                .insert(id.clone(), missing_report(id, *expected, gathered.count));
            out.priors
                .insert(id.clone(), missing_prior(*expected, gathered.count));
            continue;
        };
        let f = &gathered.shards[&k];
        let mut report = shard_reports
            .get(&(k, id.as_str()))
            .map(|r| (*r).clone())
            .unwrap_or_else(|| TaskReport::new(id, ""));
        report.shard = Some(f.manifest.shard.to_string());
        report.host = Some(f.manifest.host.clone());
        let prior = match &t.commit {
            Some(c) => {
                let oid = git2::Oid::from_str(c).map_err(HandOverError::git2)?;
                let task = TaskId::parse(id).map_err(HandOverError::Git2)?;
                repo.branch(
                    &task_branch(run, &task),
                    &repo.find_commit(oid).map_err(HandOverError::git2)?,
                    true,
                )
                .map_err(HandOverError::git2)?;
                // What the shard's own integration said is no longer true here.
                report.status = TaskStatus::Merged;
                report.commit = Some(c.clone());
                report.conflict_paths.clear();
                report.rounds.clear();
                report.error = None;
                Prior::Verified(oid)
            }
            None => {
                report.commit = None;
                report.branch = None;
                Prior::Ended {
                    status: t.status,
                    commit: None,
                    error: report.error.clone(),
                }
            }
        };
        // Paths of the shard's machine mean nothing here.
        report.patch = None;
        report.event_log = None;
        report.stderr_log = None;
        report.workspace = None;
        out.priors.insert(id.clone(), prior);
        out.reports.insert(id.clone(), report);
    }
    for (id, (k, _)) in found {
        out.notes.push(format!(
            "shard {k} handed over task {id}, which the task file does not have; it is left out"
        ));
    }
    Ok(out)
}

fn missing_why(shard: u32, count: u32) -> String {
    format!("shard {shard}/{count} handed nothing over for this task")
}

fn missing_prior(shard: u32, count: u32) -> Prior {
    Prior::Ended {
        status: TaskStatus::Missing,
        commit: None,
        error: Some(missing_why(shard, count)),
    }
}

fn missing_report(id: &str, shard: u32, count: u32) -> TaskReport {
    let mut r = TaskReport::new(id, "");
    r.status = TaskStatus::Missing;
    r.error = Some(missing_why(shard, count));
    r.shard = Some(format!("{shard}/{count}"));
    r
}
