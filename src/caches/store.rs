//! The shared cache folders: `<git-dir>/fanout/caches/<name>` (as root, in a root-owned 0711
//! folder of the temp folder that `<git-dir>/fanout/caches` links to, so the agent uid can
//! pass). A folder that is not what fanout made — a link (broken or not), a file, a folder of
//! another user or one open to others — is replaced by a new, empty one, with a warning.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::types::{io, CacheError};
use crate::sandbox::RunAs;
use crate::taskfile::Cache;

/// Serialises the creation of the caches folder (runs of one `fanout mcp` may overlap).
static CREATE: Mutex<()> = Mutex::new(());

/// Where the repository's caches are named: `<git-dir>/fanout/caches`.
pub fn caches_link(common_dir: &Path) -> PathBuf {
    common_dir.join("fanout").join("caches")
}

/// Why `path` is not a folder fanout may use as a cache, `None` when it is one: a real folder
/// (not a link) owned by fanout's uid (or, when fanout is root, the caches uid of this run or
/// of an earlier one: a uid of fanout's dedicated range, which only fanout hands out and
/// only a `caches_fill` ever wrote the store as), not writable by group or others.
fn untrusted(path: &Path, run_as: Option<RunAs>) -> Option<&'static str> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return None, // missing: made below
    };
    let me = nix::unistd::geteuid().as_raw();
    if m.file_type().is_symlink() {
        Some("a link")
    } else if !m.is_dir() {
        Some("not a folder")
    } else if m.uid() != me
        && Some(m.uid()) != run_as.map(|w| w.uid)
        && !(run_as.is_some() && crate::sandbox::user::is_dedicated(m.uid()))
    {
        Some("owned by another user")
    } else if m.mode() & 0o022 != 0 {
        Some("writable by others")
    } else {
        None
    }
}

/// Removes what is at `path` (a link or file is unlinked, a folder removed whole); when a
/// folder cannot be removed (files of another user), it is moved aside under `graveyard`.
fn remove_any(path: &Path, graveyard: &Path) -> Result<(), CacheError> {
    let m = std::fs::symlink_metadata(path).map_err(io("the cache", path))?;
    if !m.is_dir() {
        return std::fs::remove_file(path).map_err(io("the cache", path));
    }
    if crate::fs_util::remove_tree(path).is_ok() {
        return Ok(());
    }
    std::fs::create_dir_all(graveyard).map_err(io("the folder for old caches", graveyard))?;
    let aside = tempfile::Builder::new()
        .prefix("old-")
        .tempdir_in(graveyard)
        .map_err(io("the folder for old caches", graveyard))?
        .keep();
    std::fs::rename(path, aside.join("cache")).map_err(io("the cache", path))
}

/// Makes `dir` (0700) unless it exists.
fn make_dir(dir: &Path) -> Result<(), CacheError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("the cache", dir)(e)),
    }
}

/// Checks `dir` and recreates it when it is not a folder fanout made; says so in `warnings`.
fn ensure_dir(
    dir: &Path,
    graveyard: &Path,
    run_as: Option<RunAs>,
    warnings: &mut Vec<String>,
) -> Result<(), CacheError> {
    if let Some(why) = untrusted(dir, run_as) {
        warnings.push(format!(
            "cache folder {} was {why}; replaced by a new, empty one",
            dir.display()
        ));
        remove_any(dir, graveyard)?;
    }
    make_dir(dir)
}

/// Removes from a cache's folder whatever is not one of its shared parts (a fill that wrote
/// `config.toml` through `registry/..`): tasks see the whole folder through their layer.
fn prune_private(dir: &Path, cache: &Cache, graveyard: &Path) -> Result<(), CacheError> {
    if cache.shared.iter().any(String::is_empty) {
        return Ok(());
    }
    let keep: Vec<&std::ffi::OsStr> = cache
        .shared
        .iter()
        .filter_map(|p| Path::new(p).iter().next())
        .collect();
    for e in std::fs::read_dir(dir)
        .map_err(io("the cache", dir))?
        .flatten()
    {
        if !keep.contains(&e.file_name().as_os_str()) {
            remove_any(&e.path(), graveyard)?;
        }
    }
    Ok(())
}

