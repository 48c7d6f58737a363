/*!
Shared setup layers made and handed out (see `crate::setup`). A layer is made once per key, in
a sandboxed checkout of the start commit of its own (with the run's `include` files and the
tasks' caches, as the run's setup uid when fanout is root); what the setup created is moved
into the layer folder, which then belongs to fanout (root when root), holds no setuid bit and
no write bit for others, and is never written again. Overlay workspaces mount it read-only
above their lower checkout; plain worktrees (and the integration gate's checkout) get a copy.
*/

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::Oid;

use super::setup_layers::Layer;
use super::shared::Shared;
use crate::git::worktree;
use crate::plan::SetupLayerPlan;
use crate::process::SpawnSpec;

/// Blocking work (git, the file system) from async code, here or under the gate's `block_on`.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The places of one layer's making.
#[derive(Clone)]
struct Making {
    key: String,
    name: String,
    branch: String,
    checkout: PathBuf,
    scratch: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

impl Making {
    fn new(shared: &Shared, key: &str) -> Making {
        // `+` is in no task id: these names never collide with a task's.
        let label = format!("+setup-{key}");
        let layout = crate::run_dir::RunDir::new(&shared.run_dir);
        let files = layout.task(&label);
        Making {
            key: key.to_string(),
            name: format!("fanout-{}{label}", shared.run_id),
            branch: format!("fanout/{}/setup-{key}", shared.run_id),
            checkout: files.worktree,
            scratch: files.scratch,
            dir: shared.workspaces.setup.layer_dir(key),
            log: layout.logs().join(format!("setup-{key}.log")),
        }
    }

