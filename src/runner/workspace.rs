/*!
Task workspaces: which kind a run uses (`--workspace auto|overlay|worktree`), and the overlay
kind's pieces — one read-only lower checkout per distinct start commit, shared by the run's
tasks, and per task an upper and a work folder plus its git admin folder. The mount itself is
made by the sandbox supervisor's child (see `sandbox::overlay`); fanout only prepares folders,
collects from the upper folder, and removes everything. See docs/workspaces.md.
*/

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{Oid, Repository};

use super::pool::Pool;
use super::setup_layers::SetupLayers;
use crate::git::memory_lower;
use crate::git::{upper, worktree};
use crate::plan::{RunOptions, WorkspaceChoice};
use crate::report::WorkspaceSummary;
use crate::sandbox::OverlaySpec;

/// The run's workspaces.
pub(crate) struct Workspaces {
    pub summary: WorkspaceSummary,
    overlay: bool,
    /// Lower checkouts by start commit, each created once (the first task to need it makes it
    /// while later ones wait on its slot).
    lowers: Mutex<HashMap<Oid, Arc<Mutex<Option<Lower>>>>>,
    /// Worktree mode: finished tasks' worktrees, reused by the next ones.
    pub pool: Pool,
    /// The shared setup layers (`setup`), by key.
    pub setup: SetupLayers,
    /// The run the workspaces belong to.
    run: RunPlace,
}

/// Where a run's workspaces are registered and kept.
#[derive(Clone, Debug)]
pub(crate) struct RunPlace {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub common_dir: PathBuf,
}

#[derive(Clone)]
struct Lower {
    name: String,
    path: PathBuf,
    index: PathBuf,
    /// The `.lower/<commit>` link when the checkout is in memory (see `memory_lower`).
    link: Option<PathBuf>,
}

/// Where a task's overlay layers are (besides the shared lower).
#[derive(Clone, Debug)]
pub(crate) struct Layers {
    pub spec: OverlaySpec,
    pub rules: PathBuf,
    pub lower_index: PathBuf,
}

/// Whether an overlay mounts here, tried in a throw-away folder of the run.
fn probe_overlay(options: &RunOptions, run_dir: &Path) -> Result<(), String> {
    let dir = worktrees_dir(run_dir).join(".probe");
    let _ = worktree::remove_tree(&dir);
    let probed = std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
        .and_then(|()| {
            crate::sandbox::overlay::probe(
                &options.self_exe,
                &dir,
                options.sandbox.run_as,
                options.sandbox.min_abi,
            )
        });
    let _ = worktree::remove_tree(&dir);
    probed
}

pub(super) fn worktrees_dir(run_dir: &Path) -> PathBuf {
    crate::run_dir::RunDir::new(run_dir).worktrees()
}

/// Where finished worktrees wait for the next task (see `pool`).
fn pool_dir(run_dir: &Path) -> PathBuf {
    worktrees_dir(run_dir).join(".pool")
}

/// Worktrees are reused only when the reset can run confined (the sandbox is on) and none is
/// kept for inspection (the pool also needs git on `PATH`). `FANOUT_WORKTREE_POOL=0` turns reuse off.
fn pool_allowed(options: &RunOptions) -> bool {
    options.sandbox.enabled
        && !options.keep_worktrees
        && std::env::var("FANOUT_WORKTREE_POOL").map_or(true, |v| v != "0")
}

/// Task ids never start with a dot, so these never collide with a task's folder.
pub(super) fn layers_dir(run_dir: &Path, id: &str) -> PathBuf {
    worktrees_dir(run_dir).join(".layers").join(id)
}

