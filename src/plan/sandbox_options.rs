//! How the sandbox confines a run's tasks: the command line's choices.

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SandboxOptions {
    /// false only with an explicit `--sandbox off`.
    pub enabled: bool,
    pub net: NetChoice,
    pub read_strict: bool,
    pub min_abi: u32,
    /// When fanout runs as root: the run's uid — by default the first of a block of dedicated
    /// uids chosen for this run, each task then runs as its own uid of the block
    /// (`sandbox::user::task_user`); with `--agent-user` that one uid for everything. `None`
    /// when fanout is not root.
    #[serde(default)]
    pub run_as: Option<crate::sandbox::RunAs>,
}

impl SandboxOptions {
    /// The uid and gid a verifier (read-back, review, diagnosis) runs as: the run's own uid,
    /// which no task has (or the `--agent-user` uid); `None` when fanout is not root.
    pub fn verifier_user(&self) -> Option<crate::sandbox::RunAs> {
        crate::sandbox::user::verifier_user(self.run_as)
    }
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            enabled: true,
            // Each task's own network namespace, the egress proxy its only way out.
            net: NetChoice::Isolated,
            read_strict: false,
            min_abi: 3,
            run_as: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetChoice {
    /// TCP connect to 443 and the profile's `connect_ports` only.
    Default,
    Any,
    None,
    /// A network namespace of each task's own (loopback only), around the agent, its verify
    /// commands and the integration gate; TCP 443 and `connect_ports` by Landlock where no
    /// namespace can be made.
    Isolated,
}

impl NetChoice {
    /// Landlock's TCP rule: `ports` are the ones allowed by default (443 and the profile's).
    pub fn landlock(self, ports: Vec<u16>) -> crate::sandbox::NetPolicy {
        use crate::sandbox::NetPolicy;
        match self {
            NetChoice::Any => NetPolicy::Any,
            NetChoice::None => NetPolicy::None,
            NetChoice::Default | NetChoice::Isolated => NetPolicy::ConnectPorts(ports),
        }
    }

    /// Whether processes get a network namespace of their own (`enforce`: the sandbox is on).
    pub fn isolates(self, enforce: bool) -> bool {
        enforce && self == NetChoice::Isolated
    }
}
