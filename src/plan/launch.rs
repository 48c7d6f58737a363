//! How a task's processes are launched, decided when the plan is made: program, protocol,
//! environment and sandbox policy. The runner only adds what the task's folders give (its
//! worktree, scratch, overlay and cache mounts, their environment); nothing resolves a profile
//! or probes a protocol once the run has started.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[cfg(test)]
use super::sandbox_options::NetChoice;
use super::sandbox_options::SandboxOptions;
use crate::sandbox::{NetPolicy, RunAs};
use crate::taskfile::{AgentProfile, Protocol};

/// One task's launch: what every task of its agent shares, and the task's own uid.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Shared by the tasks of one agent (planned once per agent: 10 000 tasks held 10 000
    /// copies of the same program, arguments and environment).
    common: std::sync::Arc<LaunchCommon>,
    /// Whom the task's processes run as: their own uid per task when fanout runs as root.
    pub run_as: Option<RunAs>,
}

impl std::ops::Deref for Launch {
    type Target = LaunchCommon;
    fn deref(&self) -> &LaunchCommon {
        &self.common
    }
}

/// The part of a launch decided by the agent and the sandbox options alone.
#[derive(Debug)]
pub struct LaunchCommon {
    /// The agent's program (the profile's command, resolved) and its arguments.
    pub program: String,
    pub args: Vec<String>,
    /// The protocol the agent speaks (never `auto`: detected when the plan was made).
    pub protocol: Protocol,
    /// What every process of the task gets besides what its folders and the run's id give: the
    /// profile's `env` (expanded from fanout's environment), which wins over those.
    pub env: BTreeMap<String, String>,
    /// Whether the Landlock ruleset is enforced (`--sandbox off` is the only `false`).
    pub enforce: bool,
    pub min_abi: u32,
    /// TCP the task may connect to.
    pub net: NetPolicy,
    /// `--net isolated`: a network namespace of the task's own (loopback only).
    pub isolate_net: bool,
    /// What the task's processes get of fanout's environment besides the base allow-list
    /// (`plan::passed_env`): the profile's `env_pass`, the protocol's credentials.
    pub env_pass: Vec<String>,
    /// `--read strict`: reads limited to system folders, the repository, the task's own folders
    /// and these (the program's install folders).
    pub read_strict: bool,
    pub program_dirs: Vec<PathBuf>,
    /// The Codex installation found for a Codex profile (its version picked the protocol).
    pub codex: Option<crate::agent::codex::Installed>,
}

impl Launch {
    /// The launch of the task at `index` of the plan, run with `profile` (protocol already
    /// resolved, `codex` the installation that resolved it); `uses_caches`: it sees the task
    /// file's shared caches.
    pub fn resolve(
        profile: &AgentProfile,
        codex: Option<crate::agent::codex::Installed>,
        index: usize,
        uses_caches: bool,
        sandbox: &SandboxOptions,
    ) -> Launch {
        let mut ports = vec![443u16];
        ports.extend(&profile.connect_ports);
        let net = sandbox.net.landlock(ports);
        let common = std::sync::Arc::new(LaunchCommon {
            program: profile.command.clone(),
            args: profile.args.clone(),
            protocol: profile.protocol,
            env: profile.env.clone(),
            enforce: sandbox.enabled,
            min_abi: sandbox.min_abi,
            net,
            isolate_net: sandbox.net.isolates(sandbox.enabled),
            env_pass: super::passed_env::extra_names(
                profile.protocol,
                &profile.env_pass,
                sandbox.run_as.is_some(),
            ),
            read_strict: sandbox.read_strict,
            program_dirs: if sandbox.read_strict {
                crate::which::program_dirs(&profile.command)
            } else {
                Vec::new()
            },
            codex,
        });
        Launch {
            common,
            run_as: None,
        }
        .for_task(index, uses_caches, sandbox)
    }

    /// The launch of the task at `index` of the plan with this one's agent and sandbox: the
    /// common part shared, the task's own uid.
    pub fn for_task(&self, index: usize, uses_caches: bool, sandbox: &SandboxOptions) -> Launch {
        Launch {
            common: self.common.clone(),
            run_as: sandbox
                .run_as
                .map(|who| crate::sandbox::user::task_user(who, index, uses_caches)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_is_decided_from_the_profile_and_the_sandbox_options() {
        let mut profile = AgentProfile::new(Protocol::Exec, "sh");
        profile.connect_ports = vec![8080];
        profile.env.insert("A".into(), "1".into());
        let mut sandbox = SandboxOptions::default();
        let l = Launch::resolve(&profile, None, 0, false, &sandbox);
        assert_eq!(l.net, NetPolicy::ConnectPorts(vec![443, 8080]));
        assert_eq!(l.env.get("A").map(String::as_str), Some("1"));
        assert!(l.program_dirs.is_empty() && l.run_as.is_none() && l.enforce);
        sandbox.read_strict = true;
        sandbox.net = NetChoice::None;
        let l = Launch::resolve(&profile, None, 0, false, &sandbox);
        assert_eq!(l.net, NetPolicy::None);
        assert!(
            !l.program_dirs.is_empty(),
            "sh's install folder is readable"
        );
    }

    #[test]
    fn root_runs_give_each_task_its_own_uid() {
        let profile = AgentProfile::new(Protocol::Exec, "true");
        let run_as = RunAs {
            uid: 1 << 30,
            gid: 1 << 30,
        };
        let sandbox = SandboxOptions {
            run_as: Some(run_as),
            ..SandboxOptions::default()
        };
        let a = Launch::resolve(&profile, None, 0, false, &sandbox).run_as;
        let b = Launch::resolve(&profile, None, 1, false, &sandbox).run_as;
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(a, Some(crate::sandbox::user::task_user(run_as, 0, false)));
    }
}
