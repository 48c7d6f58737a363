//! Entering new namespaces from the sandboxed child: as root directly, otherwise inside a new
//! user namespace that maps only the child's own ids, to themselves (files it makes keep their
//! owner). The overlay workspace and the network namespace both start this way.

/// In the forked, single-threaded child: unshares `flags` (with `CLONE_NEWUSER` when not
/// root). `what` names the namespace for the error (`"mount"`, `"network"`).
#[allow(unsafe_code)]
pub(crate) fn unshare_own_ids(flags: libc::c_int, what: &str) -> Result<(), String> {
    let root = nix::unistd::geteuid().is_root();
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let flags = if root {
        flags
    } else {
        libc::CLONE_NEWUSER | flags
    };
    // SAFETY: unshare takes only flags; the child is single-threaded, as CLONE_NEWUSER needs.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(format!(
            "cannot create a {}{what} namespace: {}",
            if root { "" } else { "user and " },
            std::io::Error::last_os_error()
        ));
    }
    if !root {
        let write = |file: &str, text: String| {
            std::fs::write(file, text).map_err(|e| format!("cannot write {file}: {e}"))
        };
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    Ok(())
}
