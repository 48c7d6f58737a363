/*!
The plan of a run: the validated task file resolved against the repository and the command
line (base commit, agent profiles with their environment expanded, per-task settings). Every
check that can fail because of the user's input happens here, before anything is created.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::git::repo::UserRepo;
use crate::git::GitError;
use crate::ids::{RunId, TaskId};
use crate::taskfile::{
    self, AgentProfile, Protocol, TaskFile, TaskFileError, TaskSpec, VerifyCommand,
};

/// Settings from the command line that shape a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub repo: PathBuf,
    pub tasks_file: PathBuf,
    pub jobs: usize,
    pub base: Option<String>,
    /// Use this agent for every task, whatever the file says.
    pub agent: Option<String>,
    pub keep_worktrees: bool,
    pub report: Option<PathBuf>,
    pub sandbox: SandboxOptions,
    pub readback: ReadbackMode,
    /// fanout's own executable (it holds the sandbox supervisor).
    pub self_exe: PathBuf,
    /// `--max-file-bytes` / `--max-change-bytes`: override the task file's limits.
    pub max_file_bytes: Option<u64>,
    pub max_change_bytes: Option<u64>,
    /// `--allow-unfiltered`: commit raw content for paths stored through a filter driver.
    pub allow_unfiltered: bool,
    /// Free space the git directory's filesystem needs before a run starts (0: no check).
    pub min_free_mb: u64,
    /// `--workspace`: how task workspaces are made.
    pub workspace: WorkspaceChoice,
}

/// How task workspaces are made (`--workspace`; see docs/workspaces.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceChoice {
    /// Overlay when a probe at the run's start shows it works, else worktree.
    #[default]
    Auto,
    /// A shared read-only checkout per start commit under a per-task upper folder.
    Overlay,
    /// A full git worktree per task.
    Worktree,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SandboxOptions {
    /// false only with an explicit `--sandbox off`.
    pub enabled: bool,
    pub net: NetChoice,
    pub read_strict: bool,
    pub min_abi: u32,
    /// The uid agents run as when fanout runs as root (`--agent-user`, default `nobody`);
    /// `None` when fanout is not root.
    #[serde(default)]
    pub run_as: Option<crate::sandbox::RunAs>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            enabled: true,
            net: NetChoice::Default,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadbackMode {
    /// Read back when the verifier's binary is found; warn once when it is not.
    Auto,
    /// A missing verifier is an error before anything starts.
    Require,
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    TaskFile(#[from] TaskFileError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{0}")]
    Invalid(String),
}

/// One task, resolved.
#[derive(Clone, Debug)]
pub struct PlannedTask {
    pub spec: TaskSpec,
    pub agent_name: String,
    pub profile: AgentProfile,
    pub timeout_secs: f64,
    pub verify: Option<VerifyCommand>,
    pub verify_timeout_secs: f64,
    pub max_attempts: u32,
    /// What the task's change may weigh.
    pub limits: crate::git::collect::ChangeLimits,
}

impl PlannedTask {
    pub fn id(&self) -> &TaskId {
        &self.spec.id
    }
}

pub struct Plan {
    pub run_id: RunId,
    pub repo: UserRepo,
    pub base: git2::Oid,
    pub base_rev: String,
    pub tasks: Vec<PlannedTask>,
    pub verifier: Option<AgentProfile>,
    pub options: RunOptions,
    pub run_dir: PathBuf,
    /// The task file as the user wrote it (saved in the run folder for `fanout resume`).
    pub task_file_text: String,
    /// Results carried over from an interrupted run (`fanout resume`), by task id.
    pub priors: BTreeMap<String, crate::resume::Prior>,
}

pub const DEFAULT_VERIFY_TIMEOUT_SEC: f64 = 600.0;

impl Plan {
    pub fn build(options: RunOptions) -> Result<Plan, PlanError> {
        crate::redact::register_process_env();
        let file = taskfile::load(&options.tasks_file)?;
        let text = std::fs::read_to_string(&options.tasks_file).unwrap_or_default();
        let repo = UserRepo::open(&options.repo)?;
        let mut plan = Self::from_parts(file, repo, options)?;
        plan.task_file_text = text;
        Ok(plan)
    }

    pub fn from_parts(
        file: TaskFile,
        repo: UserRepo,
        options: RunOptions,
    ) -> Result<Plan, PlanError> {
        let base_rev = options
            .base
            .clone()
            .or_else(|| file.base.clone())
            .unwrap_or_else(|| "HEAD".into());
        let base = repo.resolve_base(&base_rev)?;
        let agents = resolve_agents(&file, &|n| std::env::var(n).ok())?;
        if let Some(a) = &options.agent {
            if !agents.contains_key(a) {
                return Err(PlanError::Invalid(format!(
                    "--agent {a:?} names no agent (known: {})",
                    agents.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let mut tasks = Vec::new();
        for spec in &file.tasks {
            let agent_name = options
                .agent
                .clone()
                .or_else(|| spec.agent.clone())
                .or_else(|| file.defaults.agent.clone())
                .unwrap_or_else(|| "codex".into());
            let profile = agents.get(&agent_name).cloned().ok_or_else(|| {
                PlanError::Invalid(format!("task {}: unknown agent {agent_name:?}", spec.id))
            })?;
            if !profile.enabled {
                return Err(PlanError::Invalid(format!(
                    "task {}: agent {agent_name:?} is disabled (enabled: false)",
                    spec.id
                )));
            }
            tasks.push(PlannedTask {
                agent_name,
                timeout_secs: spec
                    .timeout_secs
                    .or(file.defaults.timeout_secs)
                    .unwrap_or(taskfile::DEFAULT_TASK_TIMEOUT_SEC),
                verify: spec.verify.clone().or_else(|| file.defaults.verify.clone()),
                verify_timeout_secs: spec
                    .verify_timeout_secs
                    .or(file.defaults.verify_timeout_secs)
                    .unwrap_or(DEFAULT_VERIFY_TIMEOUT_SEC),
                max_attempts: spec
                    .max_attempts
                    .or(file.defaults.max_attempts)
                    .unwrap_or(taskfile::DEFAULT_MAX_ATTEMPTS),
                limits: {
                    let d = crate::git::collect::ChangeLimits::default();
                    crate::git::collect::ChangeLimits {
                        max_file_bytes: options
                            .max_file_bytes
                            .or(spec.max_file_bytes)
                            .or(file.defaults.max_file_bytes)
                            .unwrap_or(d.max_file_bytes),
                        max_change_bytes: options
                            .max_change_bytes
                            .or(spec.max_change_bytes)
                            .or(file.defaults.max_change_bytes)
                            .unwrap_or(d.max_change_bytes),
                    }
                },
                profile,
                spec: spec.clone(),
            });
        }
        check_programs(&tasks)?;
        let verifier = match &file.verifier {
            Some(v) => Some(expand_profile(v, "$.verifier", &|n| std::env::var(n).ok())?),
            None => None,
        };
        let run_id = RunId::new();
        let run_dir = repo.runs_dir().join(run_id.as_str());
        Ok(Plan {
            run_id,
            repo,
            base,
            base_rev,
            tasks,
            verifier,
            options,
            run_dir,
            task_file_text: String::new(),
            priors: BTreeMap::new(),
        })
    }

    /// Folder of the run's worktrees.
    pub fn worktree_path(&self, task: &TaskId) -> PathBuf {
        self.run_dir.join("worktrees").join(task.as_str())
    }

    pub fn scratch_path(&self, task: &TaskId) -> PathBuf {
        self.run_dir.join("scratch").join(task.as_str())
    }
}

/// Profiles by name: the file's own plus the built-in ones it does not override, env expanded.
pub fn resolve_agents(
    file: &TaskFile,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, AgentProfile>, PlanError> {
    let mut out = BTreeMap::new();
    for name in taskfile::BUILTIN_AGENTS {
        if let Some(p) = crate::agent::builtin_profile(name) {
            out.insert(name.to_string(), p);
        }
    }
    for (name, profile) in &file.agents {
        out.insert(
            name.clone(),
            expand_profile(profile, &format!("$.agents.{name}"), lookup)?,
        );
    }
    Ok(out)
}

fn expand_profile(
    profile: &AgentProfile,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<AgentProfile, PlanError> {
    let mut p = profile.clone();
    for (k, v) in p.env.iter_mut() {
        let from_env = v.contains("${");
        *v = taskfile::expand_env(v, lookup)
            .map_err(|e| PlanError::Invalid(format!("{path}.env.{k}: {e}")))?;
        // Values taken from the environment or named like credentials stay out of every log.
        if from_env || crate::redact::is_secret_name(k) {
            crate::redact::register(v);
        }
    }
    Ok(p)
}

/// A missing agent program is a broken environment: say so before anything is created,
/// instead of failing every task. Commands relative to the worktree (`./x.sh`) are checked
/// when the task starts.
fn check_programs(tasks: &[PlannedTask]) -> Result<(), PlanError> {
    let mut checked = std::collections::BTreeSet::new();
    for t in tasks {
        let cmd = t.profile.command.as_str();
        if !checked.insert((t.agent_name.clone(), cmd.to_string())) {
            continue;
        }
        let relative_to_worktree = cmd.contains('/') && !Path::new(cmd).is_absolute();
        if relative_to_worktree {
            continue;
        }
        if crate::agent::codex::is_codex(&t.profile) || cmd == "codex" {
            if let Err(e) = crate::agent::codex::find_program(cmd) {
                return Err(PlanError::Invalid(format!("agent {:?}: {e}", t.agent_name)));
            }
            continue;
        }
        if crate::which::find_program(cmd).is_err() {
            return Err(PlanError::Invalid(format!(
                "agent {:?}: cannot find its command {cmd:?} ({}); nothing was run",
                t.agent_name,
                if cmd.contains('/') {
                    "no such file"
                } else {
                    "not on PATH"
                }
            )));
        }
    }
    Ok(())
}

/// Resolves `cwd` of a profile against the worktree.
pub fn agent_cwd(profile: &AgentProfile, worktree: &Path) -> PathBuf {
    match &profile.cwd {
        Some(c) if Path::new(c).is_absolute() => PathBuf::from(c),
        Some(c) => worktree.join(c),
        None => worktree.to_path_buf(),
    }
}

/// Whether the profile's protocol needs detection (the built-in `codex` profile).
pub fn needs_detection(profile: &AgentProfile) -> bool {
    profile.protocol == Protocol::Auto
}