impl Workspaces {
    /// Picks the kind for this run. `auto` tries a throwaway overlay once (in the run's
    /// workspace folder, which must exist). `Err`: overlay was asked for and cannot work.
    pub fn decide(options: &RunOptions, run: RunPlace) -> Result<Workspaces, String> {
        let run_dir = run.run_dir.as_path();
        let make = |overlay: bool, reason: String| {
            let pool = Pool::new(
                pool_dir(run_dir),
                !overlay && pool_allowed(options),
                options.jobs,
            );
            let reason = if pool.enabled() {
                format!(
                    "{reason}; finished worktrees are reused, reset inside the next task's sandbox"
                )
            } else {
                reason
            };
            Workspaces {
                summary: WorkspaceSummary {
                    mode: if overlay { "overlay" } else { "worktree" }.into(),
                    reason,
                    reused: 0,
                },
                overlay,
                lowers: Mutex::new(HashMap::new()),
                pool,
                setup: SetupLayers::new(worktrees_dir(run_dir).join(".setup")),
                run: run.clone(),
            }
        };
        let choice = options.workspace;
        // Where an explicit choice came from, for the reason shown.
        let asked = |what: &str| match &options.workspace_source {
            Some(source) => format!("{source} {what}"),
            None => format!("defaults.workspace {what}"),
        };
        if choice == WorkspaceChoice::Worktree {
            return Ok(make(false, asked("worktree")));
        }
        if options.keep_worktrees && choice == WorkspaceChoice::Auto {
            // Kept overlay workspaces are upper folders, not checkouts one can look into.
            return Ok(make(
                false,
                "auto: --keep-worktrees keeps full git worktrees".into(),
            ));
        }
        if !options.sandbox.enabled {
            // Unconfined agents could write the lower checkout every task shares.
            let why = "the sandbox is off, and unconfined agents could write the lower checkout other tasks share";
            return match choice {
                WorkspaceChoice::Overlay => Err(format!("{}: {why}", asked("overlay"))),
                _ => Ok(make(false, why.into())),
            };
        }
        let probed = probe_overlay(options, run_dir);
        let how = if crate::sandbox::user::is_root() {
            "a mount namespace (fanout runs as root)"
        } else {
            "an unprivileged user and mount namespace"
        };
        match (probed, choice) {
            (Ok(()), WorkspaceChoice::Overlay) => Ok(make(
                true,
                format!("{}; mounted in {how}", asked("overlay")),
            )),
            (Ok(()), _) => Ok(make(true, format!("auto: an overlay mounts here in {how}"))),
            (Err(e), WorkspaceChoice::Overlay) => {
                Err(format!("{} does not work here: {e}", asked("overlay")))
            }
            (Err(e), _) => Ok(make(false, format!("auto: overlay unavailable ({e})"))),
        }
    }

    pub fn overlay(&self) -> bool {
        self.overlay
    }

