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
    crate::git::repo::UserRepo::open(&a.repo).map_err(|e| usage(crate::error_chain(&e)))
}

/// Prints one line on stdout; a closed pipe or a full disk is an error, never a panic.
pub(super) fn say(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Run ids found in the repository's run folder, oldest first.
pub(super) fn list_runs(repo: &crate::git::repo::UserRepo) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(repo.runs_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs
}

/// What a user may type where a run is expected: a run id, or `last` for the newest run of
/// the repository (run ids start with their UTC start time, so the largest is the newest).
pub fn resolve_run(repo: &RepoArg, raw: &str) -> anyhow::Result<crate::ids::RunId> {
    if raw != LAST_RUN {
        return crate::ids::RunId::parse(raw).map_err(usage);
    }
    let user_repo = open_repo(repo)?;
    let runs_dir = user_repo.runs_dir();
    // Only folders named like run ids count: a stray file must not become "the last run".
    let runs: Vec<crate::ids::RunId> = list_runs(&user_repo)
        .iter()
        .filter(|r| runs_dir.join(r).is_dir())
        .filter_map(|r| crate::ids::RunId::parse(r).ok())
        .collect();
    // Ids tell the second a run started; runs started within the same second are told apart
    // by the start time in their state.
    let second = |r: &crate::ids::RunId| r.as_str().get(..15).unwrap_or(r.as_str()).to_string();
    let newest = runs.iter().map(second).max();
    runs.into_iter()
        .filter(|r| Some(second(r)) == newest)
        .max_by_key(|r| {
            let started = crate::state::StateFile::read(
                &crate::run_dir::RunDir::new(runs_dir.join(r.as_str())).state(),
            )
            .map(|s| s.started_at_ms)
            .unwrap_or(0);
            (started, r.clone())
        })
        .ok_or_else(|| usage(format!("`last`: no runs in {}", runs_dir.display())))
}

/// The run alias [`resolve_run`] understands.
pub const LAST_RUN: &str = "last";

pub use crate::exit::{OK as EXIT_OK, TASKS_FAILED as EXIT_TASKS_FAILED, USAGE as EXIT_USAGE};
