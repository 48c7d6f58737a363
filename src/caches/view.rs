//! A task's view of the caches: the store through one copy-on-write layer, mounted beside the
//! layer (`<layers>/view/<name>`), or private, empty folders in its scratch folder
//! (`<scratch>/caches/<name>`) where no layer can be mounted; the fill step's view.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::types::{io, CacheError, FillCaches, RunCaches, TaskCaches};
use crate::sandbox::{CacheMounts, OverlaySpec};
use crate::taskfile::Cache;

/// The views' folder in a task's (or the fill step's) scratch folder.
const VIEWS: &str = "caches";

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn fresh_dir(dir: &Path) -> Result<(), CacheError> {
    crate::fs_util::remove_tree(dir).map_err(io("the cache view", dir))?;
    std::fs::create_dir_all(dir).map_err(io("the cache view", dir))
}

/// The folder `sub` of `base` ("" = `base`).
fn under(base: &Path, sub: &str) -> PathBuf {
    if sub.is_empty() {
        base.to_path_buf()
    } else {
        base.join(sub)
    }
}

/// Whether the variable's folder `sub` lies in a shared part of `cache`.
fn in_shared_part(cache: &Cache, sub: &str) -> bool {
    cache
        .shared
        .iter()
        .any(|p| p.is_empty() || sub == p || Path::new(sub).starts_with(Path::new(p)))
}

/// The variables of `cache`, pointing into `view` (created).
fn point_vars(
    cache: &Cache,
    view: &Path,
    env: &mut BTreeMap<String, String>,
) -> Result<(), CacheError> {
    for (var, sub) in &cache.env {
        let p = under(view, sub);
        std::fs::create_dir_all(&p).map_err(io("the cache view", &p))?;
        env.insert(var.clone(), p.display().to_string());
    }
    Ok(())
}

pub(super) fn task(
    run: &RunCaches,
    scratch: &Path,
    layers: &Path,
) -> Result<TaskCaches, CacheError> {
    // Left by an earlier attempt of the task: it starts afresh.
    let private_views = scratch.join(VIEWS);
    crate::fs_util::remove_tree(&private_views).map_err(io("the cache view", &private_views))?;
    fresh_dir(layers)?;
    let mut out = TaskCaches::default();
    if !run.layered() {
        // Private, empty caches (the run said why, once).
        private(run, &private_views, &mut out.env)?;
        let _ = crate::fs_util::remove_tree(layers);
        return Ok(out);
    }
    // One layer over the whole store: a mount costs a process start tens of milliseconds,
    // one per cache would add up. The store holds only the caches' shared parts (see
    // `store::ensure_cache`), so everything else of a view starts empty. The mount point lies
    // beside the layer, out of the task's reach: one in its scratch folder could be swapped
    // for a link, and the next process would mount the view over wherever it points.
    let (upper, work, views) = (
        layers.join("upper"),
        layers.join("work"),
        layers.join("view"),
    );
    for p in [&upper, &work, &views] {
        std::fs::create_dir_all(p).map_err(io("the cache layer", p))?;
    }
    let spec = OverlaySpec {
        setup: None,
        lower: abs(&run.root),
        upper: abs(&upper),
        work: abs(&work),
        merged: abs(&views),
    };
    if let Err(bad) =
        crate::sandbox::overlay::mount_options(&spec, nix::unistd::geteuid().is_root())
    {
        let _ = crate::fs_util::remove_tree(layers);
        out.warning = Some(format!(
            "caches: {bad}; this task gets private, empty caches"
        ));
        private(run, &private_views, &mut out.env)?;
        return Ok(out);
    }
    out.writable.push(spec.merged.clone());
    for c in &run.caches {
        // A variable's folder the store lacks (go's private GOCACHE) starts in the upper folder.
        point_vars(c, &upper.join(&c.name), &mut BTreeMap::new())?;
        for (var, sub) in &c.env {
            out.env.insert(
                var.clone(),
                under(&views.join(&c.name), sub).display().to_string(),
            );
        }
    }
    if let Some(who) = run.run_as {
        // The view's root is the upper folder's root.
        crate::sandbox::user::hand_over(&upper, who).map_err(io("the cache layer", &upper))?;
    }
    out.mounts = Some(CacheMounts {
        layers: vec![spec],
        read_only: vec![abs(&run.root)],
    });
    Ok(out)
}

/// Private, empty caches in `views` (no layer can be mounted).
fn private(
    run: &RunCaches,
    views: &Path,
    env: &mut BTreeMap<String, String>,
) -> Result<(), CacheError> {
    for c in &run.caches {
        let view = views.join(&c.name);
        for part in &c.shared {
            let p = under(&view, part);
            std::fs::create_dir_all(&p).map_err(io("the cache view", &p))?;
        }
        point_vars(c, &view, env)?;
    }
    Ok(())
}

