//! What the integration gate's checkout gets besides the commit, like a task's workspace: the
//! run's `include` files, the shared setup layer of `defaults.setup` (made once per key and
//! reused by every bisection step while the inputs are unchanged; offline once made), and a
//! copy-on-write view of the tasks' caches. Where overlays work the layer is not copied: the
//! verify command runs in an overlay view (upper folder of its own, the layer, the checkout
//! as lower), as a task does; otherwise the layer is copied into the checkout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::Oid;

use super::shared::Shared;
use crate::plan::IntegrateGate;
use crate::sandbox::{CacheMounts, OverlaySpec};

/// The sandbox additions for one verify run of the gate.
#[derive(Default)]
pub(super) struct Extras {
    pub env: BTreeMap<String, String>,
    pub writable: Vec<PathBuf>,
    pub caches: Option<CacheMounts>,
    /// The overlay view the command runs in (its `merged` is then the working folder).
    pub overlay: Option<OverlaySpec>,
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
    let mut extras = Extras::default();
    if let Some(plan) = &gate.setup {
        let layer = handle
            .block_on(super::setup_run::layer(shared, plan, commit, None))
            .map_err(|f| Incomplete::SetupFailed(f.message))?;
        if shared.workspaces.overlay() {
            extras.overlay = Some(view(shared, checkout, &layer.root).map_err(Incomplete::Other)?);
        } else {
            super::setup_run::copy_into(&layer, checkout).map_err(Incomplete::Other)?;
        }
    }
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

/// Where the gate's overlay view lives: its layers beside the tasks' (out of the command's
/// reach), the mount point beside the checkout.
fn view_paths(shared: &Shared, checkout: &Path) -> (PathBuf, PathBuf) {
    let layers = super::workspace::layers_dir(&shared.run_dir, GATE_LAYERS);
    (layers, checkout.with_extension("view"))
}

/// A name no task id can take (`+`).
const GATE_LAYERS: &str = "+integration";

/// The overlay view of `checkout` with the setup layer above it, mounted by the sandbox at a
/// folder of its own (the checkout stays fanout's, shown as the gate uid's through the
/// idmapped mount as root, like a task's lower).
fn view(shared: &Shared, checkout: &Path, layer: &Path) -> Result<OverlaySpec, String> {
    remove_view(shared, checkout);
    let (layers, merged) = view_paths(shared, checkout);
    let (upper, work) = (layers.join("upper"), layers.join("work"));
    for p in [&upper, &work, &merged] {
        std::fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    }
    if let Some(who) = crate::sandbox::user::gate_user(shared.options.sandbox.run_as) {
        crate::sandbox::user::hand_over(&upper, who)
            .map_err(|e| format!("cannot give {} to the gate uid: {e}", upper.display()))?;
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    Ok(OverlaySpec {
        setup: Some(abs(layer)),
        lower: abs(checkout),
        upper: abs(&upper),
        work: abs(&work),
        merged: abs(&merged),
    })
}

/// Removes the gate's overlay view (nothing when it had none).
pub(super) fn remove_view(shared: &Shared, checkout: &Path) {
    let (layers, merged) = view_paths(shared, checkout);
    let _ = crate::fs_util::remove_tree(&layers);
    let _ = std::fs::remove_dir(&merged);
}
