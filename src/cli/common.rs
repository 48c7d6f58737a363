//! What every subcommand uses: usage errors, exit codes, the repository and run named on the
//! command line, a line to the user.

use super::args::RepoArg;

/// Bad input (a missing repository, an unknown run): printed as `fanout: <message>`, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Wraps any error as a [`UsageError`].
pub fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// The user's repository, or a usage error.
pub(super) fn open_repo(a: &RepoArg) -> anyhow::Result<crate::git::repo::UserRepo> {
    crate::lookup::open_repo(&a.repo).map_err(usage)
}

/// Prints one line on stdout; a closed pipe or a full disk is an error, never a panic.
pub(super) fn say(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

pub(super) use crate::lookup::list_runs;
pub use crate::lookup::LAST_RUN;

/// A run as the user named it (`last` too); a usage error when there is none.
pub fn resolve_run(repo: &RepoArg, raw: &str) -> anyhow::Result<crate::ids::RunId> {
    crate::lookup::resolve_run(&repo.repo, raw).map_err(usage)
}

/// `RUN TASK` as the user typed them; a usage error when either is not there.
pub(super) fn run_task(
    repo: &RepoArg,
    run: &str,
    task: &str,
) -> anyhow::Result<crate::lookup::RunTask> {
    crate::lookup::run_task(&repo.repo, run, task).map_err(usage)
}

pub use crate::exit::{OK as EXIT_OK, TASKS_FAILED as EXIT_TASKS_FAILED, USAGE as EXIT_USAGE};
