//! One task of a plan, resolved: its agent, gates, limits and environment.

use crate::ids::TaskId;
use crate::taskfile::{self, AgentProfile, TaskSpec, VerifyCommand};

/// What a planned task keeps of its task-file entry: the fields no resolved one below replaces.
/// (A whole `TaskSpec`, its options already resolved into the fields below, was 500 bytes more
/// a task: 5 MB at 10 000 tasks.)
#[derive(Clone, Debug)]
pub struct TaskCore {
    pub id: TaskId,
    pub prompt: String,
    pub paths: Vec<String>,
    pub depends_on: Vec<TaskId>,
    /// `group`: tasks of one group land together or not at all.
    pub group: Option<String>,
}

impl From<&TaskSpec> for TaskCore {
    fn from(spec: &TaskSpec) -> TaskCore {
        TaskCore {
            id: spec.id.clone(),
            prompt: spec.prompt.clone(),
            paths: spec.paths.clone(),
            depends_on: spec.depends_on.clone(),
            group: spec.group.clone(),
        }
    }
}

/// One task, resolved.
#[derive(Clone, Debug)]
pub struct PlannedTask {
    pub spec: TaskCore,
    pub agent_name: String,
    /// Shared by the tasks of one agent (a copy in each is 300 bytes and more a task).
    pub profile: std::sync::Arc<AgentProfile>,
    /// Program, protocol, environment and sandbox policy of its processes.
    pub launch: super::launch::Launch,
    /// Candidates: one entry per candidate (empty: the task runs once, without candidates).
    pub candidates: Vec<super::candidates::PlannedCandidate>,
    /// Its resolved options, one copy shared by the tasks resolved alike (read through
    /// `Deref`: `task.verify`, `task.timeout_secs`, …).
    pub options: std::sync::Arc<TaskOptions>,
}

/// A task's options resolved from the task, `defaults` and the command line: the same for
/// most tasks of a file, so shared (at 10 000 tasks a copy each was 4 MB).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOptions {
    pub timeout_secs: f64,
    pub verify: Option<VerifyCommand>,
    pub verify_timeout_secs: f64,
    /// How many times a failing verify command runs again (0: none).
    pub verify_retries: u32,
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
    /// What the shared setup layer depends on (`None`: the whole start tree).
    pub setup_inputs: Option<Vec<String>>,
    /// `false`: setup runs in every workspace (`"once": false`); else once per layer.
    pub setup_once: bool,
    /// What each phase reaches through the egress proxy under `--net isolated` (the task's
    /// `network`, else `defaults.network`, else agent = model, setup and verify = none).
    pub network: taskfile::network::NetworkSpec,
    /// Ignored files of the checkout copied into the workspace (`include`), found once.
    pub include: std::sync::Arc<Vec<crate::include::Entry>>,
    /// Globs an integration repair may never change (the task's `protect`, else the defaults').
    pub protect: Vec<String>,
    /// Candidates: how the task's commit is chosen among them.
    pub select: taskfile::SelectMode,
}

impl std::ops::Deref for PlannedTask {
    type Target = TaskOptions;

    fn deref(&self) -> &TaskOptions {
        &self.options
    }
}

impl PlannedTask {
    pub fn id(&self) -> &TaskId {
        &self.spec.id
    }

    /// The tasks as they will run, for the checks of their programs: a task with candidates is
    /// each of its candidates (its own agent may never run).
    pub(super) fn as_run(tasks: &[PlannedTask]) -> Vec<PlannedTask> {
        let mut out = Vec::new();
        for t in tasks {
            if t.candidates.is_empty() {
                out.push(t.clone());
            }
            for c in &t.candidates {
                let mut one = t.clone();
                one.candidates = Vec::new();
                one.agent_name = c.agent_name.clone();
                one.profile = std::sync::Arc::new(c.profile.clone());
                one.launch = c.launch.clone();
                out.push(one);
            }
        }
        out
    }

    /// The shared setup layer this task's workspace gets (`None`: no setup, or `"once": false`).
    pub fn setup_layer(&self) -> Option<crate::plan::SetupLayerPlan> {
        let command = self.setup.clone().filter(|_| self.setup_once)?;
        Some(crate::plan::SetupLayerPlan {
            command,
            inputs: self.setup_inputs.clone(),
            timeout_secs: self.setup_timeout_secs,
        })
    }

    /// A task with an `exec` agent and these dependencies (unit tests of the scheduler).
    #[cfg(test)]
    pub fn for_tests(id: &str, depends_on: &[&str]) -> PlannedTask {
        let parse = |s: &str| TaskId::parse(s).expect("a valid test id");
        let profile = crate::taskfile::AgentProfile::new(crate::taskfile::Protocol::Exec, "true");
        PlannedTask {
            spec: TaskCore {
                id: parse(id),
                prompt: "x".into(),
                paths: Vec::new(),
                depends_on: depends_on.iter().map(|d| parse(d)).collect(),
                group: None,
            },
            agent_name: "exec".into(),
            profile: std::sync::Arc::new(profile.clone()),
            launch: super::launch::Launch::resolve(&profile, None, 0, false, &Default::default()),
            candidates: Vec::new(),
            options: std::sync::Arc::new(TaskOptions {
                timeout_secs: 60.0,
                verify: None,
                verify_timeout_secs: 60.0,
                verify_retries: 0,
                max_attempts: 1,
                limits: crate::git::collect::ChangeLimits::default(),
                caches: Vec::new(),
                review: None,
                diagnose: false,
                claude: "claude".into(),
                author: None,
                setup: None,
                setup_timeout_secs: 60.0,
                setup_inputs: None,
                setup_once: true,
                network: Default::default(),
                include: Default::default(),
                protect: Vec::new(),
                select: Default::default(),
            }),
        }
    }
}
