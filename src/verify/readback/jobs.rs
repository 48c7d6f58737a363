//! The committed side of read-back: what to do with every path of a task's diff, from the
//! task's tree (never from the worktree, which is the agent's and may have changed since).

use std::collections::BTreeSet;
use std::path::Path;

use crate::git::collect::Collected;

/// Why the committed side could not be read; read-back then fails closed.
#[derive(Debug, thiserror::Error)]
pub enum CommittedError {
    #[error("cannot open the repository")]
    Repo(#[source] git2::Error),
    #[error("cannot find the task's tree")]
    Tree(#[source] git2::Error),
    #[error("cannot read the committed {path}")]
    Blob {
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("internal error")]
    Join(#[source] tokio::task::JoinError),
}

/// One path of a task's diff and what read-back does with it.
#[derive(Debug, PartialEq)]
pub(crate) enum Job {
    /// Text to compare with what the verifier shows.
    Compare {
        path: String,
        content: String,
    },
    Binary(String),
    Skip {
        path: String,
        why: String,
    },
    /// Deleted (or renamed away): must not be readable.
    MustBeGone(String),
}

/// The jobs for every changed path of `collected`, from its tree in `repo_path`.
pub(crate) fn jobs_for(
    repo_path: &Path,
    collected: &Collected,
) -> Result<Vec<Job>, CommittedError> {
    let repo = git2::Repository::open(repo_path).map_err(CommittedError::Repo)?;
    let tree = repo
        .find_tree(collected.tree)
        .map_err(CommittedError::Tree)?;
    let mut jobs = Vec::new();
    let mut gone = BTreeSet::new();
    for change in &collected.summary.changes {
        match change.kind.as_str() {
            "deleted" => {
                gone.insert(change.path.clone());
                continue;
            }
            "renamed" => {
                if let Some(old) = &change.old_path {
                    gone.insert(old.clone());
                }
            }
            _ => {}
        }
        let path = change.path.clone();
        let Ok(entry) = tree.get_path(Path::new(&path)) else {
            jobs.push(Job::Skip {
                path,
                why: "not in the committed tree".into(),
            });
            continue;
        };
        match entry.filemode() {
            0o120000 => {
                jobs.push(Job::Skip {
                    path,
                    why: "symbolic link (reading it would follow the link)".into(),
                });
                continue;
            }
            0o160000 => {
                jobs.push(Job::Skip {
                    path,
                    why: "submodule".into(),
                });
                continue;
            }
            _ => {}
        }
        let blob = repo
            .find_blob(entry.id())
            .map_err(|source| CommittedError::Blob {
                path: path.clone(),
                source,
            })?;
        jobs.push(job_for_blob(path, change.binary, blob.content()));
    }
    // A path deleted and re-added (or renamed onto) is in the tree: compared, not "gone".
    for path in gone {
        if tree.get_path(Path::new(&path)).is_err() {
            jobs.push(Job::MustBeGone(path));
        }
    }
    Ok(jobs)
}

/// Text is compared; git's binary flag, a NUL byte or invalid UTF-8 (the verifier would show
/// U+FFFD: nothing exact to compare) make it binary.
fn job_for_blob(path: String, git_binary: bool, bytes: &[u8]) -> Job {
    if git_binary || bytes.contains(&0) {
        return Job::Binary(path);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Job::Compare {
            path,
            content: text.to_string(),
        },
        Err(_) => Job::Binary(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_binary() {
        assert_eq!(
            job_for_blob("a".into(), false, b"text\r\n"),
            Job::Compare {
                path: "a".into(),
                content: "text\r\n".into()
            }
        );
        assert_eq!(
            job_for_blob("a".into(), true, b"x"),
            Job::Binary("a".into())
        );
        assert_eq!(
            job_for_blob("a".into(), false, b"a\0b"),
            Job::Binary("a".into())
        );
        assert_eq!(
            job_for_blob("a".into(), false, b"\xff\xfe"),
            Job::Binary("a".into())
        );
    }
}
