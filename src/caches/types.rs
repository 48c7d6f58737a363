//! The caches' types: a run's caches, what a task and the fill step get, how preparing fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sandbox::{CacheMounts, RunAs};
use crate::taskfile::Cache;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot prepare {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |source| CacheError::Io { what, path, source }
}

/// The run's caches: the checked shared store, and how tasks see it.
#[derive(Debug)]
pub struct RunCaches {
    /// The real folder of the store.
    pub(super) root: PathBuf,
    pub(super) caches: Vec<Cache>,
    /// `Ok`: copy-on-write layers; `Err(why)`: private, empty caches per task.
    pub(super) layered: Result<(), String>,
    pub(super) run_as: Option<RunAs>,
}

/// What one task's processes get of the caches.
#[derive(Clone, Debug, Default)]
pub struct TaskCaches {
    /// The tools' variables, pointing into the task's view.
    pub env: BTreeMap<String, String>,
    /// The layers the sandbox mounts (`None`: private caches, nothing to mount).
    pub mounts: Option<CacheMounts>,
    /// Where the view is mounted: writable in the sandbox.
    pub writable: Vec<PathBuf>,
    /// Why this task got private caches although the run has layers.
    pub warning: Option<String>,
}

/// What the fill step gets: the variables, and the shared folders it may write.
#[derive(Clone, Debug, Default)]
pub struct FillCaches {
    pub env: BTreeMap<String, String>,
    pub writable: Vec<PathBuf>,
}
