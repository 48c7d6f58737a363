/*!
`fanout clean`: remove a run's leftover worktrees (e.g. after kill -9) and, with `--branches`,
its branches and folder — but never work that exists nowhere else: a branch whose commits are
on no other branch (a `verify_failed` task, an integration branch not merged anywhere) stays,
and so does its run folder, unless `--force`. `--dry-run` only lists; `--older-than` picks
runs by age (nightly retention). `--caches` also removes the repository's shared caches.
*/

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use git2::{BranchType, Oid, Repository};

use super::args::CleanArgs;
use super::common::{usage, EXIT_OK, EXIT_USAGE};
use crate::git::worktree;
use crate::run_dir::RunDir;
use crate::state::StateFile;

/// Parses `7d`, `12h`, `30m`, `45s` (also `2w`).
pub fn parse_age(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (num, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 7d, 12h or 30m"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{raw:?} is not a duration like 7d, 12h or 30m")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long"))
}

/// When a run started: its state, else its folder's modification time.
fn run_started(dir: &std::path::Path) -> Option<SystemTime> {
    if let Some(s) = StateFile::read(&RunDir::new(dir).state()).filter(|s| s.started_at_ms > 0) {
        return Some(UNIX_EPOCH + Duration::from_millis(s.started_at_ms));
    }
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

pub fn run(a: CleanArgs) -> anyhow::Result<i32> {
    let older_than = a
        .older_than
        .as_deref()
        .map(parse_age)
        .transpose()
        .map_err(usage)?;
    let repo = super::common::open_repo(&a.repo)?;
    let runs_dir = repo.runs_dir();
    let runs: Vec<String> = match &a.run {
        Some(r) => vec![super::common::resolve_run(&a.repo, r)?.to_string()],
        None => super::common::list_runs(&repo),
    };
    let verb = |what: &str| {
        if a.dry_run {
            format!("would {what}")
        } else {
            what.to_string()
        }
    };
    let mut kept_any = false;
    let mut running_any = false;
    for run in runs {
        let dir = runs_dir.join(&run);
        if !dir.exists() {
            eprintln!("fanout: no run {run}");
            return Ok(EXIT_USAGE);
        }
        if let Some(min) = older_than {
            let age = run_started(&dir)
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if age < min {
                continue;
            }
        }
        let state = StateFile::read(&RunDir::new(&dir).state());
        if let Some(state) = &state {
            if state.status == "running" && !state.is_orphaned() {
                eprintln!(
                    "fanout: run {run} is still running (pid {}); not cleaning it",
                    state.pid
                );
                running_any = true;
                continue;
            }
        }
        let mut removed = 0;
        let prefix = format!("fanout-{run}-");
        let names = crate::git::worktree::registered_with_prefix(&repo.common_dir, &prefix);
        for name in &names {
            let task = &name[prefix.len()..];
            let path = RunDir::new(&dir).worktrees_link().join(task);
            if a.dry_run {
                super::out::outln!("{}", verb(&format!("remove worktree {}", path.display())))?;
            } else {
                worktree::remove(&repo.common_dir, name, &path)?;
            }
            removed += 1;
        }
        if !a.dry_run {
            crate::git::memory_lower::remove_run_lowers(&dir);
            crate::sandbox::user::remove_outside(&dir, true);
            crate::taskenv::remove_run_tmp(&dir, true);
            crate::verify::judges::remove_leftovers(&run);
            let _ = worktree::remove_tree(&RunDir::new(&dir).worktrees_link());
            let _ = worktree::remove_tree(&RunDir::new(&dir).scratch_link());
        }
        let mut branches = 0;
        let mut kept = Vec::new();
        if a.branches {
            let statuses: BTreeMap<String, String> = state
                .as_ref()
                .map(|s| {
                    s.tasks
                        .iter()
                        .map(|(k, v)| (k.clone(), v.status.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let chosen = chosen_candidates(&RunDir::new(&dir).report());
            let plan = branch_plan(&repo.repo, &run, &statuses, &chosen);
            for (name, keep) in plan {
                match keep {
                    Some(why) if !a.force => {
                        super::out::outln!(
                            "keeping {name}: {why}; `fanout merge` it, or --force deletes it"
                        )?;
                        kept.push(name);
                    }
                    _ => {
                        if a.dry_run {
                            super::out::outln!("{}", verb(&format!("delete branch {name}")))?;
                        } else if crate::git::repo::delete_branch_of_dead_run(&repo.repo, &name)? {
                            // Not running (checked above): a ref lock a kill -9 left is stale.
                        } else {
                            continue;
                        }
                        branches += 1;
                    }
                }
            }
            if kept.is_empty() {
                if a.dry_run {
                    super::out::outln!("{}", verb(&format!("remove {}", dir.display())))?;
                } else {
                    worktree::remove_tree(&dir)?;
                }
            } else {
                kept_any = true;
            }
        }
        let folder = if !a.branches {
            String::new()
        } else if kept.is_empty() {
            format!(", {branches} branch(es) and the run folder")
        } else {
            format!(
                ", {branches} branch(es); kept {} branch(es) and the run folder",
                kept.len()
            )
        };
        super::out::outln!(
            "run {run}: {} {removed} worktree(s){folder}",
            if a.dry_run { "would remove" } else { "removed" }
        )?;
    }
    if a.caches {
        clean_caches(&repo, a.dry_run, running_any || any_running(&repo))?;
    }
    if kept_any {
        eprintln!(
            "fanout: some branches hold work found on no other branch; nothing of it was deleted"
        );
    }
    Ok(EXIT_OK)
}

/// Whether any run of the repository is still running.
fn any_running(repo: &crate::git::repo::UserRepo) -> bool {
    super::common::list_runs(repo).iter().any(|run| {
        StateFile::read(&repo.runs_dir().join(run).join("state.json"))
            .is_some_and(|s| s.status == "running" && !s.is_orphaned())
    })
}

/// `--caches`: removes the repository's shared caches, unless a run is using them.
fn clean_caches(
    repo: &crate::git::repo::UserRepo,
    dry_run: bool,
    running: bool,
) -> anyhow::Result<()> {
    let at = crate::caches::caches_link(&repo.common_dir);
    if running {
        eprintln!(
            "fanout: a run is still running; not removing the caches {}",
            at.display()
        );
        return Ok(());
    }
    if std::fs::symlink_metadata(&at).is_err() {
        super::out::outln!("no caches to remove")?;
        return Ok(());
    }
    if dry_run {
        super::out::outln!("would remove the caches {}", at.display())?;
        return Ok(());
    }
    let removed = crate::caches::remove_all(&repo.common_dir)?;
    for p in removed {
        super::out::outln!("removed the caches {}", p.display())?;
    }
    Ok(())
}

/// The run's branches, each with why it must stay (`Some`) or `None` when its work is
/// also elsewhere: its tip is on a branch outside this run, or — a task whose change was
/// integrated — the run's integration branch holds it.
fn branch_plan(
    repo: &Repository,
    run: &str,
    statuses: &BTreeMap<String, String>,
    chosen: &BTreeMap<String, u32>,
) -> Vec<(String, Option<String>)> {
    let prefix = format!("fanout/{run}/");
    let mut own: Vec<(String, Oid)> = Vec::new();
    let mut others: Vec<Oid> = Vec::new();
    if let Ok(iter) = repo.branches(Some(BranchType::Local)) {
        for (b, _) in iter.flatten() {
            let (Ok(Some(name)), Some(tip)) = (b.name(), b.get().target()) else {
                continue;
            };
            if name.starts_with(&prefix) {
                own.push((name.to_string(), tip));
            } else {
                others.push(tip);
            }
        }
    }
    let elsewhere = |tip: Oid| {
        others
            .iter()
            .any(|&o| o == tip || repo.graph_descendant_of(o, tip).unwrap_or(false))
    };
    let merged_name = format!("{prefix}merged");
    let merged_exists = own.iter().any(|(n, _)| *n == merged_name);
    own.into_iter()
        .map(|(name, tip)| {
            let rest = &name[prefix.len()..];
            let keep = if elsewhere(tip) {
                None
            } else if rest == "merged" {
                Some("the integration branch is merged into no other branch".to_string())
            } else if let Some((task, k)) = candidate_of(rest) {
                // Candidates: alternatives the run chose against go; the chosen one stays
                // while its task's work landed nowhere.
                let status = statuses.get(task).map(String::as_str).unwrap_or("unknown");
                (chosen.get(task) == Some(&k) && status != "merged").then(|| {
                    format!("its commits are on no other branch (the chosen candidate of task {task}, {status})")
                })
            } else {
                let task = rest.strip_prefix("task/").unwrap_or(rest);
                let status = statuses.get(task).map(String::as_str).unwrap_or("unknown");
                if status == "merged" && merged_exists {
                    None
                } else {
                    Some(format!(
                        "its commits are on no other branch (task {status})"
                    ))
                }
            };
            (name, keep)
        })
        .collect()
}

// Candidates (best-of-N).
/// `task/<id>/candidate-<k>` → (id, k).
fn candidate_of(rest: &str) -> Option<(&str, u32)> {
    let (task, k) = rest.strip_prefix("task/")?.rsplit_once("/candidate-")?;
    Some((task, k.parse().ok()?))
}

/// Each task's chosen candidate, from the run's report (none when it has no report).
fn chosen_candidates(report: &std::path::Path) -> BTreeMap<String, u32> {
    let Some(r) = std::fs::read(report)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::report::RunReport>(&b).ok())
    else {
        return BTreeMap::new();
    };
    r.tasks
        .iter()
        .filter_map(|t| Some((t.id.clone(), t.candidate?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_their_unit() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_age("7").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("3y").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }
}