/// The real folder of the repository's caches, checked (and recreated) as described above.
pub fn open_root(
    common_dir: &Path,
    run_as: Option<RunAs>,
    warnings: &mut Vec<String>,
) -> Result<PathBuf, CacheError> {
    let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let at = caches_link(common_dir);
    let fanout_dir = common_dir.join("fanout");
    std::fs::create_dir_all(&fanout_dir).map_err(io("the fanout folder", &fanout_dir))?;
    let graveyard = fanout_dir.join("old-caches");
    if run_as.is_none() {
        ensure_dir(&at, &graveyard, None, warnings)?;
        upgrade(&at, &graveyard, warnings)?;
        return Ok(at);
    }
    // As root: a link to a root-owned folder that is not open to others.
    let root_owned = |t: &Path| {
        std::fs::symlink_metadata(t)
            .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0)
    };
    if let Ok(t) = std::fs::read_link(&at) {
        if t.is_absolute() && root_owned(&t) {
            upgrade(&t, &graveyard, warnings)?;
            return Ok(t);
        }
        warnings.push(format!(
            "cache folder {} linked to {}, which is not a folder fanout made; replaced by a new, empty one",
            at.display(),
            t.display()
        ));
    } else if std::fs::symlink_metadata(&at).is_ok() {
        // A plain folder from runs without a uid switch: the agent uid cannot pass the git
        // folder to reach it.
        warnings.push(format!(
            "cache folder {} is a plain folder; fanout running as root keeps its caches in the temp folder: replaced",
            at.display()
        ));
    }
    if std::fs::symlink_metadata(&at).is_ok() {
        remove_any(&at, &graveyard)?;
    }
    let base = std::env::temp_dir();
    let dir = tempfile::Builder::new()
        .prefix("fanout-caches-")
        .tempdir_in(&base)
        .map_err(io("the cache folder in", &base))?
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
        .map_err(io("the cache folder", &dir))?;
    std::os::unix::fs::symlink(&dir, &at).map_err(io("the link to the caches", &at))?;
    upgrade(&dir, &graveyard, warnings)?;
    Ok(dir)
}

/// Marks a store whose caches only fills wrote (cache names never start with a dot).
const LAYOUT: &str = ".layout";
const LAYOUT_VERSION: &str = "2\n";

/// A store without the mark is from a fanout whose tasks wrote the caches directly: anything in
/// it may have been planted by an agent, so it is emptied (with a warning) before the mark is
/// set.
fn upgrade(root: &Path, graveyard: &Path, warnings: &mut Vec<String>) -> Result<(), CacheError> {
    let mark = root.join(LAYOUT);
    if std::fs::symlink_metadata(&mark).is_ok_and(|m| m.is_file())
        && std::fs::read_to_string(&mark).is_ok_and(|t| t == LAYOUT_VERSION)
    {
        return Ok(());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io("the caches", root))?
        .flatten()
        .map(|e| e.path())
        .collect();
    if entries
        .iter()
        .any(|p| p.file_name() != Some(LAYOUT.as_ref()))
    {
        warnings.push(format!(
            "caches in {} were written by tasks of an earlier fanout; emptied",
            root.display()
        ));
    }
    for p in entries {
        remove_any(&p, graveyard)?;
    }
    std::fs::write(&mark, LAYOUT_VERSION).map_err(io("the caches' mark", &mark))
}

/// The shared folder of `cache` under `root` with its shared parts, checked (and recreated).
pub fn ensure_cache(
    root: &Path,
    cache: &Cache,
    run_as: Option<RunAs>,
    warnings: &mut Vec<String>,
) -> Result<PathBuf, CacheError> {
    let graveyard = root.join(".old");
    let dir = root.join(&cache.name);
    ensure_dir(&dir, &graveyard, run_as, warnings)?;
    for part in cache.shared.iter().filter(|p| !p.is_empty()) {
        ensure_dir(&dir.join(part), &graveyard, run_as, warnings)?;
    }
    prune_private(&dir, cache, &graveyard)?;
    if let Some(who) = run_as {
        // The agent uid reads the cache through its layer (and fills it).
        crate::sandbox::user::hand_over(&dir, who).map_err(io("the cache", &dir))?;
    }
    Ok(dir)
}

