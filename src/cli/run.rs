//! `fanout run`: plan, execute, print the table, write the report.

use anyhow::Context;

use super::{NetArg, ReadArg, ReadbackArg, RunArgs, SandboxArg, WorkspaceArg, EXIT_USAGE};
use crate::plan::{
    NetChoice, Plan, PlanError, ReadbackMode, RunOptions, SandboxOptions, WorkspaceChoice,
};
use crate::runner::{self, Progress};

pub fn run(a: RunArgs) -> anyhow::Result<i32> {
    let self_exe = std::env::current_exe().context("cannot find fanout's own executable")?;
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    if jobs == 0 {
        eprintln!("fanout: --jobs must be at least 1");
        return Ok(EXIT_USAGE);
    }
    let run_as = match crate::sandbox::user::resolve(a.agent_user.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fanout: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let options = RunOptions {
        repo: a.repo.repo.clone(),
        tasks_file: a.tasks.clone(),
        jobs,
        base: a.base.clone(),
        agent: a.agent.clone(),
        keep_worktrees: a.keep_worktrees,
        report: a.report.clone(),
        sandbox: SandboxOptions {
            enabled: a.sandbox == SandboxArg::On,
            net: match a.net {
                NetArg::Default => NetChoice::Default,
                NetArg::Any => NetChoice::Any,
                NetArg::None => NetChoice::None,
            },
            read_strict: a.read == ReadArg::Strict,
            min_abi: a.min_abi,
            run_as,
        },
        readback: if a.no_readback {
            ReadbackMode::Off
        } else if a.readback == ReadbackArg::Require {
            ReadbackMode::Require
        } else {
            ReadbackMode::Auto
        },
        self_exe,
        max_file_bytes: a.max_file_bytes,
        max_change_bytes: a.max_change_bytes,
        allow_unfiltered: a.allow_unfiltered,
        min_free_mb: a.min_free_mb,
        workspace: match a.workspace {
            WorkspaceArg::Auto => WorkspaceChoice::Auto,
            WorkspaceArg::Overlay => WorkspaceChoice::Overlay,
            WorkspaceArg::Worktree => WorkspaceChoice::Worktree,
        },
    };
    let plan = match Plan::build(options) {
        Ok(p) => p,
        Err(PlanError::TaskFile(crate::taskfile::TaskFileError::Invalid { path, problems })) => {
            eprintln!(
                "fanout: {path}: {} problem(s); nothing was run",
                problems.len()
            );
            for p in &problems {
                eprintln!("  {p}");
            }
            return Ok(EXIT_USAGE);
        }
        Err(e) => {
            eprintln!("fanout: {}", crate::error_chain(&e));
            return Ok(EXIT_USAGE);
        }
    };
    execute_and_report(plan, a.quiet)
}

/// Runs a plan, prints the table, writes `--report`; returns the exit code.
pub(super) fn execute_and_report(plan: Plan, quiet: bool) -> anyhow::Result<i32> {
    let report_path = plan.options.report.clone();
    let report = match runner::execute(plan, Progress::new(quiet)) {
        Ok(r) => r,
        Err(e @ (runner::RunError::Verifier(_) | runner::RunError::Preflight(_))) => {
            eprintln!("fanout: {e}");
            return Ok(EXIT_USAGE);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the run could not go on")),
    };
    // The report file first: a closed or full stdout must not lose it.
    if let Some(path) = report_path {
        crate::report::write_json_atomic(&path, &report)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    let table = crate::report::table::render(&report);
    super::out::print(crate::redact::redact(&table).as_bytes())?;
    Ok(report.exit_code())
}
