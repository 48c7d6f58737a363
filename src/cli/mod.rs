/*!
The command line: clap structs holding exactly what the user typed, and one function per
subcommand that turns them into library calls and prints the result. Exit codes: 0 success,
1 some task did not end `merged`/`no_changes`, 2 usage or input error, 3 (`combine`) tasks
of a shard that handed nothing over, 130 interrupted.
*/

pub(crate) mod args;
mod clean;
mod collect;
mod combine;
pub(crate) mod common;
pub(crate) mod diff;
mod log;

pub mod mcp;
mod merge;
pub mod out;
mod report;
mod retry;
mod run;
mod schema;
mod shard_run;
mod status;
mod validate;

pub use args::*;
pub use common::{
    resolve_run, usage, UsageError, EXIT_OK, EXIT_TASKS_FAILED, EXIT_USAGE, LAST_RUN,
};

/// Runs the parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Combine(a) => combine::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Status(a) => status::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Log(a) => log::run(a),
        Command::Schema(a) => schema::run(a),
        Command::Collect(a) => collect::run(a),
        Command::Report(a) => report::run(a),
        Command::Clean(a) => clean::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Resume(a) => resume(a),
        Command::Retry(a) => retry::run(a),
        Command::Doctor(a) => doctor(a),
        Command::Mcp(a) => mcp::serve(a),
        Command::McpConfig(a) => mcp::config(a),
        // Still single-threaded here: the supervisor may fork.
        Command::Sandbox(a) => Ok(crate::sandbox::cli::run_args(a)),
    }
}

fn doctor(a: DoctorArgs) -> anyhow::Result<i32> {
    let file = match &a.tasks {
        Some(path) => match crate::taskfile::load(path) {
            Ok(f) => Some(f),
            Err(e) => return Err(usage(e)),
        },
        None => None,
    };
    let workdir = match crate::git::repo::UserRepo::open(&a.repo.repo) {
        Ok(r) => {
            out::outln!("ok    git: repository at {}", r.workdir.display())?;
            Some(r.workdir)
        }
        Err(e) => {
            out::outln!("warn  git: {e}")?;
            None
        }
    };
    let mut checks = crate::doctor::run(file.as_ref());
    if let Some(f) = &file {
        checks.extend(crate::doctor::exec_checks(f, workdir.as_deref()));
    }
    for c in &checks {
        out::outln!("{c}")?;
    }
    let verifier = file
        .as_ref()
        .and_then(|f| f.verifier.as_ref())
        .map(|v| v.command.clone())
        .unwrap_or_else(|| "claude".into());
    out::outln!("{}", crate::verify::readback::doctor_line(&verifier))?;
    Ok(if crate::doctor::has_errors(&checks) {
        EXIT_TASKS_FAILED
    } else {
        EXIT_OK
    })
}

fn resume(a: ResumeArgs) -> anyhow::Result<i32> {
    let run = resolve_run(&a.repo, &a.run)?;
    let mut c = retry::continue_of(&a.repo, run, &a.go_on)?;
    if let Some(text) = &a.budget {
        let budget = crate::usage::budget::parse_override(text)
            .map_err(|e| usage(format!("--budget: {e}")))?;
        c.budget = Some(budget);
    }
    let continued = crate::resume::plan_resume(&c).map_err(|e| usage(crate::error_chain(&e)))?;
    retry::say_notes("resume", &continued.notes);
    run::execute_and_report(continued.plan, a.go_on.quiet, &a.go_on.output, "resume")
}
