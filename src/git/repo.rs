//! Opening the user's repository, resolving the base commit, and the run folder under `.git/fanout`.

use std::path::{Path, PathBuf};

use git2::Repository;

use super::{GitContext, GitError};

/// The user's repository, opened without touching anything in it.
pub struct UserRepo {
    pub repo: Repository,
    /// The working tree root of the user's checkout.
    pub workdir: PathBuf,
    /// The common git dir (`.git`), shared by all worktrees.
    pub common_dir: PathBuf,
}

impl UserRepo {
    /// Opens the repository containing `path`; refuses bare repositories and empty ones.
    pub fn open(path: &Path) -> Result<UserRepo, GitError> {
        let repo = Repository::discover(path).map_err(|source| GitError::NotARepo {
            path: path.display().to_string(),
            source,
        })?;
        if repo.is_bare() {
            return Err(GitError::Bare(path.display().to_string()));
        }
        let workdir = repo
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(|| GitError::Bare(path.display().to_string()))?;
        let empty = match repo.head() {
            Ok(_) => false,
            Err(e)
                if e.code() == git2::ErrorCode::UnbornBranch
                    || e.code() == git2::ErrorCode::NotFound =>
            {
                true
            }
            Err(e) => {
                return Err(GitError::Op {
                    what: "cannot read HEAD".into(),
                    source: e,
                })
            }
        };
        if empty {
            return Err(GitError::NoCommits(workdir.display().to_string()));
        }
        let common_dir = repo.commondir().to_path_buf();
        Ok(UserRepo {
            repo,
            workdir,
            common_dir,
        })
    }

    /// Resolves `rev` (default `HEAD`) to a commit id.
    pub fn resolve_base(&self, rev: &str) -> Result<git2::Oid, GitError> {
        let obj = self
            .repo
            .revparse_single(rev)
            .map_err(|source| GitError::BadBase {
                rev: rev.to_string(),
                source,
            })?;
        let commit = obj.peel_to_commit().map_err(|source| GitError::BadBase {
            rev: rev.to_string(),
            source,
        })?;
        Ok(commit.id())
    }

    /// `.git/fanout`, where all run state lives.
    pub fn fanout_dir(&self) -> PathBuf {
        self.common_dir.join("fanout")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.fanout_dir().join("runs")
    }
}

/// Whether a branch exists.
pub fn branch_exists(repo: &Repository, name: &str) -> bool {
    repo.find_reference(&format!("refs/heads/{name}")).is_ok()
}

/// Points `refs/heads/<name>` at `oid`, creating it.
pub fn set_branch(
    repo: &Repository,
    name: &str,
    oid: git2::Oid,
    msg: &str,
) -> Result<(), GitError> {
    repo.reference(&format!("refs/heads/{name}"), oid, true, msg)
        .ctx(|| format!("cannot update branch {name}"))?;
    Ok(())
}

/// The filter drivers the base's `.gitattributes` files (and `info/attributes`) declare, as
/// `driver (pattern, …)`: fanout does not run them, so a run says so at its start.
pub fn filter_drivers(repo: &Repository, base: git2::Oid) -> Vec<String> {
    let mut texts: Vec<(String, Vec<u8>)> = Vec::new();
    if let Ok(tree) = repo.find_commit(base).and_then(|c| c.tree()) {
        let _ = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.name_bytes() == b".gitattributes" {
                if let Ok(blob) = repo.find_blob(entry.id()) {
                    texts.push((dir.to_string(), blob.content().to_vec()));
                }
            }
            git2::TreeWalkResult::Ok
        });
    }
    if let Ok(info) = std::fs::read(repo.commondir().join("info/attributes")) {
        texts.push((String::new(), info));
    }
    let mut drivers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (dir, text) in texts {
        for line in String::from_utf8_lossy(&text).lines() {
            let mut words = line.split_whitespace();
            let Some(pattern) = words.next().filter(|p| !p.starts_with('#')) else {
                continue;
            };
            for w in words {
                if let Some(driver) = w.strip_prefix("filter=") {
                    drivers
                        .entry(driver.to_string())
                        .or_default()
                        .push(format!("{dir}{pattern}"));
                }
            }
        }
    }
    drivers
        .into_iter()
        .map(|(d, mut pats)| {
            pats.dedup();
            let more = pats.len().saturating_sub(5);
            pats.truncate(5);
            let mut list = pats.join(", ");
            if more > 0 {
                list.push_str(&format!(", and {more} more"));
            }
            format!("{d} ({list})")
        })
        .collect()
}

/// Deletes branch `name` of a run that is no longer running. A kill -9 in the middle of a ref
/// update leaves `<ref>.lock` behind, which makes every later update of that ref fail: such a
/// lock is stale once its run is gone, so it is removed first.
pub fn delete_branch_of_dead_run(repo: &Repository, name: &str) -> Result<bool, GitError> {
    let lock = repo
        .commondir()
        .join("refs/heads")
        .join(format!("{name}.lock"));
    match std::fs::remove_file(&lock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx(|| format!("cannot remove the stale lock {}", lock.display())),
    }
    match repo.find_branch(name, git2::BranchType::Local) {
        Ok(mut b) => b
            .delete()
            .map(|()| true)
            .ctx(|| format!("cannot delete branch {name}")),
        Err(_) => Ok(false),
    }
}
