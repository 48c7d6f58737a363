/*!
Bringing a run's integration branch into a branch the user names (`fanout_merge` over MCP):
fast-forward, or a merge commit when the merge is clean — never a conflicted merge, and never
over uncommitted changes of a worktree that has the target branch checked out. This is the
explicit step the design keeps apart from a run: a run never touches the user's branches.
*/

use std::path::Path;

use git2::{BranchType, Repository, StatusOptions};

/// What [`merge_into`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeOutcome {
    /// The target already contains the source.
    UpToDate,
    /// The target moved forward to the source.
    FastForward,
    /// A merge commit with both as parents (the merge was clean).
    Merged,
    /// The target did not exist; it was created at the source.
    Created,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeIntoError {
    #[error("cannot open the repository at {path}")]
    Open {
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("{rev:?} names no commit")]
    NoSource {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("{0:?} is not a valid branch name")]
    BadBranch(String),
    #[error("branch {branch} is checked out at {worktree} with uncommitted changes ({paths}); commit or stash them first")]
    Dirty {
        branch: String,
        worktree: String,
        paths: String,
    },
    #[error("merging {from} into {branch} conflicts in {paths}; nothing was changed")]
    Conflict {
        from: String,
        branch: String,
        paths: String,
    },
    #[error("cannot update the checkout of {branch} at {worktree} (an untracked file is in the way?); nothing was changed")]
    CheckoutBlocked {
        branch: String,
        worktree: String,
        #[source]
        source: git2::Error,
    },
    #[error("branch {0} moved while merging; nothing was changed, try again")]
    Moved(String),
    #[error("{what}")]
    Git {
        what: String,
        #[source]
        source: git2::Error,
    },
}

fn ctx<T>(r: Result<T, git2::Error>, what: impl FnOnce() -> String) -> Result<T, MergeIntoError> {
    r.map_err(|source| MergeIntoError::Git {
        what: what(),
        source,
    })
}

/// The result of a merge: what happened and the commit the target now points at.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Merged {
    pub outcome: MergeOutcome,
    pub commit: String,
}

