//! `fanout run` as one shard of a run (docs/shards.md): the shard's tasks chosen, the shared
//! run id and base checked, and the hand-over written after the run.

use super::args::ShardArgs;
use crate::plan::Plan;
use crate::shard::{handover, manifest, Shard};

/// The shard this process is (`--shard`, `--shard-from-env`), if any.
pub fn resolve(a: &ShardArgs) -> Result<Option<Shard>, String> {
    if let Some(s) = a.shard {
        return Ok(Some(s));
    }
    match a.shard_from_env {
        None => Ok(None),
        Some(n) => Shard::from_env(Some(n).filter(|n| *n > 0), &|k| std::env::var(k).ok())
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// The plan as this shard runs it: the shared run id, the base checked, only its tasks.
pub fn apply(plan: &mut Plan, a: &ShardArgs, shard: Option<Shard>) -> Result<(), String> {
    if let Some(want) = &a.base_commit {
        let want = git2::Oid::from_str(want.trim())
            .ok()
            .filter(|_| want.trim().len() == 40)
            .ok_or_else(|| format!("--base-commit {want:?} is not a full commit id"))?;
        if plan.base != want {
            return Err(format!(
                "the base {} resolves to {}, not to {want} (--base-commit): this shard is on another base; nothing was run",
                plan.base_rev, plan.base
            ));
        }
    }
    if let Some(id) = &a.run_id {
        let run = crate::ids::RunId::parse(id)?;
        let dir = plan.repo.runs_dir().join(run.as_str());
        if dir.exists() {
            return Err(format!(
                "run {run} already exists in this repository ({}); a shard runs once per clone (`fanout clean {run} --branches` removes it)",
                dir.display()
            ));
        }
        plan.run_id = run;
        plan.run_dir = dir;
    }
    if let Some(shard) = shard {
        let ids = crate::shard::tasks_of_shard(&plan.tasks, shard);
        if ids.is_empty() {
            plan.tasks.clear();
            plan.only = Some(Vec::new());
        } else {
            plan.select(&ids, false).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// What the hand-over needs once the run ended.
pub struct HandOver {
    pub repo: std::path::PathBuf,
    pub run_dir: std::path::PathBuf,
    pub base: String,
    pub shard: Shard,
    pub bundle: Option<std::path::PathBuf>,
    pub push: Option<String>,
}

impl HandOver {
    /// Writes the hand-over; one line per place it went.
    pub fn write(&self) -> Result<Vec<String>, String> {
        let origin = handover::Origin {
            host: manifest::host_name(),
            attempt: manifest::attempt_from_env(&|k| std::env::var(k).ok()),
            created_ms: crate::event::now_ms(),
        };
        let (m, names) = handover::make_refs(&self.repo, &self.run_dir, self.shard, origin)
            .map_err(|e| e.to_string())?;
        let mut said = Vec::new();
        if let Some(path) = &self.bundle {
            let bytes = handover::write_bundle(&self.repo, &self.base, &names, path)
                .map_err(|e| e.to_string())?;
            said.push(format!(
                "shard {}: hand-over of {} task(s) written to {} ({bytes} bytes)",
                self.shard,
                m.tasks.len(),
                path.display()
            ));
        }
        if let Some(remote) = &self.push {
            handover::push(&self.repo, remote, &m.run_id, self.shard.index)
                .map_err(|e| e.to_string())?;
            said.push(format!(
                "shard {}: hand-over pushed to {remote} under {}",
                self.shard,
                crate::shard::refs::shard_prefix(&m.run_id, self.shard.index)
            ));
        }
        Ok(said)
    }
}
