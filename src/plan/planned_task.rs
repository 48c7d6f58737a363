//! One task of a plan, resolved: its agent, gates, limits and environment.

use crate::ids::TaskId;
use crate::taskfile::{self, AgentProfile, TaskSpec, VerifyCommand};

/// One task, resolved.
#[derive(Clone, Debug)]
pub struct PlannedTask {
    pub spec: TaskSpec,
    pub agent_name: String,
    pub profile: AgentProfile,
    /// Program, protocol, environment and sandbox policy of its processes.
    pub launch: super::launch::Launch,
    pub timeout_secs: f64,
    pub verify: Option<VerifyCommand>,
    pub verify_timeout_secs: f64,
    pub max_attempts: u32,
    /// What the task's change may weigh.
    pub limits: crate::git::collect::ChangeLimits,
    /// The task file's named shared caches.
    pub caches: Vec<taskfile::Cache>,
    /// The review gate (task's own, else `defaults.review`).
    pub review: Option<taskfile::ReviewSpec>,
    /// `defaults.diagnose`: a Claude Code diagnosis goes with every feedback turn.
    pub diagnose: bool,
    /// The `claude` program for the review gate and diagnoses.
    pub claude: String,
    /// The author of the task's commits (name, email); `None`: fanout.
    pub author: Option<(String, String)>,
    /// Run in the workspace before the agent (`setup`), and its time.
    pub setup: Option<VerifyCommand>,
    pub setup_timeout_secs: f64,
    /// What each phase reaches through the egress proxy under `--net isolated` (the task's
    /// `network`, else `defaults.network`, else agent = model, setup and verify = none).
    pub network: taskfile::network::NetworkSpec,
    /// Ignored files of the checkout copied into the workspace (`include`), found once.
    pub include: std::sync::Arc<Vec<crate::include::Entry>>,
}

impl PlannedTask {
    pub fn id(&self) -> &TaskId {
        &self.spec.id
    }

    /// A task with an `exec` agent and these dependencies (unit tests of the scheduler).
    #[cfg(test)]
    pub fn for_tests(id: &str, depends_on: &[&str]) -> PlannedTask {
        let parse = |s: &str| TaskId::parse(s).expect("a valid test id");
        let profile = crate::taskfile::AgentProfile::new(crate::taskfile::Protocol::Exec, "true");
        PlannedTask {
            spec: TaskSpec {
                id: parse(id),
                prompt: "x".into(),
                agent: None,
                paths: Vec::new(),
                timeout_secs: None,
                verify: None,
                verify_timeout_secs: None,
                depends_on: depends_on.iter().map(|d| parse(d)).collect(),
                max_attempts: None,
                max_file_bytes: None,
                max_change_bytes: None,
                setup: None,
                setup_timeout_secs: None,
                template: false,
                review: None,
                network: None,
            },
            agent_name: "exec".into(),
            profile: profile.clone(),
            launch: super::launch::Launch::resolve(&profile, None, 0, false, &Default::default()),
            timeout_secs: 60.0,
            verify: None,
            verify_timeout_secs: 60.0,
            max_attempts: 1,
            limits: crate::git::collect::ChangeLimits::default(),
            caches: Vec::new(),
            review: None,
            diagnose: false,
            claude: "claude".into(),
            author: None,
            setup: None,
            setup_timeout_secs: 60.0,
            network: Default::default(),
            include: Default::default(),
        }
    }
}