pub(super) fn fill(run: &RunCaches, scratch: &Path) -> Result<FillCaches, CacheError> {
    let views = scratch.join(VIEWS);
    fresh_dir(&views)?;
    let mut out = FillCaches::default();
    for c in &run.caches {
        let shared = run.shared_dir(&c.name);
        out.writable.push(shared.clone());
        if c.shared.iter().any(String::is_empty) {
            // The whole folder is the cache: the variables point into it.
            point_vars(c, &shared, &mut out.env)?;
            continue;
        }
        // A private view whose shared parts are links to the store.
        let view = views.join(&c.name);
        std::fs::create_dir_all(&view).map_err(io("the cache view", &view))?;
        for part in &c.shared {
            let link = view.join(part);
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(io("the cache view", parent))?;
            }
            std::os::unix::fs::symlink(shared.join(part), &link)
                .map_err(io("the cache view", &link))?;
        }
        for (var, sub) in &c.env {
            let p = if in_shared_part(c, sub) {
                under(&shared, sub)
            } else {
                under(&view, sub)
            };
            std::fs::create_dir_all(&p).map_err(io("the cache view", &p))?;
            out.env.insert(var.clone(), p.display().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> Cache {
        let vars = crate::taskfile::caches::preset(name).expect("preset");
        Cache {
            name: name.into(),
            env: vars
                .iter()
                .map(|(v, s)| (v.to_string(), s.to_string()))
                .collect(),
            shared: crate::taskfile::caches::shared_parts(name)
                .expect("parts")
                .iter()
                .map(|p| p.to_string())
                .collect(),
        }
    }

    fn run_caches(d: &Path, layered: bool) -> RunCaches {
        let (run, _) = RunCaches::prepare(
            &d.join("git"),
            vec![preset("cargo"), preset("go"), preset("pip")],
            None,
            || if layered { Ok(()) } else { Err("no".into()) },
        )
        .expect("prepare");
        run
    }

    #[test]
    fn tasks_get_one_layer_over_the_store_out_of_their_reach() {
        let d = tempfile::tempdir().expect("tmp");
        let run = run_caches(d.path(), true);
        let scratch = d.path().join("scratch/t");
        let layers = d.path().join("scratch/.cache-layers/t");
        let view = run.task_view(&scratch, &layers).expect("view");
        let mounts = view.mounts.expect("layered");
        let v = abs(&layers.join("view"));
        assert_eq!(view.writable, std::slice::from_ref(&v));
        assert_eq!(mounts.layers.len(), 1);
        assert_eq!(mounts.layers[0].merged, v);
        assert_eq!(
            mounts.layers[0].lower,
            abs(&d.path().join("git/fanout/caches"))
        );
        assert!(mounts.layers[0].upper.starts_with(abs(&layers)));
        assert_eq!(mounts.read_only, [abs(&d.path().join("git/fanout/caches"))]);
        let var = |k: &str| PathBuf::from(&view.env[k]);
        assert_eq!(var("CARGO_HOME"), v.join("cargo"));
        assert_eq!(var("GOCACHE"), v.join("go/build"));
        // The private GOCACHE starts in the task's upper folder.
        assert!(layers.join("upper/go/build").is_dir());
        // Without layers: the same view, private and empty, nothing mounted.
        let run = run_caches(d.path(), false);
        let view = run.task_view(&scratch, &layers).expect("view");
        assert!(view.mounts.is_none() && !layers.exists());
        assert!(scratch.join("caches/cargo/registry").is_dir());
    }

    #[test]
    fn the_fill_writes_the_shared_parts_only() {
        let d = tempfile::tempdir().expect("tmp");
        let run = run_caches(d.path(), true);
        let scratch = d.path().join("fill");
        let fill = run.fill_view(&scratch).expect("fill");
        let store = d.path().join("git/fanout/caches");
        let home = PathBuf::from(&fill.env["CARGO_HOME"]);
        assert_eq!(home, scratch.join("caches/cargo"));
        assert_eq!(
            std::fs::read_link(home.join("registry")).expect("link"),
            store.join("cargo/registry")
        );
        assert_eq!(PathBuf::from(&fill.env["GOMODCACHE"]), store.join("go/mod"));
        assert_eq!(
            PathBuf::from(&fill.env["GOCACHE"]),
            scratch.join("caches/go/build")
        );
        assert_eq!(PathBuf::from(&fill.env["PIP_CACHE_DIR"]), store.join("pip"));
        assert_eq!(
            fill.writable,
            [store.join("cargo"), store.join("go"), store.join("pip")]
        );
    }
}