    /// Removes the checkout, its registration, branch and scratch folder.
    fn clean(&self, repo_path: &Path, common_dir: &Path) {
        let _ = worktree::remove(common_dir, &self.name, &self.checkout);
        let _ = worktree::remove_tree(&self.scratch);
        if let Ok(repo) = git2::Repository::open(repo_path) {
            if let Ok(mut b) = repo.find_branch(&self.branch, git2::BranchType::Local) {
                let _ = b.delete();
            }
        }
    }
}

/// Why a layer is missing, and the setup's log when it ran.
pub(super) struct Failed {
    pub message: String,
    pub log: Option<PathBuf>,
}

/// The layer `plan` makes at `start`, made now when this run has none for its key yet.
/// `egress`: the proxy link of the setup phase of the task that asked first (`--net
/// isolated`; the setup reaches what its `network.setup` names).
pub(super) async fn layer(
    shared: &Shared,
    plan: &SetupLayerPlan,
    start: Oid,
    egress: Option<crate::sandbox::EgressLink>,
) -> Result<Arc<Layer>, Failed> {
    let key = blocking(|| {
        let repo = git2::Repository::open(&shared.repo_path)
            .map_err(|e| format!("cannot open the repository: {e}"))?;
        crate::setup::key::layer_key(&repo, start, &plan.command.argv(), plan.inputs.as_deref())
            .map_err(|e| e.to_string())
    })
    .map_err(|message| Failed { message, log: None })?;
    let slot = shared.workspaces.setup.slot(&key);
    let mut slot = slot.lock().await;
    let failed = |message: String| Failed {
        message,
        log: Some(Making::new(shared, &key).log),
    };
    if let Some(done) = slot.as_ref() {
        return done.clone().map_err(failed);
    }
    let made = make(shared, plan, start, &key, egress).await.map(Arc::new);
    if made.is_err() && *shared.cancel.borrow() {
        // Interrupted: not the setup's fault, and not kept.
        return made.map_err(failed);
    }
    *slot = Some(made.clone());
    made.map_err(failed)
}

/// Runs the setup once in its own checkout and keeps what it made.
async fn make(
    shared: &Shared,
    plan: &SetupLayerPlan,
    start: Oid,
    key: &str,
    egress: Option<crate::sandbox::EgressLink>,
) -> Result<Layer, String> {
    if *shared.cancel.borrow() {
        // Stopping: no new checkout for a setup whose command would be stopped at once.
        return Err("interrupted by the user during setup".into());
    }
    let began = Instant::now();
    let m = Making::new(shared, key);
    let argv = plan.command.argv();
    let prepared = blocking(|| prepare(shared, &m, start, &argv[0]));
    let (before, mut spec) = match prepared {
        Ok(p) => p,
        Err(e) => {
            m.clean(&shared.repo_path, &shared.common_dir);
            return Err(e);
        }
    };
    if let Some(link) = egress {
        spec.policy.egress = Some(link);
        super::egress::proxy_env(&mut spec.env);
    }
    let mut cancel = shared.cancel.clone();
    let timeout = Duration::from_secs_f64(plan.timeout_secs);
    let out = tokio::select! {
        o = crate::verify::command::run_logged(&spec, &argv, timeout, Some(&m.log)) => Some(o),
        _ = cancel.wait_for(|c| *c) => None,
    };
    let passed = match out {
        None => Err("interrupted by the user during setup".to_string()),
        Some(o) if o.passed => Ok(()),
        Some(o) => Err(format!(
            "setup `{}` failed: {}; log {}:\n{}",
            argv.join(" "),
            o.summary,
            m.log.display(),
            crate::process::tail_of_file(&m.log, 2000).trim_end()
        )),
    };
    let kept = blocking(|| {
        let r = passed.and_then(|()| keep(shared, &m, before));
        m.clean(&shared.repo_path, &shared.common_dir);
        crate::caches::remove_task_layers(&m.dir.with_extension("caches"));
        if r.is_err() {
            let _ = crate::fs_util::remove_tree(&m.dir);
        }
        r
    });
    let root = kept?;
    append_line(
        &m.log,
        &format!(
            "fanout: setup layer {key} made in {} ms",
            began.elapsed().as_millis()
        ),
    );
    Ok(Layer {
        key: key.to_string(),
        root,
        log: m.log.clone(),
    })
}

/// The setup's checkout of `start` with the `include` files, its scratch folder, what is
/// untracked there before the setup runs, and how the setup runs.
fn prepare(
    shared: &Shared,
    m: &Making,
    start: Oid,
    program: &str,
) -> Result<(std::collections::BTreeSet<String>, SpawnSpec), String> {
    m.clean(&shared.repo_path, &shared.common_dir);
    crate::fs_util::remove_tree(&m.dir)
        .map_err(|e| format!("cannot empty {}: {e}", m.dir.display()))?;
    let repo = git2::Repository::open(&shared.repo_path)
        .map_err(|e| format!("cannot open the repository: {e}"))?;
    worktree::create(&repo, &m.name, &m.branch, start, &m.checkout)
        .map_err(|e| crate::error_chain(&e))?;
    if let Some(t) = shared.tasks.first() {
        crate::include::copy(&shared.workdir, &m.checkout, &t.include)
            .map_err(|e| crate::error_chain(&e))?;
    }
    for sub in ["tmp", "home"] {
        std::fs::create_dir_all(m.scratch.join(sub))
            .map_err(|e| format!("cannot create {}: {e}", m.scratch.display()))?;
    }
    let (before, _) =
        crate::setup::harvest::untracked(&task_repo(shared, m)?).map_err(|e| e.to_string())?;
    Ok((before, spawn_spec(shared, m, program)?))
}

/// The setup checkout's repository, opened from the admin folder fanout wrote.
fn task_repo(shared: &Shared, m: &Making) -> Result<git2::Repository, String> {
    let repo = git2::Repository::open(&shared.repo_path)
        .map_err(|e| format!("cannot open the repository: {e}"))?;
    let r = worktree::open_task_repo(&repo, &m.name).map_err(|e| crate::error_chain(&e))?;
    r.set_workdir(&m.checkout, false)
        .map_err(|e| format!("cannot open the setup checkout: {e}"))?;
    Ok(r)
}

/// Moves what the setup made into the layer and closes it: fanout's (root's when root), no
/// setuid bits or write bits for others, reachable by its owner only.
fn keep(
    shared: &Shared,
    m: &Making,
    before: std::collections::BTreeSet<String>,
) -> Result<PathBuf, String> {
    let after =
        crate::setup::harvest::untracked(&task_repo(shared, m)?).map_err(|e| e.to_string())?;
    let root = crate::setup::harvest::layer_root(&m.dir);
    crate::setup::harvest::take(&m.checkout, &before, after, &root).map_err(|e| e.to_string())?;
    let closed = if crate::sandbox::user::is_root() {
        crate::sandbox::user::take_back(&m.dir)
    } else {
        crate::sandbox::user::strip_unsafe_modes(&m.dir)
    };
    closed.map_err(|e| format!("cannot close the setup layer {}: {e}", m.dir.display()))?;
    Ok(root)
}

/// The setup's sandbox: writable its checkout, its scratch folder and the tasks' caches (a
/// copy-on-write view: nothing it writes there reaches the store), as the run's setup uid.
fn spawn_spec(shared: &Shared, m: &Making, program: &str) -> Result<SpawnSpec, String> {
    let mut env = crate::taskenv::private_home(&m.scratch.join("home"))
        .map_err(|e| crate::error_chain(&e))?;
    let mut writable = vec![m.checkout.clone(), m.scratch.clone()];
    let mut mounts = None;
    if let Some(caches) = &shared.caches {
        let view = caches
            .task_view(&m.scratch, &m.dir.with_extension("caches"))
            .map_err(|e| crate::error_chain(&e))?;
        env.extend(view.env);
        writable.extend(view.writable);
        mounts = view.mounts;
    }
    env.insert("FANOUT_RUN_ID".into(), shared.run_id.to_string());
    env.insert("FANOUT_WORKTREE".into(), m.checkout.display().to_string());
    env.insert("FANOUT_SCRATCH".into(), m.scratch.display().to_string());
    env.insert("TMPDIR".into(), m.scratch.join("tmp").display().to_string());
    let sb = &shared.options.sandbox;
    if sb.run_as.is_some() {
        super::launch::dropped_root_env(&mut env, &m.scratch);
    }
    let read = super::launch::checkout_read(shared, &m.name, Some(program));
    let run_as = crate::sandbox::user::caches_user(sb.run_as);
    let mut policy = super::launch::checkout_policy(shared, writable, read, run_as, true);
    policy.caches = mounts;
    let label = format!("setup-{}", m.key);
    // What the tasks' profiles pass, for the setup that prepares their workspaces.
    let pass: Vec<String> = shared
        .tasks
        .iter()
        .flat_map(|t| t.profile.env_pass.iter().cloned())
        .collect();
    Ok(super::launch::checkout_spec(
        shared,
        &m.checkout,
        policy,
        env,
        &label,
        Some(&pass),
    ))
}

/// A task's share of its setup layer: mounted above the lower checkout (overlay), or copied
/// into its worktree. The task's `logs/<task>.setup.log` gets the setup's log (and the copy's
/// figures).
pub(super) async fn apply(
    shared: &Shared,
    plan: &SetupLayerPlan,
    start: Oid,
    paths: &mut super::paths::Paths,
    spawn: &mut SpawnSpec,
) -> Result<(), String> {
    let egress = spawn.policy.egress.as_ref().map(|l| l.for_phase("setup"));
    let layer = layer(shared, plan, start, egress).await;
    let log = match &layer {
        Ok(l) => Some(&l.log),
        Err(f) => f.log.as_ref(),
    };
    if let Some(log) = log {
        let _ = std::fs::copy(log, &paths.setup_log);
    }
    let layer = layer.map_err(|f| f.message)?;
    if let (Some(layers), Some(mount)) = (paths.overlay.as_mut(), spawn.policy.overlay.as_mut()) {
        layers.spec.setup = Some(layer.root.clone());
        mount.setup = Some(layer.root.clone());
        return Ok(());
    }
    let copied = blocking(|| copy_into(&layer, &paths.worktree))?;
    append_line(&paths.setup_log, &copied);
    Ok(())
}

/// Copies the layer into a plain checkout; says what it copied and how long it took.
pub(super) fn copy_into(layer: &Layer, checkout: &Path) -> Result<String, String> {
    let began = Instant::now();
    let c =
        crate::setup::copy::copy_tree(&layer.root, checkout, true).map_err(|e| e.to_string())?;
    Ok(format!(
        "fanout: setup layer {} copied into {}: {} files, {} bytes ({} reflinked) in {} ms",
        layer.key,
        checkout.display(),
        c.files,
        c.bytes,
        c.reflinked,
        began.elapsed().as_millis()
    ))
}

fn append_line(log: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}
