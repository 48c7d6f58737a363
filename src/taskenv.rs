/*!
What a task's processes (agent, verify command) get besides their worktree:

- a **short TMPDIR**: `<temp>/fo-XXXXXX/<n>` (n: the task's index). The scratch folder lies
  under `<repo>/.git/fanout/runs/<run>/scratch/<id>/`, easily past the 108-byte limit of an
  AF_UNIX socket path, so tools that put sockets in TMPDIR (test servers, ssh-agent, language
  servers) would fail there. The per-run folder has an unpredictable name, is owned by fanout
  and closed to others (0700, or 0711 as root: the agent's uid must pass), and the run folder
  links to it (`<run>/tmp`) so `fanout clean` finds it;
- a **private HOME** in the scratch folder with `XDG_CONFIG_HOME`, `XDG_CACHE_HOME`,
  `XDG_DATA_HOME`, `XDG_STATE_HOME` inside it, the user's git configuration copied in, and
  `RUSTUP_HOME`/`CARGO_HOME` pinned to the user's toolchains (they default to folders of HOME);
- its view of the **named caches** (`caches` in the task file, see `crate::caches`): the
  tool's own variable (`PIP_CACHE_DIR`, …) points at a folder of the scratch folder where the
  shared caches appear through the task's own copy-on-write layer.
*/

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::sandbox::RunAs;

#[derive(Debug, thiserror::Error)]
pub enum TaskEnvError {
    #[error("cannot prepare {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Caches(#[from] crate::caches::CacheError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TaskEnvError {
    let path = path.to_path_buf();
    move |source| TaskEnvError::Io { what, path, source }
}

/// The link in the run folder to the run's short temp folder.
const RUN_TMP_LINK: &str = "tmp";

/// Serialises the creation of the per-run folder (tasks start concurrently).
static CREATE: Mutex<()> = Mutex::new(());

/// The base of short temp folders: `/tmp` when it exists (fanout's own TMPDIR may be long).
fn temp_base() -> PathBuf {
    let tmp = Path::new("/tmp");
    if tmp.is_dir() {
        tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A folder fanout made: a real folder (not a link), owned by this process's uid, not
/// writable by others.
fn trusted(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0
    })
}

/// The run's short temp folder, created on first use (and reused by `fanout resume`).
fn run_tmp(run_dir: &Path, run_as: Option<RunAs>) -> Result<PathBuf, TaskEnvError> {
    let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let link = run_dir.join(RUN_TMP_LINK);
    if let Ok(target) = std::fs::read_link(&link) {
        if trusted(&target) {
            return Ok(target);
        }
        let _ = std::fs::remove_file(&link);
    }
    // Unpredictable: nobody can have prepared it in the shared temp folder.
    let base = temp_base();
    let dir = tempfile::Builder::new()
        .prefix("fo-")
        .rand_bytes(6)
        .tempdir_in(&base)
        .map_err(io("the short temp folder in", &base))?
        .keep();
    // As root the agent's uid must pass through (not list) it to reach its own folder.
    let mode = if run_as.is_some() { 0o711 } else { 0o700 };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
        .map_err(io("the short temp folder", &dir))?;
    std::os::unix::fs::symlink(&dir, &link).map_err(io("the link to the temp folder", &link))?;
    Ok(dir)
}

/// Creates task `index`'s short TMPDIR, empty, 0700 (handed to the agent's uid with the other
/// writable folders before each start).
pub fn create_task_tmp(
    run_dir: &Path,
    index: usize,
    run_as: Option<RunAs>,
) -> Result<PathBuf, TaskEnvError> {
    let root = run_tmp(run_dir, run_as)?;
    let dir = root.join(index.to_string());
    // Left by an interrupted attempt of the same run: the folder is ours, start afresh.
    crate::git::worktree::remove_tree(&dir).map_err(io("the task's temp folder", &dir))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io("the task's temp folder", &dir))?;
    Ok(dir)
}

/// Removes task `index`'s TMPDIR (when its workspace goes).
pub fn remove_task_tmp(run_dir: &Path, index: usize) {
    if let Ok(root) = std::fs::read_link(run_dir.join(RUN_TMP_LINK)) {
        if trusted(&root) {
            let _ = crate::git::worktree::remove_tree(&root.join(index.to_string()));
        }
    }
}

/// Removes the run's short temp folder and the link to it: when empty, or always with `force`
/// (`fanout clean`).
pub fn remove_run_tmp(run_dir: &Path, force: bool) {
    let link = run_dir.join(RUN_TMP_LINK);
    let Ok(root) = std::fs::read_link(&link) else {
        return;
    };
    if !trusted(&root) {
        let _ = std::fs::remove_file(&link);
        return;
    }
    let removed = if force {
        crate::git::worktree::remove_tree(&root).is_ok()
    } else {
        std::fs::remove_dir(&root).is_ok() || !root.exists()
    };
    if removed {
        let _ = std::fs::remove_file(&link);
    }
}

/// The XDG folders of a private home, relative to it.
const XDG: [(&str, &str); 4] = [
    ("XDG_CONFIG_HOME", ".config"),
    ("XDG_CACHE_HOME", ".cache"),
    ("XDG_DATA_HOME", ".local/share"),
    ("XDG_STATE_HOME", ".local/state"),
];

/// Largest user git configuration copied into a private home.
const MAX_GITCONFIG: u64 = 1024 * 1024;

