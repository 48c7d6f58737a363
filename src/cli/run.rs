//! `fanout run`: plan, execute, print the table, write the report.

use anyhow::Context;

use std::io::IsTerminal;

use super::args::{NetArg, OutputArgs, ReadArg, ReadbackArg, RunArgs, SandboxArg, WorkspaceArg};
use super::common::EXIT_USAGE;
use crate::event::Output;
use crate::output::terminal::TerminalOutput;
use crate::output::{html::HtmlOutput, jsonl::JsonLinesOutput, junit::JunitOutput};
use crate::plan::{
    NetChoice, Plan, PlanError, ReadbackMode, RunOptions, SandboxOptions, WorkspaceChoice,
};
use crate::runner::{self, RunIo};

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
    let shard = match super::shard_run::resolve(&a.shards) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fanout: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    if shard.is_some() && !a.only.is_empty() {
        eprintln!("fanout: --only and --shard do not go together (a shard is its own selection)");
        return Ok(EXIT_USAGE);
    }
    // A hand-over without a shard is the whole file as one shard.
    let handing_over = a.shards.bundle.is_some() || a.shards.push.is_some();
    let shard = shard.or(handing_over.then_some(crate::shard::Shard { index: 1, count: 1 }));
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
                NetArg::Isolated => NetChoice::Isolated,
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
        on_conflict: a.on_conflict,
        overlap: a.overlap,
        squash: a.squash,
        workspace: match a.workspace {
            None | Some(WorkspaceArg::Auto) => WorkspaceChoice::Auto,
            Some(WorkspaceArg::Overlay) => WorkspaceChoice::Overlay,
            Some(WorkspaceArg::Worktree) => WorkspaceChoice::Worktree,
        },
        workspace_source: a.workspace.map(|_| {
            let flag =
                std::env::args().any(|x| x == "--workspace" || x.starts_with("--workspace="));
            if flag {
                "--workspace"
            } else {
                "FANOUT_WORKSPACE"
            }
            .to_string()
        }),
    };
    let selected = |mut p: Plan| {
        let ids = crate::plan::split_ids(&a.only);
        if !ids.is_empty() {
            p.select(&ids, a.with_deps)?;
        }
        Ok::<Plan, PlanError>(p)
    };
    let mut plan = match Plan::build(options).and_then(selected) {
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
    if let Err(e) = super::shard_run::apply(&mut plan, &a.shards, shard) {
        eprintln!("fanout: {e}");
        return Ok(EXIT_USAGE);
    }
    let Some(shard) = shard else {
        return execute_and_report(plan, a.quiet, &a.output, "run");
    };
    // A conflict inside a shard is an early signal only: the combine integrates (and runs
    // again) from the verified commits, which must start from the base or their dependencies.
    plan.on_conflict = crate::taskfile::OnConflict::default();
    let hand_over = super::shard_run::HandOver {
        repo: plan.repo.workdir.clone(),
        run_dir: plan.run_dir.clone(),
        base: plan.base.to_string(),
        shard,
        bundle: a.shards.bundle.clone(),
        push: a.shards.push.clone(),
    };
    let mut failed = None;
    let code = execute_and_report_then(plan, a.quiet, &a.output, "run", |_| {
        if !handing_over {
            return;
        }
        match hand_over.write() {
            Ok(lines) => lines.iter().for_each(|l| eprintln!("fanout: {l}")),
            Err(e) => failed = Some(e),
        }
    })?;
    match failed {
        Some(e) => {
            eprintln!("fanout: the shard's hand-over failed: {e}");
            Ok(EXIT_USAGE)
        }
        None => Ok(code),
    }
}

/// The outputs the command line asked for: the terminal (live on a TTY), `--json` lines on
/// stdout, `--junit`, `--html`.
fn outputs(quiet: bool, o: &OutputArgs) -> Vec<Box<dyn Output>> {
    let tty = std::io::stderr().is_terminal();
    let color = o
        .color
        .enabled(tty, std::env::var_os("NO_COLOR").as_deref());
    let mut out: Vec<Box<dyn Output>> = vec![Box::new(TerminalOutput::new(tty, color, quiet))];
    if o.json {
        out.push(Box::new(JsonLinesOutput::new(std::io::stdout())));
    }
    if let Some(p) = &o.junit {
        out.push(Box::new(JunitOutput::new(p.clone())));
    }
    if let Some(p) = &o.html {
        out.push(Box::new(HtmlOutput::new(p.clone())));
    }
    out
}

/// Runs a plan and prints the table (the outputs, `--report` included, write themselves);
/// returns the exit code.
pub(super) fn execute_and_report(
    plan: Plan,
    quiet: bool,
    o: &OutputArgs,
    mode: &'static str,
) -> anyhow::Result<i32> {
    execute_and_report_then(plan, quiet, o, mode, |_| {})
}

/// [`execute_and_report`], with `after` called on the report before the table is printed.
pub(super) fn execute_and_report_then(
    plan: Plan,
    quiet: bool,
    o: &OutputArgs,
    mode: &'static str,
    after: impl FnOnce(&crate::report::RunReport),
) -> anyhow::Result<i32> {
    let report = match runner::execute(plan, RunIo::cli(outputs(quiet, o), mode)) {
        Ok(r) => r,
        Err(e @ (runner::RunError::Verifier(_) | runner::RunError::Preflight(_))) => {
            eprintln!("fanout: {e}");
            return Ok(EXIT_USAGE);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("the run could not go on")),
    };
    after(&report);
    let table = crate::report::table::render_for(&report, quiet);
    if o.json {
        // stdout carries the event lines only.
        eprint!("{}", crate::redact::redact(&table));
    } else {
        super::out::print(crate::redact::redact(&table).as_bytes())?;
    }
    Ok(report.exit_code())
}
