//! `fanout combine`: the shards' hand-overs (bundles, or refs pushed to a remote) integrated
//! as one run, with the runner's own integration (conflicts, `--on-conflict retry`, the
//! integration gate with bisect), written to a normal run folder (docs/shards.md).

use super::args::CombineArgs;
use super::common::{EXIT_OK, EXIT_TASKS_FAILED, EXIT_USAGE};
use crate::plan::{Plan, ReadbackMode, RunOptions, SandboxOptions, WorkspaceChoice};
use crate::report::{RunReport, TaskStatus};
use crate::shard::import::{self, Gathered, Sources};

pub fn run(a: CombineArgs) -> anyhow::Result<i32> {
    match prepare(&a) {
        Ok((plan, gathered, missing)) => execute(plan, &a, &gathered, missing),
        Err(e) => {
            eprintln!("fanout: {e}");
            Ok(EXIT_USAGE)
        }
    }
}

/// The hand-overs gathered and the combined run's plan, with the tasks no shard handed over.
fn prepare(a: &CombineArgs) -> Result<(Plan, Gathered, usize), String> {
    if let Some(r) = &a.run {
        crate::ids::RunId::parse(r)?;
    }
    let repo = crate::lookup::open_repo(&a.repo.repo).map_err(|e| e.to_string())?;
    let sources = match &a.from_remote {
        Some(remote) => Sources::Remote {
            remote: remote.clone(),
            run: a.run.clone().unwrap_or_default(),
        },
        None => Sources::Bundles(import::expand_from(&a.from).map_err(|e| e.to_string())?),
    };
    let fetched = import::fetch(&repo.workdir, &sources);
    let gathered = fetched.and_then(|f| import::gather(f, a.run.as_deref()));
    let result = gathered
        .map_err(|e| e.to_string())
        .and_then(|g| plan_for(a, g));
    // The chosen commits now live on the run's task branches; fetched refs are not needed.
    import::drop_imports(&repo.workdir);
    result
}

/// The combined run's plan: the task file on the shards' base, every task's outcome carried.
fn plan_for(a: &CombineArgs, g: Gathered) -> Result<(Plan, Gathered, usize), String> {
    let run = crate::ids::RunId::parse(&g.run_id)?;
    let mut plan = Plan::build(options(a, &g)?).map_err(|e| crate::error_chain(&e))?;
    if let Some(rev) = &a.base {
        let want = plan.repo.resolve_base(rev).map_err(|e| e.to_string())?;
        if want.to_string() != g.base {
            return Err(format!(
                "the shards ran on {} but --base {rev} is {want}; refusing to combine",
                g.base
            ));
        }
    }
    let dir = plan.repo.runs_dir().join(run.as_str());
    if dir.exists() {
        return Err(format!(
            "run {run} already exists in this repository ({}); combine into a fresh clone, or `fanout clean {run} --branches` first",
            dir.display()
        ));
    }
    plan.run_id = run.clone();
    plan.run_dir = dir;
    plan.base_rev = g.base.clone();
    let ids: Vec<String> = plan.tasks.iter().map(|t| t.id().to_string()).collect();
    let shards = crate::shard::shard_of_tasks(&plan.tasks, g.count);
    let carried = crate::shard::carry::carry(&plan.repo.repo, &run, &g, &ids, &shards)
        .map_err(|e| e.to_string())?;
    for n in g.notes.iter().chain(&carried.notes) {
        eprintln!("fanout: {n}");
    }
    let mut by_shard: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
    for (id, k) in &carried.missing {
        by_shard.entry(*k).or_default().push(id);
    }
    for (k, ids) in by_shard {
        let shown: Vec<&str> = ids.iter().take(5).copied().collect();
        let more = ids.len().saturating_sub(shown.len());
        plan.warnings.push(format!(
            "shard {k}/{} handed nothing over: its {} task(s) are missing ({}{})",
            g.count,
            ids.len(),
            shown.join(", "),
            if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            }
        ));
    }
    let missing = carried.missing.len();
    plan.priors = carried.priors;
    plan.earlier_reports = carried.reports;
    Ok((plan, g, missing))
}