/// Brings `from_ref` into the local branch `into_branch` of the repository at `repo_path`.
pub fn merge_into(
    repo_path: &Path,
    from_ref: &str,
    into_branch: &str,
) -> Result<Merged, MergeIntoError> {
    let repo = Repository::open(repo_path).map_err(|source| MergeIntoError::Open {
        path: repo_path.display().to_string(),
        source,
    })?;
    let refname = format!("refs/heads/{into_branch}");
    if !git2::Reference::is_valid_name(&refname) || into_branch.starts_with('-') {
        return Err(MergeIntoError::BadBranch(into_branch.to_string()));
    }
    let from = repo
        .revparse_single(from_ref)
        .and_then(|o| o.peel_to_commit())
        .map_err(|source| MergeIntoError::NoSource {
            rev: from_ref.to_string(),
            source,
        })?;
    let shown = from_ref.strip_prefix("refs/heads/").unwrap_or(from_ref);
    let msg = format!("fanout: merge {shown}");
    let Ok(branch) = repo.find_branch(into_branch, BranchType::Local) else {
        ctx(repo.branch(into_branch, &from, false), || {
            format!("cannot create branch {into_branch}")
        })?;
        return Ok(Merged {
            outcome: MergeOutcome::Created,
            commit: from.id().to_string(),
        });
    };
    let target = ctx(branch.get().peel_to_commit(), || {
        format!("branch {into_branch} points at no commit")
    })?;
    let (old, src) = (target.id(), from.id());
    let checked_out = checked_out_in(&repo, &refname)?;
    if let Some(wt) = &checked_out {
        refuse_dirty(wt, into_branch)?;
    }
    let (outcome, new) =
        if old == src || ctx(repo.graph_descendant_of(old, src), || "merge base".into())? {
            return Ok(Merged {
                outcome: MergeOutcome::UpToDate,
                commit: old.to_string(),
            });
        } else if ctx(repo.graph_descendant_of(src, old), || "merge base".into())? {
            (MergeOutcome::FastForward, src)
        } else {
            let mut index = ctx(repo.merge_commits(&target, &from, None), || {
                format!("cannot merge {from_ref} into {into_branch}")
            })?;
            if index.has_conflicts() {
                let mut paths: Vec<String> = Vec::new();
                if let Ok(conflicts) = index.conflicts() {
                    for c in conflicts.flatten() {
                        let entry = c.our.or(c.their).or(c.ancestor);
                        if let Some(e) = entry {
                            paths.push(String::from_utf8_lossy(&e.path).into_owned());
                        }
                    }
                }
                return Err(MergeIntoError::Conflict {
                    from: from_ref.to_string(),
                    branch: into_branch.to_string(),
                    paths: paths.join(", "),
                });
            }
            let tree_id = ctx(index.write_tree_to(&repo), || {
                "cannot write the merged tree".into()
            })?;
            let tree = ctx(repo.find_tree(tree_id), || {
                "cannot read the merged tree".into()
            })?;
            // The user asked for this merge: their identity when the repository has one.
            let sig = match repo.signature() {
                Ok(s) => s,
                Err(_) => ctx(git2::Signature::now("fanout", "fanout@localhost"), || {
                    "cannot build a signature".into()
                })?,
            };
            let message = format!("Merge {shown} into {into_branch}\n");
            let commit = ctx(
                repo.commit(None, &sig, &sig, &message, &tree, &[&target, &from]),
                || "cannot write the merge commit".into(),
            )?;
            (MergeOutcome::Merged, commit)
        };
    if let Some(wt) = &checked_out {
        // The worktree follows the branch, as `git merge` would update it; SAFE never
        // overwrites a file that differs from what the index expects.
        // libgit2 checks every path before it writes one, so a refusal changes nothing.
        let commit = ctx(wt.find_commit(new), || "cannot read the new commit".into())?;
        let mut co = git2::build::CheckoutBuilder::new();
        co.safe();
        wt.checkout_tree(commit.as_object(), Some(&mut co))
            .map_err(|source| MergeIntoError::CheckoutBlocked {
                branch: into_branch.to_string(),
                worktree: wt
                    .workdir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source,
            })?;
    }
    if repo
        .reference_matching(&refname, new, true, old, &msg)
        .is_err()
    {
        if let Some(wt) = &checked_out {
            // Put the files back as the branch has them; SAFE again: nothing is overwritten.
            if let Ok(c) = wt.find_commit(old) {
                let mut co = git2::build::CheckoutBuilder::new();
                co.safe();
                let _ = wt.checkout_tree(c.as_object(), Some(&mut co));
            }
        }
        return Err(MergeIntoError::Moved(into_branch.to_string()));
    }
    Ok(Merged {
        outcome,
        commit: new.to_string(),
    })
}

/// The repository (main or linked worktree) whose HEAD is `refname`, if any.
fn checked_out_in(repo: &Repository, refname: &str) -> Result<Option<Repository>, MergeIntoError> {
    let head_is = |r: &Repository| {
        r.find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().map(|t| t == refname))
            .unwrap_or(false)
    };
    if !repo.is_bare() && head_is(repo) {
        return Ok(Some(ctx(Repository::open(repo.path()), || {
            "reopen".into()
        })?));
    }
    if let Ok(names) = repo.worktrees() {
        for name in names.iter().flatten() {
            let Ok(wt) = repo.find_worktree(name) else {
                continue;
            };
            let Ok(r) = Repository::open_from_worktree(&wt) else {
                continue;
            };
            if head_is(&r) {
                return Ok(Some(r));
            }
        }
    }
    Ok(None)
}

/// Refuses a checkout with changes to tracked files (in the index or the working tree).
fn refuse_dirty(wt: &Repository, branch: &str) -> Result<(), MergeIntoError> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(false).include_ignored(false);
    let statuses = ctx(wt.statuses(Some(&mut opts)), || {
        format!("cannot read the status of the checkout of {branch}")
    })?;
    let dirty: Vec<String> = statuses
        .iter()
        .filter(|s| !s.status().is_empty() && s.status() != git2::Status::CURRENT)
        .filter_map(|s| s.path().map(str::to_string))
        .collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let shown = dirty.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    Err(MergeIntoError::Dirty {
        branch: branch.to_string(),
        worktree: wt
            .workdir()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        paths: if dirty.len() > 5 {
            format!("{shown}, … {} more", dirty.len() - 5)
        } else {
            shown
        },
    })
}
