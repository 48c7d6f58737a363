//! The run's shared setup layers, by key (see `crate::setup::key`): each made once — the
//! first task (or gate step) to need one makes it while later ones wait on its slot — and
//! then only read. A failure is kept too: every task that needs that layer fails with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A finished setup layer.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    pub key: String,
    /// The files the setup made, as they lie in the workspace (root of the layer).
    pub root: PathBuf,
    /// The setup's log.
    pub log: PathBuf,
}

type Slot = Arc<tokio::sync::Mutex<Option<Result<Arc<Layer>, String>>>>;

/// The run's layers and where they live.
pub(crate) struct SetupLayers {
    dir: PathBuf,
    slots: Mutex<HashMap<String, Slot>>,
}

impl SetupLayers {
    /// Layers live in `dir` (`<worktrees>/.setup`: no task id starts with a dot).
    pub fn new(dir: PathBuf) -> SetupLayers {
        SetupLayers {
            dir,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The folder of the layer `key`.
    pub fn layer_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The slot of `key`: hold its lock while making the layer.
    pub fn slot(&self, key: &str) -> Slot {
        let mut map = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }

    /// Removes every layer (end of run).
    pub fn remove_all(&self) {
        let _ = crate::fs_util::remove_tree(&self.dir);
    }
}