/// Run options for the combine: the shards' base; agents run only for tasks run again after
/// a conflict (`--on-conflict retry`), confined as `fanout run` confines them.
fn options(a: &CombineArgs, g: &Gathered) -> Result<RunOptions, String> {
    let run_as =
        crate::sandbox::user::resolve(a.agent_user.as_deref()).map_err(|e| e.to_string())?;
    let retries = a.on_conflict.is_some_and(|c| c.retries() > 0);
    let workspace = match std::env::var("FANOUT_WORKSPACE").ok().as_deref() {
        Some("overlay") => Some(WorkspaceChoice::Overlay),
        Some("worktree") => Some(WorkspaceChoice::Worktree),
        _ => None,
    };
    Ok(RunOptions {
        repo: a.repo.repo.clone(),
        tasks_file: a.tasks.clone(),
        jobs: a
            .jobs
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1),
        base: Some(g.base.clone()),
        agent: None,
        keep_worktrees: false,
        report: a.report.clone(),
        sandbox: SandboxOptions {
            run_as,
            ..SandboxOptions::default()
        },
        readback: if retries {
            ReadbackMode::Auto
        } else {
            ReadbackMode::Off
        },
        self_exe: std::env::current_exe().map_err(|e| e.to_string())?,
        max_file_bytes: None,
        max_change_bytes: None,
        allow_unfiltered: false,
        min_free_mb: a.min_free_mb,
        on_conflict: a.on_conflict,
        squash: false,
        workspace: workspace.unwrap_or(WorkspaceChoice::Auto),
        workspace_source: workspace.map(|_| "FANOUT_WORKSPACE".to_string()),
        // The task file's: only a task run again here (`--on-conflict retry`) is scheduled.
        overlap: None,
    })
}

/// Runs the combined plan; the exit code says when shards are missing.
fn execute(plan: Plan, a: &CombineArgs, g: &Gathered, missing: usize) -> anyhow::Result<i32> {
    let run_dir = plan.run_dir.clone();
    let mut verdict = None;
    let code = super::run::execute_and_report_then(plan, a.quiet, &a.output, "combine", |r| {
        verdict = Some(exit_code(r, a.allow_missing));
    })?;
    keep_shard_events(&run_dir, g);
    if missing > 0 {
        eprintln!(
            "fanout: {missing} task(s) missing: their shard handed nothing over{}",
            if a.allow_missing {
                " (--allow-missing: the rest was integrated)"
            } else {
                ""
            }
        );
    }
    Ok(match verdict {
        Some(v) if code != crate::exit::INTERRUPTED => v,
        _ => code,
    })
}

/// The combine's exit code: missing tasks say so (4) unless `--allow-missing`, then the
/// run's own rule on the rest.
pub fn exit_code(r: &RunReport, allow_missing: bool) -> i32 {
    let missing = r.tasks.iter().any(|t| t.status == TaskStatus::Missing);
    if missing && !allow_missing {
        return crate::exit::SHARDS_MISSING;
    }
    let ok = r.output_failures.is_empty()
        && r.integration.as_ref().is_none_or(|i| i.passed)
        && r.tasks
            .iter()
            .all(|t| t.status.is_success() || t.status == TaskStatus::Missing);
    if ok {
        EXIT_OK
    } else {
        EXIT_TASKS_FAILED
    }
}

/// Each shard's own event stream kept in the run folder (`shards/shard-<K>.jsonl`).
fn keep_shard_events(run_dir: &std::path::Path, g: &Gathered) {
    let dir = run_dir.join("shards");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for (k, f) in &g.shards {
        let _ = std::fs::write(dir.join(format!("shard-{k}.jsonl")), &f.events);
    }
}