    /// The lower checkout of `start`, created on first use.
    fn lower(&self, repo: &Repository, start: Oid) -> Result<Lower, String> {
        let shared = &self.run;
        let slot = {
            let mut map = self.lowers.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(start).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = slot.as_ref() {
            return Ok(l.clone());
        }
        let name = format!("fanout-{}-lower-{start}", shared.run_id);
        let at = worktrees_dir(&shared.run_dir)
            .join(".lower")
            .join(start.to_string());
        // Left by an earlier attempt of this run (`fanout resume`): checked out again.
        let old = std::fs::read_link(&at).ok();
        worktree::remove(&shared.common_dir, &name, old.as_deref().unwrap_or(&at))
            .map_err(|e| crate::error_chain(&e))?;
        if let Some(old) = &old {
            memory_lower::remove_memory_parent(old);
            let _ = std::fs::remove_file(&at);
        }
        let checkout = |path: &Path| {
            upper::create_lower(repo, &name, start, path).map_err(|e| {
                format!(
                    "cannot check out the lower layer: {}",
                    crate::error_chain(&e)
                )
            })
        };
        let in_memory =
            memory_lower::memory_folder(repo, shared.run_id.as_str(), start).and_then(|mem| {
                let linked = at
                    .parent()
                    .is_some_and(|p| std::fs::create_dir_all(p).is_ok())
                    && std::os::unix::fs::symlink(&mem, &at).is_ok();
                match linked.then(|| checkout(&mem)) {
                    Some(Ok(index)) => Some((mem, index)),
                    // Out of room after all (or no link): the disk it is.
                    _ => {
                        let _ = worktree::remove(&shared.common_dir, &name, &mem);
                        memory_lower::remove_memory_parent(&mem);
                        let _ = std::fs::remove_file(&at);
                        None
                    }
                }
            });
        let lower_parent = at.parent().map(Path::to_path_buf);
        let (path, index, link) = match in_memory {
            Some((mem, index)) => (mem, index, Some(at)),
            None => {
                let index = checkout(&at)?;
                (at, index, None)
            }
        };
        // Every task of the run reads it, no other account may: its owner's alone (fanout's).
        // As root, each task sees it as its own through an idmapped mount (sandbox::idmap).
        for p in [Some(path.as_path()), lower_parent.as_deref()]
            .into_iter()
            .flatten()
        {
            owner_only(p)?;
        }
        let lower = Lower {
            name,
            path,
            index,
            link,
        };
        *slot = Some(lower.clone());
        Ok(lower)
    }

    /// Creates a task's overlay workspace (`merged` is where the view will be mounted, the
    /// path agents see); returns its layers.
    pub fn create_overlay(
        &self,
        repo: &Repository,
        (branch, start): (&str, Oid),
        merged: &Path,
        id: &str,
        owner: Option<crate::sandbox::RunAs>,
    ) -> Result<Layers, String> {
        let shared = &self.run;
        let lower = self.lower(repo, start)?;
        let dir = layers_dir(&shared.run_dir, id);
        // Layers left by an interrupted attempt (`fanout resume`) must not leak into this one.
        worktree::remove_tree(&dir).map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
        let (up, work, rules) = (dir.join("upper"), dir.join("work"), dir.join("rules"));
        for p in [&up, &work, merged] {
            std::fs::create_dir_all(p)
                .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        }
        // Only the kernel (with the mounting process's rights) and fanout use the layers.
        for p in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
            owner_only(p)?;
        }
        let wt_name = worktree::worktree_name(shared.run_id.as_str(), id);
        upper::create_overlay_task(repo, &wt_name, branch, start, merged, &up, &lower.index)
            .map_err(|e| crate::error_chain(&e))?;
        if let Some(who) = owner {
            // The view's root is the upper folder's root.
            crate::sandbox::user::hand_over(&up, who)
                .map_err(|e| format!("cannot give {} to the agent uid: {e}", up.display()))?;
        }
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        Ok(Layers {
            spec: OverlaySpec {
                setup: None,
                lower: abs(&lower.path),
                upper: abs(&up),
                work: abs(&work),
                merged: abs(merged),
            },
            rules,
            lower_index: lower.index,
        })
    }

    /// Removes every lower checkout and its registration (end of run), unless a kept
    /// workspace may still need it.
    pub fn remove_lowers(&self, events: &super::events::Events, keep: bool) {
        let shared = &self.run;
        let lowers: Vec<Lower> = {
            let map = self.lowers.lock().unwrap_or_else(|e| e.into_inner());
            map.values()
                .filter_map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
                // A lower in memory never stays: `fanout collect` checks one out again.
                .filter(|l| !keep || l.link.is_some())
                .collect()
        };
        for l in lowers {
            if let Err(e) = worktree::remove(&shared.common_dir, &l.name, &l.path) {
                events.warn(None, &crate::error_chain(&e));
            }
            if let Some(link) = &l.link {
                memory_lower::remove_memory_parent(&l.path);
                let _ = std::fs::remove_file(link);
            }
        }
        if !keep {
            self.setup.remove_all();
        }
        let wt = worktrees_dir(&shared.run_dir);
        let _ = std::fs::remove_dir(wt.join(".lower"));
        let _ = std::fs::remove_dir(wt.join(".layers"));
    }
}

/// Makes `dir` reachable by its owner (fanout) only.
fn owner_only(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot close {} to others: {e}", dir.display()))
}

