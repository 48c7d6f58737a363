//! Dropping root in the sandboxed child: an agent started by root runs as an ordinary uid with
//! no capabilities (Landlock does not restrict what capabilities allow, e.g. chmod/chown of any
//! file, mknod, mount in a new namespace, loading modules).

use super::policy::RunAs;
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

/// Capability sets of a process as `/proc/<pid>/status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl CapSets {
    /// Whether every set is empty.
    pub fn all_empty(&self) -> bool {
        *self == CapSets::default()
    }
}

/// Parses the `Cap*` lines of `/proc/<pid>/status`; `None` if one is missing.
pub fn parse_status_caps(status: &str) -> Option<CapSets> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(':')?;
            u64::from_str_radix(v.trim(), 16).ok()
        })
    };
    Some(CapSets {
        inheritable: field("CapInh")?,
        permitted: field("CapPrm")?,
        effective: field("CapEff")?,
        bounding: field("CapBnd")?,
        ambient: field("CapAmb")?,
    })
}

/// The calling process's capability sets.
pub fn own_caps() -> Option<CapSets> {
    parse_status_caps(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Becomes `who` for good: ambient set cleared and bounding set dropped while still privileged,
/// no supplementary groups, real/effective/saved gid and uid switched (the kernel then clears
/// the permitted and effective sets), inheritable set cleared. Checks the result through
/// `/proc/self/status` and fails if any capability is left.
#[allow(unsafe_code)]
pub(crate) fn become_user(who: RunAs) -> Result<(), String> {
    if who.uid == 0 {
        return Err("refusing to run an agent as uid 0".into());
    }
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot clear the ambient capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop_bounding_set()?;
    setgroups(&[]).map_err(|e| format!("setgroups([]): {e}"))?;
    let (uid, gid) = (Uid::from_raw(who.uid), Gid::from_raw(who.gid));
    setresgid(gid, gid, gid).map_err(|e| format!("setresgid({}): {e}", who.gid))?;
    setresuid(uid, uid, uid).map_err(|e| format!("setresuid({}): {e}", who.uid))?;
    clear_inheritable()?;
    match own_caps() {
        Some(c) if c.all_empty() => Ok(()),
        Some(c) => Err(format!("capabilities left after dropping root: {c:?}")),
        None => Err("cannot read the capability sets from /proc/self/status".into()),
    }
}

/// A dedicated uid is one task's alone, so a limit on its processes is a limit on the task's:
/// set (soft and hard, while still privileged) before switching to it, so a fork bomb in one
/// task cannot starve the others of processes. No limit for other uids (`--agent-user`,
/// `nobody`), which other processes may share.
pub(crate) fn limit_processes(who: RunAs) -> Result<(), String> {
    let Some(max) = super::user::max_procs(who) else {
        return Ok(());
    };
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, max, max)
        .map_err(|e| format!("cannot limit the task's processes to {max}: {e}"))
}

/// Drops every capability (bounding and ambient sets included) without changing uid: the
/// overlay child holds a full set in its new user namespace after mounting.
#[allow(unsafe_code)]
pub(crate) fn drop_all_caps() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    drop_bounding_set()?;
    clear_inheritable()?;
    match own_caps() {
        Some(c) if c.all_empty() => Ok(()),
        Some(c) => Err(format!(
            "capabilities left after mounting the workspace: {c:?}"
        )),
        None => Err("cannot read the capability sets from /proc/self/status".into()),
    }
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
        .min(63)
}

/// capset(2) with empty sets: setuid already emptied permitted and effective, inheritable stays.
#[allow(unsafe_code)]
fn clear_inheritable() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: the header and two data structs have the layout capset(2) expects for version 3;
    // both outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if r != 0 {
        return Err(format!(
            "cannot clear the inheritable capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Empties the capability bounding set, so nothing exec'd later can gain a capability back.
#[allow(unsafe_code)]
fn drop_bounding_set() -> Result<(), String> {
    for cap in 0..=last_cap() {
        // SAFETY: prctl with integer arguments only; EINVAL for capabilities this kernel does
        // not know is ignored.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(format!(
                "cannot drop capability {cap} from the bounding set: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_lines() {
        let s = "Name:\tsh\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                 CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let c = parse_status_caps(s).unwrap();
        assert_eq!(c.permitted, 0x1ff_ffff_ffff);
        assert!(!c.all_empty());
        assert!(parse_status_caps("CapInh:\t0\n").is_none());
    }
}
