/*!
Named caches (`caches` in the task file) that carry nothing executable between tasks or runs.

- **Shared store**: `<git-dir>/fanout/caches/<name>` keeps only what is a cache (each preset's
  shared parts: cargo's `registry/` and `git/`, go's module cache, npm's `_cacache`, the whole
  folder for pip, uv, yarn and named caches). A folder there that fanout did not make is
  replaced, with a warning ([`store`]).
- **Tasks** see the store through a copy-on-write layer of their own: one overlay, mounted in
  the task's private mount namespace by the sandbox, its folders (mount point included) out of
  the task's reach and removed with the task; the store itself is bind-mounted read-only there.
  What a task writes into a cache is seen by that task only. Everything else of the task's view
  (cargo's `config.toml`, `bin/`, credentials; go's build cache) is a private folder that starts
  empty ([`view`]). Where no layer can be mounted (no user namespaces), each task gets private,
  empty caches, and the run says so.
- **Filling**: only `caches_fill`, once per run before any agent, in a sandboxed checkout of
  the base commit, writes the store.
*/

mod store;
mod types;
mod view;

use std::path::{Path, PathBuf};

use crate::sandbox::RunAs;
use crate::taskfile::Cache;

pub use store::{caches_link, remove_all};

pub use types::{CacheError, FillCaches, RunCaches, TaskCaches};

impl RunCaches {
    /// Checks (and recreates) the store of `caches` (the union of the tasks' caches);
    /// `layers_work` says whether copy-on-write layers mount here. Returns the warnings to say.
    pub fn prepare(
        common_dir: &Path,
        caches: Vec<Cache>,
        run_as: Option<RunAs>,
        layers_work: impl FnOnce() -> Result<(), String>,
    ) -> Result<(RunCaches, Vec<String>), CacheError> {
        let mut warnings = Vec::new();
        let root = store::open_root(common_dir, run_as, &mut warnings)?;
        for c in &caches {
            store::ensure_cache(&root, c, run_as, &mut warnings)?;
        }
        let layered = layers_work();
        if let Err(why) = &layered {
            warnings.push(format!(
                "caches: no copy-on-write layer can be mounted here ({why}); every task gets private, empty caches"
            ));
        }
        Ok((
            RunCaches {
                root,
                caches,
                layered,
                run_as,
            },
            warnings,
        ))
    }

    /// Whether tasks see the shared caches (through layers) rather than private, empty ones.
    pub fn layered(&self) -> bool {
        self.layered.is_ok()
    }

    /// The shared folder of cache `name`.
    pub fn shared_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Prepares a task's view in `scratch/caches` and its layers in `layers` (a folder out
    /// of the task's reach; emptied first).
    pub fn task_view(&self, scratch: &Path, layers: &Path) -> Result<TaskCaches, CacheError> {
        view::task(self, scratch, layers)
    }

    /// The fill step's view: the shared parts themselves, writable.
    pub fn fill_view(&self, scratch: &Path) -> Result<FillCaches, CacheError> {
        view::fill(self, scratch)
    }
}

/// Removes a task's cache layers (when the task ends), and their parent once empty.
pub fn remove_task_layers(layers: &Path) {
    let _ = crate::fs_util::remove_tree(layers);
    if let Some(parent) = layers.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}
