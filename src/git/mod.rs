/*!
Everything fanout does to git, through git2 (libgit2) in-process: no hooks, no filters of the
user's configuration, no fsmonitor, and never the user's checkout, index or current branch.
*/

pub mod checkout;
pub mod collect;
pub mod collect_options;
pub mod conflict_markers;
pub mod gc_guard;
pub mod line_merge;
pub mod memory_lower;
pub mod merge;
pub mod merge_into;
mod merge_resolve;
pub mod merge_rules;
pub mod message;
pub mod pack_write;
pub mod repo;
pub mod risky;
pub mod scan;
pub mod snapshot;
pub mod tree_diff;
pub mod upper;
mod workspace;
pub mod worktree;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{path} is not a git repository (or cannot be opened)")]
    NotARepo {
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("{0} is a bare repository; fanout needs a repository with a working tree")]
    Bare(String),
    #[error("the repository at {0} has no commits yet; commit something first")]
    NoCommits(String),
    #[error("cannot resolve base {rev:?} to a commit")]
    BadBase {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("{what}")]
    Op {
        what: String,
        #[source]
        source: git2::Error,
    },
    #[error(transparent)]
    Scan(#[from] scan::ScanError),
    /// The workspace holds what fanout will not commit: every problem, each naming its path.
    #[error("cannot commit the workspace as it is: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Adds context to git2 errors.
pub(crate) trait GitContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, GitError>;
}

impl<T> GitContext<T> for Result<T, git2::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, GitError> {
        self.map_err(|source| GitError::Op {
            what: what(),
            source,
        })
    }
}

impl<T> GitContext<T> for Result<T, std::io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, GitError> {
        self.map_err(|source| GitError::Io {
            what: what(),
            source,
        })
    }
}

/// The signature fanout commits with: fanout is the committer of every task commit.
pub fn fanout_signature() -> Result<git2::Signature<'static>, GitError> {
    git2::Signature::now("fanout", "fanout@localhost").ctx(|| "cannot build a signature".into())
}

/// A git path (bytes) as a filesystem path.
pub(crate) fn bytes_path(p: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(p))
}

/// An index entry without stat data: what git would read from a tree.
pub(crate) fn index_entry(path: Vec<u8>, mode: u32, id: git2::Oid, flags: u16) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags,
        flags_extended: 0,
        path,
    }
}

/// The tree entry mode of a raw git mode (anything unknown is a plain file).
pub(crate) fn file_mode(mode: u32) -> git2::FileMode {
    match mode {
        0o100755 => git2::FileMode::BlobExecutable,
        0o120000 => git2::FileMode::Link,
        0o160000 => git2::FileMode::Commit,
        _ => git2::FileMode::Blob,
    }
}