/// Removes a task's overlay layers (nothing when it had none).
pub(crate) fn remove_layers(run_dir: &Path, id: &str) -> Result<(), String> {
    let dir = layers_dir(run_dir, id);
    worktree::remove_tree(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

/// Collects an overlay task from its upper folder and commits it on `branch`.
pub(crate) fn collect_overlay(
    repo_path: &Path,
    wt_name: &str,
    layers: &Layers,
    start: Oid,
    branch: &str,
    // The commit's message and author (`None`: fanout).
    (message, author): (&str, Option<(&str, &str)>),
    opts: &crate::git::collect::CollectOptions,
) -> Result<crate::git::collect::Collected, String> {
    let repo =
        Repository::open(repo_path).map_err(|e| format!("cannot open the repository: {e}"))?;
    let task_repo = worktree::open_task_repo(&repo, wt_name).map_err(|e| crate::error_chain(&e))?;
    let tree = overlay_tree(&task_repo, layers, start, opts, false)?;
    crate::git::collect::commit_tree(&task_repo, &repo, start, branch, message, tree, author)
        .map_err(|e| format!("cannot collect the change: {}", crate::error_chain(&e)))
}

/// The merged view's tree; with `write_index` the task's index is left at it too.
fn overlay_tree(
    task_repo: &Repository,
    layers: &Layers,
    start: Oid,
    opts: &crate::git::collect::CollectOptions,
    write_index: bool,
) -> Result<Oid, String> {
    let view = upper::UpperLayers {
        lower: &layers.spec.lower,
        upper: &layers.spec.upper,
        xattr_prefix: crate::sandbox::overlay::xattr_prefix(crate::sandbox::user::is_root()),
        rules_dir: &layers.rules,
        lower_index: &layers.lower_index,
    };
    upper::upper_tree(task_repo, &view, start, opts, write_index)
        .map_err(|e| format!("cannot collect the change: {}", crate::error_chain(&e)))
}

/// Before an overlay task's next turn: its index at the view's tree, so `git status` and
/// `git diff` inside show only what changed since the last commit. (A collection leaves the
/// index alone: O(files) work that a task with one turn never needs.)
pub(crate) fn refresh_overlay_index(
    repo_path: &Path,
    wt_name: &str,
    layers: &Layers,
    start: Oid,
    opts: &crate::git::collect::CollectOptions,
) -> Result<(), String> {
    let repo =
        Repository::open(repo_path).map_err(|e| format!("cannot open the repository: {e}"))?;
    let task_repo = worktree::open_task_repo(&repo, wt_name).map_err(|e| crate::error_chain(&e))?;
    overlay_tree(&task_repo, layers, start, opts, true).map(|_| ())
}

/// `fanout collect` of an overlay task kept because its collection failed: `None` when the
/// task has no overlay layers (a worktree task), else the collection from its upper folder
/// over the lower checkout of `parent` (kept with it).
#[allow(clippy::too_many_arguments)]
pub fn collect_kept(
    repo_path: &Path,
    run_dir: &Path,
    run_id: &str,
    task: &str,
    parent: Oid,
    branch: &str,
    message: &str,
    opts: &crate::git::collect::CollectOptions,
) -> Option<Result<crate::git::collect::Collected, String>> {
    let dir = layers_dir(run_dir, task);
    if !dir.join("upper").is_dir() {
        return None;
    }
    let repo = match Repository::open(repo_path) {
        Ok(r) => r,
        Err(e) => return Some(Err(format!("cannot open the repository: {e}"))),
    };
    let at = worktrees_dir(run_dir)
        .join(".lower")
        .join(parent.to_string());
    let name = format!("fanout-{run_id}-lower-{parent}");
    let lower_index = worktree::admin_dir(repo.commondir(), &name).join("index");
    // Kept on disk by the run, or gone (a lower in memory is removed at the end of every run;
    // a reboot clears memory): then checked out again, on disk, just for this collection.
    let made = !(at.is_dir() && !at.is_symlink() && lower_index.is_file());
    if made {
        let _ = std::fs::remove_file(&at);
        if let Err(e) = worktree::remove(repo.commondir(), &name, &at)
            .map_err(|e| crate::error_chain(&e))
            .and_then(|()| {
                upper::create_lower(&repo, &name, parent, &at)
                    .map(|_| ())
                    .map_err(|e| crate::error_chain(&e))
            })
        {
            return Some(Err(format!(
                "cannot check out the lower layer {parent} again for the task's upper folder {}: {e}",
                dir.join("upper").display()
            )));
        }
    }
    let layers = Layers {
        spec: OverlaySpec {
            setup: None,
            lower: at.clone(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: worktrees_dir(run_dir).join(task),
        },
        rules: dir.join("rules"),
        lower_index,
    };
    let name_task = worktree::worktree_name(run_id, task);
    let collected = collect_overlay(
        repo_path,
        &name_task,
        &layers,
        parent,
        branch,
        (message, None),
        opts,
    );
    if made {
        let _ = worktree::remove(repo.commondir(), &name, &at);
    }
    Some(collected)
}
