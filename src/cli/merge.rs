//! `fanout merge RUN [--into BRANCH]`: bring a run's integration branch into a branch of the
//! user's, only as a fast-forward or a clean merge (see [`crate::git::merge_into`]).

use super::args::MergeArgs;
use super::common::{usage, EXIT_OK, EXIT_USAGE};
use crate::git::merge_into::{merge_into, MergeIntoError, MergeOutcome};

pub fn run(a: MergeArgs) -> anyhow::Result<i32> {
    let repo = super::common::open_repo(&a.repo)?;
    let run = super::common::resolve_run(&a.repo, &a.run)?;
    let from = crate::ids::merged_branch(&run);
    if repo
        .repo
        .find_branch(&from, git2::BranchType::Local)
        .is_err()
    {
        return Err(usage(format!(
            "run {run} has no integration branch {from} (it changed nothing, or it was cleaned)"
        )));
    }
    let into = match a.into {
        Some(b) => b,
        None => current_branch(&repo.repo)?,
    };
    match merge_into(&repo.workdir, &format!("refs/heads/{from}"), &into) {
        Ok(m) => {
            let short = m.commit.get(..12).unwrap_or(&m.commit);
            super::common::say(&match m.outcome {
                MergeOutcome::UpToDate => format!("{into} already contains {from}"),
                MergeOutcome::FastForward => format!("{into} fast-forwarded to {from} ({short})"),
                MergeOutcome::Merged => format!("merged {from} into {into} ({short})"),
                MergeOutcome::Created => format!("created {into} at {from} ({short})"),
            })?;
            Ok(EXIT_OK)
        }
        // Refusals the user resolves (commit or stash, rebase, retry): a clear line, exit 2.
        Err(
            e @ (MergeIntoError::Dirty { .. }
            | MergeIntoError::Conflict { .. }
            | MergeIntoError::Moved(_)
            | MergeIntoError::CheckoutBlocked { .. }
            | MergeIntoError::BadBranch(_)),
        ) => {
            eprintln!("fanout: {e}");
            Ok(EXIT_USAGE)
        }
        Err(e) => Err(usage(crate::error_chain(&e))),
    }
}

/// The branch the user's checkout is on; a detached HEAD needs `--into`.
fn current_branch(repo: &git2::Repository) -> anyhow::Result<String> {
    let head = repo
        .find_reference("HEAD")
        .map_err(|e| usage(format!("cannot read HEAD: {e}")))?;
    head.symbolic_target()
        .and_then(|t| t.strip_prefix("refs/heads/"))
        .map(str::to_string)
        .ok_or_else(|| usage("HEAD is detached; name the branch to merge into with --into"))
}
