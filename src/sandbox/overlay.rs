//! Overlay workspaces: the sandboxed child mounts the task's view (a shared read-only lower
//! checkout plus the task's own upper folder) in a private mount namespace before it confines
//! itself, so the mount lives and dies with the task's processes.
//!
//! As root a plain mount namespace is enough (the overlay keeps its markers in
//! `trusted.overlay.*`); otherwise the child first enters a new user namespace that maps only
//! its own uid and gid to themselves (markers in `user.overlay.*`, `userxattr`). Either way the
//! program keeps (or, as root, switches to) an ordinary uid and runs with no capabilities.
//!
//! As root, the lower checkout belongs to root and is reachable by root only (every task of
//! the run shares it, each task runs as its own uid). The child mounts, in its private
//! namespace, an idmapped copy of the lower over the lower's path — root's files shown as the
//! task's — before mounting the overlay: in the task's view the files are its own (it may
//! write and chmod them), while on disk nothing changes and no other uid can reach the lower.

use super::mounts::cstring;
use super::policy::{CacheMounts, OverlaySpec};
use super::privs;
use std::ffi::CString;
use std::path::Path;

/// Where the overlay keeps its markers (opaque folders) on the upper folder.
pub fn xattr_prefix(root: bool) -> &'static str {
    if root {
        "trusted.overlay."
    } else {
        "user.overlay."
    }
}

/// The mount options for `spec`; `None` for paths the option syntax cannot carry.
pub fn mount_options(spec: &OverlaySpec, root: bool) -> Result<String, String> {
    let mut out = String::new();
    let check = |p: &Path| {
        p.to_str()
            .filter(|s| !s.contains([',', ':', '\\', '\n']) && p.is_absolute())
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{}: an overlay layer needs an absolute UTF-8 path without `,`, `:` or `\\`",
                    p.display()
                )
            })
    };
    // The setup layer lies above the checkout: its files win where both have one.
    let lower = match &spec.setup {
        Some(setup) => format!("{}:{}", check(setup)?, check(&spec.lower)?),
        None => check(&spec.lower)?,
    };
    out.push_str(&format!("lowerdir={lower},"));
    for (key, p) in [("upperdir", &spec.upper), ("workdir", &spec.work)] {
        let s = check(p)?;
        out.push_str(&format!("{key}={s},"));
    }
    // No redirects or metadata-only copies: the upper folder then holds whole files and
    // whiteouts only, which is all collection understands.
    if root {
        out.push_str("redirect_dir=off,metacopy=off,index=off");
    } else {
        out.push_str("userxattr,metacopy=off,index=off");
    }
    Ok(out)
}

/// In the forked, single-threaded child, before privileges are dropped: new namespaces, the
/// overlay workspace mounted at its `merged`, the cache layers at theirs, the shared caches
/// made read-only, the working folder re-entered through the mount. Without root, the
/// capabilities the new user namespace gave are dropped again before returning.
#[allow(unsafe_code)]
pub(crate) fn enter(
    workspace: Option<&OverlaySpec>,
    caches: Option<&CacheMounts>,
    run_as: Option<super::policy::RunAs>,
) -> Result<(), String> {
    let root = nix::unistd::geteuid().is_root();
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the working folder: {e}"))?;
    let workspace = workspace
        .map(|s| mount_options(s, root).map(|o| (s, o)))
        .transpose()?;
    let layers = caches
        .map(|c| c.layers.iter())
        .into_iter()
        .flatten()
        .map(|s| mount_options(s, root).map(|o| (s, o)))
        .collect::<Result<Vec<_>, _>>()?;
    // Only our own ids, mapped to themselves: files in the upper folder keep their owner.
    super::userns::unshare_own_ids(libc::CLONE_NEWNS, "mount")?;
    super::mounts::propagate_root(libc::MS_SLAVE)?;
    if let Some((spec, opts)) = &workspace {
        if let (true, Some(who)) = (root, run_as) {
            super::idmap::mount_lower_as(&spec.lower, who)?;
            if let Some(setup) = &spec.setup {
                super::idmap::mount_lower_as(setup, who)?;
            }
        }
        mount_overlay(&spec.merged, opts).map_err(|e| {
            format!(
                "cannot mount the overlay workspace at {}: {e}",
                spec.merged.display()
            )
        })?;
    }
    for (spec, opts) in &layers {
        mount_overlay(&spec.merged, opts).map_err(|e| {
            format!(
                "cannot mount the cache layer at {}: {e}",
                spec.merged.display()
            )
        })?;
    }
    for p in caches.map(|c| c.read_only.as_slice()).unwrap_or_default() {
        bind_read_only(p).map_err(|e| {
            format!(
                "cannot make the shared cache {} read-only: {e}",
                p.display()
            )
        })?;
    }
    // The old working folder is the folder beneath the mount: go through the mount.
    std::env::set_current_dir(&cwd)
        .map_err(|e| format!("cannot enter {} in the overlay: {e}", cwd.display()))?;
    if !root {
        privs::drop_all_caps()?;
    }
    Ok(())
}