/// Removes the repository's caches (`fanout clean --caches`): the folder, or the link and the
/// folder in the temp folder it points to. Returns what was removed.
pub fn remove_all(common_dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let at = caches_link(common_dir);
    let mut removed = Vec::new();
    if let Ok(t) = std::fs::read_link(&at) {
        // Only a folder fanout made in the temp folder (a link may point anywhere).
        let ours = t.is_absolute()
            && t.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("fanout-caches-"))
            && std::fs::symlink_metadata(&t)
                .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw());
        if ours {
            crate::fs_util::remove_tree(&t).map_err(io("the caches", &t))?;
            removed.push(t);
        }
    }
    for p in [at, common_dir.join("fanout").join("old-caches")] {
        if std::fs::symlink_metadata(&p).is_ok() {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    crate::fs_util::remove_tree(&p).map_err(io("the caches", &p))?
                }
                _ => std::fs::remove_file(&p).map_err(io("the caches", &p))?,
            }
            removed.push(p);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(name: &str, shared: &[&str]) -> Cache {
        Cache {
            name: name.into(),
            env: vec![("VAR".into(), String::new())],
            shared: shared.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn what_fanout_did_not_make_is_replaced_with_a_warning() {
        let d = tempfile::tempdir().expect("tmp");
        let common = d.path().join("git");
        let mut warnings = Vec::new();
        let root = open_root(&common, None, &mut warnings).expect("root");
        assert!(warnings.is_empty(), "{warnings:?}");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("keep"), "x").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("linked")).expect("link");
        std::os::unix::fs::symlink(d.path().join("nowhere"), root.join("dangling")).expect("link");
        std::fs::write(root.join("file"), "x").expect("write");
        std::fs::create_dir(root.join("open")).expect("mkdir");
        std::fs::set_permissions(root.join("open"), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        for name in ["linked", "dangling", "file", "open"] {
            let dir = ensure_cache(&root, &cache(name, &["part"]), None, &mut warnings)
                .expect("recreated");
            let m = std::fs::symlink_metadata(&dir).expect("meta");
            assert!(m.is_dir() && m.mode() & 0o777 == 0o700, "{name}");
            assert!(dir.join("part").is_dir(), "{name}");
        }
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(outside.join("keep").exists());
        // Only the shared parts stay in a cache's folder.
        std::fs::write(root.join("linked/config.toml"), "x").expect("write");
        // A part replaced by a link is recreated too; a sound cache is left alone, quietly.
        std::fs::remove_dir(root.join("open/part")).expect("rmdir");
        std::os::unix::fs::symlink(&outside, root.join("open/part")).expect("link");
        std::fs::write(root.join("linked/part/kept"), "x").expect("write");
        let mut again = Vec::new();
        ensure_cache(&root, &cache("open", &["part"]), None, &mut again).expect("open");
        ensure_cache(&root, &cache("linked", &["part"]), None, &mut again).expect("linked");
        assert_eq!(again.len(), 1, "{again:?}");
        assert!(root.join("open/part").is_dir() && root.join("linked/part/kept").exists());
        assert!(!root.join("linked/config.toml").exists());
        // The caches folder itself replaced by a link: a new one, with a warning.
        std::fs::remove_dir_all(&root).expect("rm");
        std::os::unix::fs::symlink(&outside, &root).expect("link");
        let mut w = Vec::new();
        let root = open_root(&common, None, &mut w).expect("root");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(std::fs::symlink_metadata(&root).expect("meta").is_dir());
        // A store of an earlier fanout (no mark), which its tasks could write: emptied.
        std::fs::create_dir_all(root.join("cargo/registry")).expect("mkdir");
        std::fs::remove_file(root.join(LAYOUT)).expect("unmark");
        let mut w = Vec::new();
        assert_eq!(open_root(&common, None, &mut w).expect("root"), root);
        assert!(w.len() == 1 && w[0].contains("earlier fanout"), "{w:?}");
        assert!(!root.join("cargo").exists() && root.join(LAYOUT).is_file());
        assert_eq!(remove_all(&common).expect("removed"), vec![root.clone()]);
        assert!(!root.exists() && outside.join("keep").exists());
    }
}
