/*!
The run's caches (see `crate::caches`): the shared store checked and the layering decided
once, before any task; then the fill step (`caches_fill`), the only writer of the store: the
command runs once, before any agent, in a sandboxed checkout of the base commit with the
store writable, and its checkout goes afterwards. A failed fill is a warning: tasks use the
caches as they were.
*/

use std::path::Path;
use std::time::Duration;

use super::shared::Shared;
use crate::git::worktree;
use crate::plan::{CachesFill, PlannedTask, RunOptions};
use crate::process::SpawnSpec;

/// Where the fill step's checkout and scratch folder live: a name no task id can take (`+`).
const FILL_DIR: &str = "+caches-fill";

/// Checks the store of the tasks' caches and decides whether layers mount here (the overlay
/// workspace already proved it, else a throwaway overlay is tried). `None`: no caches.
pub(super) fn prepare(
    tasks: &[PlannedTask],
    common_dir: &Path,
    run_dir: &Path,
    options: &RunOptions,
    overlay_works: bool,
) -> Result<Option<(crate::caches::RunCaches, Vec<String>)>, String> {
    let mut caches: Vec<crate::taskfile::Cache> = Vec::new();
    for c in tasks.iter().flat_map(|t| &t.caches) {
        if !caches.iter().any(|k| k.name == c.name) {
            caches.push(c.clone());
        }
    }
    if caches.is_empty() {
        return Ok(None);
    }
    let probe = || {
        if let Some(why) = test_hooks::no_layers() {
            return Err(why);
        }
        if overlay_works {
            return Ok(());
        }
        let dir = crate::run_dir::RunDir::new(run_dir)
            .scratch()
            .join(".cache-probe");
        let _ = worktree::remove_tree(&dir);
        let r = std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))
            .and_then(|()| {
                crate::sandbox::overlay::probe(
                    &options.self_exe,
                    &dir,
                    crate::sandbox::user::caches_user(options.sandbox.run_as),
                    options.sandbox.min_abi,
                )
            });
        let _ = worktree::remove_tree(&dir);
        r
    };
    // As root the store, the fill and the tasks that use caches share one uid of the run.
    let owner = crate::sandbox::user::caches_user(options.sandbox.run_as);
    crate::caches::RunCaches::prepare(common_dir, caches, owner, probe)
        .map(Some)
        .map_err(|e| crate::error_chain(&e))
}

/// Runs `caches_fill`; `Some` is the warning when it failed.
pub(super) fn fill(
    shared: &Shared,
    fill: &CachesFill,
    handle: &tokio::runtime::Handle,
) -> Option<String> {
    let caches = shared.caches.as_ref()?;
    let name = format!("fanout-{}{FILL_DIR}", shared.run_id);
    let files = crate::run_dir::RunDir::new(&shared.run_dir).task(FILL_DIR);
    let (checkout, scratch) = (files.worktree, files.scratch);
    let branch = format!("fanout/{}/caches-fill", shared.run_id);
    let argv = fill.command.argv();
    let log = crate::run_dir::RunDir::new(&shared.run_dir)
        .logs()
        .join("caches-fill.log");
    let failed = |why: String| {
        Some(format!(
            "caches_fill `{}` failed: {why}; tasks use the caches as they were",
            argv.join(" ")
        ))
    };
    remove(shared, &name, &checkout, &scratch, &branch);
    let spec = match set_up(shared, caches, &name, &branch, &checkout, &scratch) {
        Ok(spec) => spec,
        Err(e) => {
            remove(shared, &name, &checkout, &scratch, &branch);
            return failed(e);
        }
    };
    let mut cancel = shared.cancel.clone();
    let timeout = Duration::from_secs_f64(fill.timeout_secs);
    let out = handle.block_on(async {
        tokio::select! {
            o = crate::verify::command::run_logged(&spec, &argv, timeout, Some(&log)) => Some(o),
            _ = cancel.wait_for(|c| *c) => None,
        }
    });
    remove(shared, &name, &checkout, &scratch, &branch);
    match out {
        Some(o) if o.passed => None,
        Some(o) => failed(format!(
            "{}; log {}:\n{}",
            o.summary,
            log.display(),
            crate::process::tail_of_file(&log, 2000).trim_end()
        )),
        None => failed("interrupted".into()),
    }
}

/// The fill step's checkout of the base, its scratch folder, and how its command runs.
fn set_up(
    shared: &Shared,
    caches: &crate::caches::RunCaches,
    name: &str,
    branch: &str,
    checkout: &Path,
    scratch: &Path,
) -> Result<SpawnSpec, String> {
    let repo = git2::Repository::open(&shared.repo_path)
        .map_err(|e| format!("cannot open the repository: {e}"))?;
    worktree::create(&repo, name, branch, shared.base, checkout)
        .map_err(|e| crate::error_chain(&e))?;
    let tmp = scratch.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut env =
        crate::taskenv::private_home(&scratch.join("home")).map_err(|e| crate::error_chain(&e))?;
    let view = caches
        .fill_view(scratch)
        .map_err(|e| crate::error_chain(&e))?;
    env.extend(view.env);
    env.insert("FANOUT_RUN_ID".into(), shared.run_id.to_string());
    env.insert("FANOUT_WORKTREE".into(), checkout.display().to_string());
    env.insert("FANOUT_SCRATCH".into(), scratch.display().to_string());
    env.insert("TMPDIR".into(), tmp.display().to_string());
    let sb = &shared.options.sandbox;
    if sb.run_as.is_some() {
        super::launch::dropped_root_env(&mut env, scratch);
    }
    // The fill downloads what the caches hold: no namespace of its own (no proxy yet).
    let read = super::launch::checkout_read(shared, name, None);
    let mut writable = vec![checkout.to_path_buf(), scratch.to_path_buf()];
    writable.extend(view.writable);
    // No namespace: it downloads what the caches hold.
    let run_as = crate::sandbox::user::caches_user(sb.run_as);
    let policy = super::launch::checkout_policy(shared, writable, read, run_as, false);
    Ok(super::launch::checkout_spec(
        shared,
        checkout,
        policy,
        env,
        "caches-fill",
        None,
    ))
}

/// Removes the fill step's checkout, its registration, branch and scratch folder.
fn remove(shared: &Shared, name: &str, checkout: &Path, scratch: &Path, branch: &str) {
    let _ = worktree::remove(&shared.common_dir, name, checkout);
    let _ = worktree::remove_tree(scratch);
    if let Ok(repo) = git2::Repository::open(&shared.repo_path) {
        if let Ok(mut b) = repo.find_branch(branch, git2::BranchType::Local) {
            let _ = b.delete();
        }
    }
}

/// Test-only hooks, compiled in with the `test-hooks` feature (never in a release build).
mod test_hooks {
    /// `FANOUT_TEST_NO_CACHE_LAYERS=1`: behave as if no copy-on-write layer could be mounted
    /// (a kernel without user namespaces), so tests see the private-cache fallback.
    #[cfg(feature = "test-hooks")]
    pub(super) fn no_layers() -> Option<String> {
        (std::env::var("FANOUT_TEST_NO_CACHE_LAYERS").as_deref() == Ok("1"))
            .then(|| "FANOUT_TEST_NO_CACHE_LAYERS=1".to_string())
    }

    #[cfg(not(feature = "test-hooks"))]
    pub(super) fn no_layers() -> Option<String> {
        None
    }
}
