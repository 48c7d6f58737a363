//! The Landlock ruleset for a [`Policy`], applied by the sandboxed child to itself.

use super::policy::{
    EnforcementStatus, NetPolicy, Policy, ReadAccess, SandboxReport, PINNED_ABI, SYSTEM_READ_DIRS,
};
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, LandlockStatus, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use std::path::Path;

/// The pinned, tested ABI as the crate's type (keep in sync with [`PINNED_ABI`]).
const ABI_PINNED: ABI = ABI::V7;

/// Device files every sandboxed program may read, write and truncate (shell redirections to
/// `/dev/null` open with `O_TRUNC`) and send ioctls to (pseudo-terminals).
const DEVICE_FILES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/ptmx",
    "/dev/tty",
];
/// Pseudo-terminal slaves: read, write, truncate, ioctl beneath it (no creation).
const PTS_DIR: &str = "/dev/pts";

/// The Landlock ABI offered by the running kernel, `None` without Landlock.
#[allow(unsafe_code)]
pub(crate) fn kernel_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns
    // the ABI version (or -1 with errno); it reads no memory and creates no descriptor.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

/// The Linux release that introduced a Landlock ABI, for messages.
pub(crate) fn linux_for_abi(abi: u32) -> String {
    let v = match abi {
        0 | 1 => "5.13",
        2 => "5.19",
        3 => "6.2",
        4 => "6.7",
        5 => "6.10",
        6 => "6.12",
        7 => "6.15",
        _ => return "a kernel newer than this fanout knows".into(),
    };
    format!("Linux {v} or later")
}

/// What the policy asks for that a kernel offering `abi` cannot enforce.
pub(crate) fn missing_features(abi: u32, policy: &Policy) -> Vec<String> {
    let mut missing = Vec::new();
    let mut need = |since: u32, what: &str| {
        if abi < since {
            missing.push(format!("{what} (ABI {since})"));
        }
    };
    need(2, "fs.refer");
    need(3, "fs.truncate");
    if policy.net != NetPolicy::Any {
        need(4, "net.tcp_bind_connect");
    }
    need(5, "fs.ioctl_dev");
    need(6, "scope.signal");
    need(6, "scope.abstract_unix_socket");
    missing
}

pub(crate) fn not_enforced(abi: Option<u32>, message: String) -> SandboxReport {
    SandboxReport {
        status: EnforcementStatus::NotEnforced,
        abi,
        missing: Vec::new(),
        message: Some(message),
        run_as: None,
        child_signal: None,
        network: None,
        credentials_visible: Vec::new(),
    }
}

/// The report for a kernel that cannot satisfy `min_abi`, or `None` if it can.
pub(crate) fn check_kernel(abi: Option<u32>, min_abi: u32) -> Option<SandboxReport> {
    let how = "fanout refuses to run agents unconfined; upgrade the kernel (or enable Landlock \
               with the `lsm=` boot parameter), or pass `--sandbox off` to run without confinement";
    match abi {
        None => Some(not_enforced(
            None,
            format!(
                "this kernel offers no Landlock (not built in or not enabled); the sandbox needs \
                 Landlock ABI {min_abi} ({}): {how}",
                linux_for_abi(min_abi)
            ),
        )),
        Some(k) if k < min_abi => Some(not_enforced(
            Some(k),
            format!(
                "this kernel offers Landlock ABI {k}, the sandbox needs ABI {min_abi} ({}): {how}",
                linux_for_abi(min_abi)
            ),
        )),
        Some(_) => None,
    }
}

/// Builds the ruleset for `policy` and applies it to the calling (single-threaded) process.
/// Also sets `no_new_privs`. Never panics; failures become a NotEnforced report.
pub(crate) fn apply(policy: &Policy, min_abi: u32) -> SandboxReport {
    let kabi = kernel_abi();
    if let Some(r) = check_kernel(kabi, min_abi) {
        return r;
    }
    match build_and_restrict(policy) {
        Ok((status, abi)) => {
            let abi = abi.or(kabi);
            let missing = missing_features(abi.unwrap_or(0), policy);
            let status = match status {
                RulesetStatus::FullyEnforced if missing.is_empty() => {
                    EnforcementStatus::FullyEnforced
                }
                RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => {
                    EnforcementStatus::PartiallyEnforced
                }
                RulesetStatus::NotEnforced => {
                    return not_enforced(
                        abi,
                        "the Landlock ruleset could not be enforced; fanout refuses to run \
                         agents unconfined (pass `--sandbox off` to run without confinement)"
                            .into(),
                    )
                }
            };
            let missing = if status == EnforcementStatus::PartiallyEnforced && missing.is_empty() {
                vec!["unknown (the landlock crate reported partial enforcement)".into()]
            } else {
                missing
            };
            SandboxReport {
                status,
                abi,
                missing,
                message: None,
                run_as: None,
                child_signal: None,
                network: None,
                credentials_visible: Vec::new(),
            }
        }
        Err(e) => not_enforced(kabi, format!("cannot set up the sandbox: {e}")),
    }
}