/// Creates the private home `home` (XDG folders, the user's git configuration) and returns
/// the variables pointing at it.
pub fn private_home(home: &Path) -> Result<BTreeMap<String, String>, TaskEnvError> {
    let mut env = BTreeMap::new();
    std::fs::create_dir_all(home).map_err(io("the private home", home))?;
    env.insert("HOME".into(), home.display().to_string());
    for (var, sub) in XDG {
        let p = home.join(sub);
        std::fs::create_dir_all(&p).map_err(io("the private home", &p))?;
        env.insert(var.into(), p.display().to_string());
    }
    let user_home = std::env::var_os("HOME").map(PathBuf::from);
    // The user's identity and aliases, read-only by copy (their file may be out of the
    // agent's reach, e.g. root's home when the agent runs as another uid).
    if std::env::var_os("GIT_CONFIG_GLOBAL").is_none() {
        let candidates = [
            user_home.as_ref().map(|h| h.join(".gitconfig")),
            std::env::var_os("XDG_CONFIG_HOME")
                .map(|x| PathBuf::from(x).join("git/config"))
                .or_else(|| user_home.as_ref().map(|h| h.join(".config/git/config"))),
        ];
        if let Some(src) = candidates
            .into_iter()
            .flatten()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MAX_GITCONFIG))
        {
            let dst = home.join(".gitconfig");
            std::fs::copy(&src, &dst).map_err(io("the copy of the git configuration", &dst))?;
        }
    }
    // rustup and cargo find their toolchains through HOME unless told.
    if let Some(h) = &user_home {
        for (var, sub) in [("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")] {
            if std::env::var_os(var).is_none() && h.join(sub).is_dir() {
                env.insert(var.into(), h.join(sub).display().to_string());
            }
        }
    }
    Ok(env)
}

// The presets belong to the task file's `caches` field (`taskfile::caches`).
pub use crate::taskfile::caches::{preset, PRESETS};

/// What one task's processes get: folders writable in the sandbox, environment variables,
/// and the cache layers the sandbox mounts.
#[derive(Clone, Debug, Default)]
pub struct TaskEnv {
    pub writable: Vec<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub caches: Option<crate::sandbox::CacheMounts>,
    /// Said as the task's warnings (e.g. why it got private caches).
    pub warnings: Vec<String>,
}

/// Where a task's cache layers are: next to its scratch folder (`<scratch>/../.cache-layers/<id>`),
/// out of the task's reach (task ids never start with a dot).
pub fn cache_layers_dir(scratch: &Path) -> PathBuf {
    let id = scratch.file_name().unwrap_or_default();
    scratch
        .parent()
        .unwrap_or(scratch)
        .join(".cache-layers")
        .join(id)
}

/// Prepares task `index`'s short TMPDIR, its private home `<scratch>/home` and its view of the
/// run's caches.
pub fn prepare_task(
    run_dir: &Path,
    index: usize,
    scratch: &Path,
    caches: Option<&crate::caches::RunCaches>,
    run_as: Option<RunAs>,
) -> Result<TaskEnv, TaskEnvError> {
    let tmp = create_task_tmp(run_dir, index, run_as)?;
    let mut env = private_home(&scratch.join("home"))?;
    env.insert("TMPDIR".into(), tmp.display().to_string());
    let mut out = TaskEnv {
        writable: vec![tmp],
        ..TaskEnv::default()
    };
    if let Some(c) = caches {
        let view = c.task_view(scratch, &cache_layers_dir(scratch))?;
        env.extend(view.env);
        out.writable.extend(view.writable);
        out.caches = view.mounts;
        out.warnings.extend(view.warning);
    }
    out.env = env;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_tmp_is_short_private_and_removed() {
        let d = tempfile::tempdir().expect("tmp");
        let run = d.path().join("a".repeat(120)).join("run");
        std::fs::create_dir_all(&run).expect("mkdir");
        let t = create_task_tmp(&run, 9999, None).expect("tmp");
        assert!(t.as_os_str().len() <= 24, "{}", t.display());
        let m = std::fs::metadata(&t).expect("meta");
        assert_eq!(m.mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::metadata(t.parent().expect("root"))
                .expect("root")
                .mode()
                & 0o777,
            0o700
        );
        // Reused by the run's other tasks.
        let u = create_task_tmp(&run, 1, None).expect("tmp");
        assert_eq!(t.parent(), u.parent());
        remove_task_tmp(&run, 9999);
        assert!(!t.exists());
        remove_run_tmp(&run, true);
        assert!(!u.exists());
        assert!(std::fs::symlink_metadata(run.join(RUN_TMP_LINK)).is_err());
    }

    #[test]
    fn presets_name_the_tools_variables() {
        assert_eq!(preset("pip"), Some(&[("PIP_CACHE_DIR", "")][..]));
        assert!(preset("go").is_some_and(|p| p.len() == 2));
        assert!(PRESETS.iter().all(|p| preset(p).is_some()));
        assert!(preset("nope").is_none());
    }

    #[test]
    fn presets_share_only_what_is_a_cache() {
        use crate::taskfile::caches::shared_parts;
        assert!(PRESETS.iter().all(|p| shared_parts(p).is_some()));
        // CARGO_HOME's config.toml, bin/, credentials and env stay private.
        assert_eq!(shared_parts("cargo"), Some(&["registry", "git"][..]));
        // The module cache is shared, GOCACHE is not.
        assert_eq!(shared_parts("go"), Some(&["mod"][..]));
        assert_eq!(shared_parts("npm"), Some(&["_cacache"][..]));
    }
}
