//! `fanout clean`: remove a run's leftover worktrees (e.g. after kill -9), optionally its branches.

use super::{CleanArgs, EXIT_OK, EXIT_USAGE};
use crate::git::worktree;
use crate::state::StateFile;

pub fn run(a: CleanArgs) -> anyhow::Result<i32> {
    let repo = super::open_repo(&a.repo)?;
    let runs_dir = repo.runs_dir();
    let runs: Vec<String> = match &a.run {
        Some(r) => vec![super::resolve_run(&a.repo, r)?.to_string()],
        None => super::list_runs(&repo),
    };
    for run in runs {
        let dir = runs_dir.join(&run);
        if !dir.exists() {
            eprintln!("fanout: no run {run}");
            return Ok(EXIT_USAGE);
        }
        if let Some(state) = StateFile::read(&dir.join("state.json")) {
            if state.status == "running" && !state.is_orphaned() {
                eprintln!(
                    "fanout: run {run} is still running (pid {}); not cleaning it",
                    state.pid
                );
                continue;
            }
        }
        let mut removed = 0;
        let prefix = format!("fanout-{run}-");
        // The admin folders themselves, also half-written ones a kill -9 during creation left.
        let names: Vec<String> = std::fs::read_dir(repo.common_dir.join("worktrees"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default();
        for name in &names {
            let task = &name[prefix.len()..];
            let path = dir.join("worktrees").join(task);
            worktree::remove(&repo.common_dir, name, &path)?;
            removed += 1;
        }
        crate::sandbox::user::remove_outside(&dir, true);
        crate::taskenv::remove_run_tmp(&dir, true);
        let _ = worktree::remove_tree(&dir.join("worktrees"));
        let _ = worktree::remove_tree(&dir.join("scratch"));
        let mut branches = 0;
        if a.branches {
            let prefix = format!("fanout/{run}/");
            let names: Vec<String> = repo
                .repo
                .branches(Some(git2::BranchType::Local))
                .map(|iter| {
                    iter.flatten()
                        .filter_map(|(b, _)| b.name().ok().flatten().map(str::to_string))
                        .filter(|n| n.starts_with(&prefix))
                        .collect()
                })
                .unwrap_or_default();
            for name in names {
                // Not running (checked above): a ref lock a kill -9 left is stale.
                if crate::git::repo::delete_branch_of_dead_run(&repo.repo, &name)? {
                    branches += 1;
                }
            }
            worktree::remove_tree(&dir)?;
        }
        super::out::outln!(
            "run {run}: removed {removed} worktree(s){}",
            if a.branches {
                format!(", {branches} branch(es) and the run folder")
            } else {
                String::new()
            }
        )?;
    }
    Ok(EXIT_OK)
}
