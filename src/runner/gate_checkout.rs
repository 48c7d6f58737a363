//! What the integration gate's checkout gets besides the commit, like a task's workspace: the
//! run's `include` files, the shared setup layer of `defaults.setup` (made once per key and
//! reused by every bisection step while the inputs are unchanged; offline once made), and a
//! copy-on-write view of the tasks' caches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::Oid;

use super::shared::Shared;
use crate::plan::IntegrateGate;
use crate::sandbox::CacheMounts;

/// The sandbox additions for one verify run of the gate.
#[derive(Default)]
pub(super) struct Extras {
    pub env: BTreeMap<String, String>,
    pub writable: Vec<PathBuf>,
    pub caches: Option<CacheMounts>,
}

/// Why the checkout could not be completed.
pub(super) enum Incomplete {
    /// The setup failed on this commit: a verdict on the commit, not a broken gate.
    SetupFailed(String),
    Other(String),
}

/// Copies the `include` files and the setup layer into `checkout` (of `commit`) and prepares
/// the caches' view in `scratch`.
pub(super) fn complete(
    shared: &Shared,
    gate: &IntegrateGate,
    handle: &tokio::runtime::Handle,
    commit: Oid,
    (checkout, scratch): (&Path, &Path),
) -> Result<Extras, Incomplete> {
    if let Some(t) = shared.tasks.first() {
        for w in crate::include::copy(&shared.workdir, checkout, &t.include)
            .map_err(|e| Incomplete::Other(crate::error_chain(&e)))?
        {
            shared.events.warn(None, &format!("integration gate: {w}"));
        }
    }
    if let Some(plan) = &gate.setup {
        let layer = handle
            .block_on(super::setup_run::layer(shared, plan, commit))
            .map_err(|f| Incomplete::SetupFailed(f.message))?;
        super::setup_run::copy_into(&layer, checkout).map_err(Incomplete::Other)?;
    }
    let mut extras = Extras::default();
    if let Some(caches) = &shared.caches {
        let view = caches
            .task_view(scratch, &caches_layers(scratch))
            .map_err(|e| Incomplete::Other(crate::error_chain(&e)))?;
        extras.env = view.env;
        extras.writable = view.writable;
        extras.caches = view.mounts;
    }
    Ok(extras)
}

/// The gate's cache layers: beside its scratch folder, out of the verify command's reach.
pub(super) fn caches_layers(scratch: &Path) -> PathBuf {
    scratch.with_extension("cache-layers")
}