fn path_rule(
    path: &Path,
    dir_access: BitFlags<AccessFs>,
) -> Result<PathBeneath<PathFd>, anyhow::Error> {
    let fd = PathFd::new(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
    let access = if is_dir {
        dir_access
    } else {
        dir_access & AccessFs::from_file(ABI_PINNED)
    };
    Ok(PathBeneath::new(fd, access))
}

fn build_and_restrict(policy: &Policy) -> Result<(RulesetStatus, Option<u32>), anyhow::Error> {
    debug_assert_eq!(ABI_PINNED as u32, PINNED_ABI);
    let all = AccessFs::from_all(ABI_PINNED);
    let read = AccessFs::from_read(ABI_PINNED);
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;

    let mut ruleset = Ruleset::default().handle_access(all)?;
    if policy.net != NetPolicy::Any {
        ruleset = ruleset.handle_access(AccessNet::from_all(ABI_PINNED))?;
    }
    ruleset = ruleset.scope(Scope::from_all(ABI_PINNED))?;
    let mut rs = ruleset.create()?;

    match &policy.read {
        ReadAccess::All => rs = rs.add_rule(path_rule(Path::new("/"), read)?)?,
        ReadAccess::Strict { readable } => {
            for dir in SYSTEM_READ_DIRS {
                let p = Path::new(dir);
                if p.exists() {
                    rs = rs.add_rule(path_rule(p, read)?)?;
                }
            }
            for p in readable {
                rs = rs.add_rule(path_rule(p, read)?)?;
            }
        }
    }
    // No device nodes anywhere: a block device made in a worktree opens the disk beneath it.
    let writable = all & !(AccessFs::MakeBlock | AccessFs::MakeChar);
    for p in &policy.writable {
        rs = rs.add_rule(path_rule(p, writable)?)?;
    }
    for dev in DEVICE_FILES {
        let p = Path::new(dev);
        if p.exists() {
            rs = rs.add_rule(path_rule(p, device)?)?;
        }
    }
    if Path::new(PTS_DIR).is_dir() {
        rs = rs.add_rule(path_rule(Path::new(PTS_DIR), device | AccessFs::ReadDir)?)?;
    }
    if let NetPolicy::ConnectPorts(ports) = &policy.net {
        for &port in ports {
            rs = rs.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
        }
    }
    // The egress forwarder's port (only set when the tree has a network namespace).
    if let (Some(link), false) = (&policy.egress, policy.net == NetPolicy::Any) {
        rs = rs.add_rule(NetPort::new(link.port, AccessNet::ConnectTcp))?;
    }
    let status = rs.restrict_self()?;
    if !status.no_new_privs {
        anyhow::bail!("no_new_privs could not be set");
    }
    let abi = match status.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => Some(kernel_abi.map(|k| k as u32).unwrap_or(effective_abi as u32)),
        _ => None,
    };
    Ok((status.ruleset, abi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_by_abi() {
        let p = Policy::workspace_write(vec![]);
        assert!(missing_features(7, &p).is_empty());
        assert!(missing_features(6, &p).is_empty());
        assert_eq!(
            missing_features(5, &p),
            vec!["scope.signal (ABI 6)", "scope.abstract_unix_socket (ABI 6)"]
        );
        let m3 = missing_features(3, &p);
        assert!(m3.contains(&"net.tcp_bind_connect (ABI 4)".to_string()));
        assert!(m3.contains(&"fs.ioctl_dev (ABI 5)".to_string()));
        let mut any = p.clone();
        any.net = NetPolicy::Any;
        assert!(!missing_features(3, &any)
            .iter()
            .any(|m| m.starts_with("net.")));
    }

    #[test]
    fn kernel_check_messages() {
        assert!(check_kernel(Some(7), 3).is_none());
        let r = check_kernel(Some(7), 99).unwrap();
        assert_eq!(r.status, EnforcementStatus::NotEnforced);
        let m = r.message.unwrap();
        assert!(m.contains("ABI 7") && m.contains("--sandbox off"), "{m}");
        let r = check_kernel(None, 3).unwrap();
        assert!(r.message.unwrap().contains("Linux 6.2"));
    }
}