/// Mounts an overlay with `opts` at `merged`.
#[allow(unsafe_code)]
fn mount_overlay(merged: &Path, opts: &str) -> Result<(), std::io::Error> {
    let target = cstring(merged)?;
    let data = CString::new(opts).map_err(|_| std::io::Error::other("bad mount options"))?;
    let fstype = c"overlay";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Bind-mounts `path` over itself, read-only.
fn bind_read_only(path: &Path) -> Result<(), std::io::Error> {
    super::mounts::bind_read_only(path, path, false)
}

/// Whether overlay workspaces work here, tried once with a throwaway overlay in `dir` (which
/// must exist and be empty): the full path agents take — namespaces, mount, uid switch when
/// root, Landlock with the merged view as the only writable folder — running `sh` that
/// changes, adds and deletes a file. `Err` says why not.
pub fn probe(
    self_exe: &Path,
    dir: &Path,
    run_as: Option<super::policy::RunAs>,
    min_abi: u32,
) -> Result<(), String> {
    let io = |what: &str, p: &Path| {
        let p = p.display().to_string();
        let what = what.to_string();
        move |e: std::io::Error| format!("{what} {p}: {e}")
    };
    let spec = OverlaySpec {
        setup: None,
        lower: dir.join("lower"),
        upper: dir.join("upper"),
        work: dir.join("work"),
        merged: dir.join("merged"),
    };
    for p in [&spec.lower, &spec.upper, &spec.work, &spec.merged] {
        std::fs::create_dir_all(p).map_err(io("cannot create", p))?;
    }
    let old = spec.lower.join("old");
    std::fs::write(&old, "old\n").map_err(io("cannot write", &old))?;
    if let Some(who) = run_as {
        // As in a run: the lower stays root's, the task sees it through an idmapped mount.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
        let _ = std::fs::set_permissions(&spec.lower, std::fs::Permissions::from_mode(0o700));
        for p in [&spec.upper, &spec.merged] {
            super::user::hand_over(p, who).map_err(io("cannot hand over", p))?;
        }
    }
    let mut policy = super::policy::Policy::workspace_write(vec![spec.merged.clone()]);
    policy.net = super::policy::NetPolicy::None;
    policy.min_abi = min_abi;
    policy.run_as = run_as;
    policy.overlay = Some(spec.clone());
    let status = dir.join("status.json");
    let script = "echo new > new && echo more >> old && chmod 755 old && rm old && test ! -e old && test -f new";
    let out = super::policy::supervised_command(
        self_exe,
        &policy,
        &status,
        "sh".as_ref(),
        &["-c".into(), script.into()],
    )
    .current_dir(&spec.merged)
    .stdin(std::process::Stdio::null())
    .output()
    .map_err(|e| format!("cannot start the probe: {e}"))?;
    if !out.status.success() {
        let why = super::policy::read_report(&status)
            .ok()
            .and_then(|r| r.message)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(why);
    }
    use std::os::unix::fs::FileTypeExt;
    let whiteout = std::fs::symlink_metadata(spec.upper.join("old"))
        .is_ok_and(|m| m.file_type().is_char_device());
    if !spec.upper.join("new").is_file() || !whiteout {
        return Err("the overlay's changes did not appear in its upper folder".into());
    }
    if std::fs::read_dir(&spec.merged).is_ok_and(|mut d| d.next().is_some()) {
        return Err("the overlay mount leaked into fanout's mount namespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_refuse_separators() {
        let spec = |lower: &str| OverlaySpec {
            setup: None,
            lower: lower.into(),
            upper: "/u".into(),
            work: "/w".into(),
            merged: "/m".into(),
        };
        let o = mount_options(&spec("/l"), false).expect("plain paths");
        assert!(
            o.starts_with("lowerdir=/l,upperdir=/u,workdir=/w,userxattr"),
            "{o}"
        );
        assert!(mount_options(&spec("/a:b"), true).is_err());
        assert!(mount_options(&spec("/a,b"), true).is_err());
        assert!(mount_options(&spec("rel"), true).is_err());
        let mut with_setup = spec("/l");
        with_setup.setup = Some("/s".into());
        let o = mount_options(&with_setup, true).expect("plain paths");
        assert!(o.starts_with("lowerdir=/s:/l,upperdir=/u,"), "{o}");
        with_setup.setup = Some("/s:x".into());
        assert!(mount_options(&with_setup, true).is_err());
    }
}
