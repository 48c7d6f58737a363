/*!
The plan of a run: the validated task file resolved against the repository and the command
line (base commit, agent profiles with their environment expanded, per-task settings). Every
check that can fail because of the user's input happens here, before anything is created.
*/

mod candidates;
mod checks;
mod error;
mod identity;
mod launch;
pub mod overlap;
pub mod passed_env;
mod planned_task;
mod sandbox_options;
mod select;
pub use candidates::PlannedCandidate;
pub use checks::*;
pub use identity::*;
pub use launch::Launch;
pub use sandbox_options::{NetChoice, SandboxOptions};
pub use select::{keep_selected, selection, split_ids, SelectError};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::git::repo::UserRepo;
use crate::ids::{RunId, TaskId};
use crate::taskfile::{self, AgentProfile, Protocol, TaskFile, VerifyCommand};

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
    /// `--on-conflict`: overrides the task file's `defaults.on_conflict`.
    pub on_conflict: Option<taskfile::OnConflict>,
    /// `--overlap`: overrides the task file's `defaults.overlap`.
    pub overlap: Option<taskfile::OverlapChoice>,
    /// `--squash`: the integration is one commit listing the tasks.
    pub squash: bool,
    /// How task workspaces are made: `--workspace`, else the task file's
    /// `defaults.workspace`, else auto (resolved when the plan is built).
    pub workspace: WorkspaceChoice,
    /// Where an explicit workspace choice came from (`--workspace`, `FANOUT_WORKSPACE`, the
    /// MCP tool's `workspace`, a resumed run): it overrides `defaults.workspace`.
    pub workspace_source: Option<String>,
}

pub use crate::taskfile::WorkspaceChoice;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadbackMode {
    /// Read back when the verifier's binary is found; warn once when it is not.
    Auto,
    /// A missing verifier is an error before anything starts.
    Require,
    Off,
}

pub use error::PlanError;
pub use planned_task::{PlannedTask, TaskCore, TaskOptions};

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
    pub priors: BTreeMap<String, crate::state::Prior>,
    /// The task file's `integrate` gate.
    pub integrate: Option<IntegrateGate>,
    /// What a conflicting task does (command line over task file, default `fail`).
    pub on_conflict: taskfile::OnConflict,
    /// Overlap before dispatch (issue 21): what tasks whose `paths` overlap do (command line
    /// over task file, default `serialize`).
    pub overlap: taskfile::OverlapChoice,
    /// The task file's `merge` rules, compiled.
    pub merge_rules: crate::git::merge_rules::MergeRules,
    /// Said right after the run's first line (uncommitted changes left out, skipped includes).
    pub warnings: Vec<String>,
    /// The task file's `caches_fill`: fills the shared caches once, before any agent.
    pub caches_fill: Option<CachesFill>,
    /// The ids `--only` kept (all the task file's tasks when `None`).
    pub only: Option<Vec<String>>,
    /// The integration branch's head before this attempt (`fanout retry`): the new
    /// integration is made its descendant.
    pub earlier_integration: Option<git2::Oid>,
    /// Each task's report from the run's last report (a continued run): a carried-over
    /// outcome keeps its details (attempts, gates, durations).
    pub earlier_reports: BTreeMap<String, crate::report::TaskReport>,
    // Accounting and budgets (issue 23):
    /// The task file's `pricing`.
    pub pricing: crate::usage::pricing::Pricing,
    /// The task file's `budget` (with `fanout resume --budget` over it).
    pub budget: crate::usage::budget::Budget,
}

/// The command that fills the shared caches (`caches_fill`), and its time.
#[derive(Clone, Debug)]
pub struct CachesFill {
    pub command: VerifyCommand,
    pub timeout_secs: f64,
}

/// The integration gate: a verify command run on the integration result.
#[derive(Clone, Debug)]
pub struct IntegrateGate {
    pub verify: VerifyCommand,
    pub timeout_secs: f64,
    /// How many times a failing run of the command runs again (0: none).
    pub verify_retries: u32,
    /// Integration repair: rounds a culprit's agent gets to fix the integration (0: none).
    pub repair: u32,
    /// The shared setup layer the gate's checkout gets (`defaults.setup`).
    pub setup: Option<SetupLayerPlan>,
}

/// A setup run once and shared as a layer: the command, its inputs, its time.
#[derive(Clone, Debug, PartialEq)]
pub struct SetupLayerPlan {
    pub command: VerifyCommand,
    /// Globs of the files the layer depends on (`None`: the whole start tree).
    pub inputs: Option<Vec<String>>,
    pub timeout_secs: f64,
}

pub const DEFAULT_VERIFY_TIMEOUT_SEC: f64 = 600.0;

impl Plan {
    pub fn build(options: RunOptions) -> Result<Plan, PlanError> {
        crate::redact::register_process_env();
        let repo = UserRepo::open(&options.repo)?;
        // Templates expand over the tracked files at the base; the expanded file is what the
        // run saves, so `fanout resume` runs the same tasks.
        let rev = |file_base: Option<&str>| -> String {
            let rev = options.base.as_deref().or(file_base).unwrap_or("HEAD");
            rev.to_string()
        };
        let (text, file) = taskfile::load_expanded(
            &options.tasks_file,
            &|file_base| tracked_files(&repo, &rev(file_base)),
            &|file_base, path, limit| tracked_content(&repo, &rev(file_base), path, limit),
        )?;
        let mut plan = Self::from_parts(file, repo, options)?;
        plan.task_file_text = text;
        Ok(plan)
    }

    pub fn from_parts(
        file: TaskFile,
        repo: UserRepo,
        mut options: RunOptions,
    ) -> Result<Plan, PlanError> {
        let base_rev = options
            .base
            .clone()
            .or_else(|| file.base.clone())
            .unwrap_or_else(|| "HEAD".into());
        let base = repo.resolve_base(&base_rev)?;
        let mut agents = resolve_agents(&file, &|n| std::env::var(n).ok())?;
        // The built-in `claude-code` MCP server runs the same `claude` as the verifier (its
        // command is the verifier's as written: expanding the profile changes only values).
        let claude = claude_command(file.verifier.as_ref());
        for p in agents.values_mut() {
            if let Some(s) = p.mcp_servers.get_mut(taskfile::CLAUDE_CODE_SERVER) {
                if s.command.is_none() {
                    s.command = Some(claude.clone());
                }
            }
        }
        if let Some(a) = &options.agent {
            if !agents.contains_key(a) {
                return Err(PlanError::Invalid(format!(
                    "--agent {a:?} names no agent (known: {})",
                    agents.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let author = commit_author(&repo.repo, file.commit_author.as_deref());
        let mut warnings = uncommitted_warning(&repo, base);
        let include_globs = crate::include::globs(&repo.workdir, &file.include);
        let (include, include_warnings) =
            crate::include::find(&repo.repo, &repo.workdir, &include_globs)
                .map_err(|e| PlanError::Invalid(crate::error_chain(&e)))?;
        warnings.extend(include_warnings);
        warnings.extend(crate::usage::budget::unpriced_money_warning(
            &file.budget,
            &file.pricing,
        ));
        let include = std::sync::Arc::new(include);
        // Sized once: a doubling vector of 10 000 planned tasks (about 200 bytes each) keeps up
        // to 2 MB unused for the whole run.
        let mut tasks: Vec<PlannedTask> = Vec::with_capacity(file.tasks.len());
        // An agent's profile and launch, shared by its tasks.
        type SharedProfile = (std::sync::Arc<AgentProfile>, Launch);
        let mut profiles: std::collections::HashMap<String, SharedProfile> =
            std::collections::HashMap::new();
        if let Some(t) = file.tasks.iter().find(|t| t.template) {
            return Err(PlanError::Invalid(format!(
                "task {}: a template (for_each) must be expanded against the repository first",
                t.id
            )));
        }
        for spec in &file.tasks {
            let agent_name = options
                .agent
                .clone()
                .or_else(|| spec.agent.clone())
                .or_else(|| file.defaults.agent.clone())
                .unwrap_or_else(|| "codex".into());
            let uses_caches = !file.caches.is_empty();
            // One profile and one launch per agent, shared by its tasks (and `codex --version`
            // asked once); each task gets its own uid.
            let (profile, launch) = match profiles.get(&agent_name) {
                Some(known) => known.clone(),
                None => {
                    let mut profile = agents.get(&agent_name).cloned().ok_or_else(|| {
                        PlanError::Invalid(format!(
                            "task {}: unknown agent {agent_name:?}",
                            spec.id
                        ))
                    })?;
                    // The launch of every task decided now: nothing probes a protocol at run
                    // time.
                    let codex = crate::agent::codex::resolve_launch(&mut profile);
                    let launch = Launch::resolve(
                        &profile,
                        codex,
                        tasks.len(),
                        uses_caches,
                        &options.sandbox,
                    );
                    let known = (std::sync::Arc::new(profile), launch);
                    profiles.insert(agent_name.clone(), known.clone());
                    known
                }
            };
            let launch = launch.for_task(tasks.len(), uses_caches, &options.sandbox);
            if !profile.enabled {
                return Err(PlanError::Invalid(format!(
                    "task {}: agent {agent_name:?} is disabled (enabled: false)",
                    spec.id
                )));
            }
            let candidates = candidates::resolve(
                spec.id.as_str(),
                spec.candidates
                    .as_deref()
                    .or(file.defaults.candidates.as_deref()),
                &candidates::CandidateContext {
                    agents: &agents,
                    forced_agent: options.agent.as_deref(),
                    task_agent: &agent_name,
                    index: tasks.len(),
                    uses_caches,
                    sandbox: &options.sandbox,
                },
            )?;
            // A task with candidates is reported under its first candidate's agent until one
            // is chosen.
            let (agent_name, profile, launch) = match candidates.first() {
                Some(c) => (
                    c.agent_name.clone(),
                    std::sync::Arc::new(c.profile.clone()),
                    c.launch.clone(),
                ),
                None => (agent_name, profile, launch),
            };
            let resolved = TaskOptions {
                select: spec.select.or(file.defaults.select).unwrap_or_default(),
                timeout_secs: spec
                    .timeout_secs
                    .or(file.defaults.timeout_secs)
                    .unwrap_or(taskfile::DEFAULT_TASK_TIMEOUT_SEC),
                verify: spec.verify.clone().or_else(|| file.defaults.verify.clone()),
                verify_timeout_secs: spec
                    .verify_timeout_secs
                    .or(file.defaults.verify_timeout_secs)
                    .unwrap_or(DEFAULT_VERIFY_TIMEOUT_SEC),
                verify_retries: spec
                    .verify_retries
                    .or(file.defaults.verify_retries)
                    .unwrap_or(0),
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
                review: spec.review.clone().or_else(|| file.defaults.review.clone()),
                network: spec
                    .network
                    .clone()
                    .or_else(|| file.defaults.network.clone())
                    .unwrap_or_default(),
                diagnose: file.defaults.diagnose.unwrap_or(false),
                claude: claude.clone(),
                caches: file.caches.clone(),
                author: author.clone(),
                include: include.clone(),
                setup: spec.setup.clone().or_else(|| file.defaults.setup.clone()),
                // `inputs` and `once` go with the command they were given beside.
                setup_inputs: if spec.setup.is_some() {
                    spec.setup_inputs.clone()
                } else {
                    file.defaults.setup_inputs.clone()
                },
                setup_once: if spec.setup.is_some() {
                    spec.setup_once
                } else {
                    file.defaults.setup_once
                }
                .unwrap_or(true),
                setup_timeout_secs: spec
                    .setup_timeout_secs
                    .or(file.defaults.setup_timeout_secs)
                    .unwrap_or(DEFAULT_VERIFY_TIMEOUT_SEC),
                protect: spec
                    .protect
                    .clone()
                    .or_else(|| file.defaults.protect.clone())
                    .unwrap_or_default(),
            };
            // Tasks resolved alike (the usual case: options from `defaults`) share one copy.
            let shared_options = match tasks.last() {
                Some(prev) if *prev.options == resolved => prev.options.clone(),
                _ => std::sync::Arc::new(resolved),
            };
            tasks.push(PlannedTask {
                candidates,
                launch,
                agent_name,
                profile,
                options: shared_options,
                spec: spec.into(),
            });
        }
        if tasks.iter().any(|t| !t.candidates.is_empty()) {
            check_programs(&PlannedTask::as_run(&tasks))?;
        } else {
            check_programs(&tasks)?;
        }
        let verifier = match &file.verifier {
            Some(v) => Some(expand_profile(v, "$.verifier", &|n| std::env::var(n).ok())?),
            None => None,
        };
        let run_id = RunId::new();
        let run_dir = repo.runs_dir().join(run_id.as_str());
        let integrate = file.integrate.as_ref().map(|g| IntegrateGate {
            verify: g.verify.clone(),
            timeout_secs: g.timeout_secs.unwrap_or(DEFAULT_VERIFY_TIMEOUT_SEC),
            verify_retries: g.verify_retries.unwrap_or(0),
            repair: g.repair.unwrap_or(0),
            // The gate's checkout gets the layer of `defaults.setup` (a shared one only).
            setup: file
                .defaults
                .setup
                .clone()
                .filter(|_| file.defaults.setup_once != Some(false))
                .map(|command| SetupLayerPlan {
                    command,
                    inputs: file.defaults.setup_inputs.clone(),
                    timeout_secs: file
                        .defaults
                        .setup_timeout_secs
                        .unwrap_or(DEFAULT_VERIFY_TIMEOUT_SEC),
                }),
        });
        if let Some(g) = &integrate {
            check_gate_program(&g.verify)?;
        }
        let on_conflict = options
            .on_conflict
            .or(file.defaults.on_conflict)
            .unwrap_or_default();
        let overlap = options
            .overlap
            .or(file.defaults.overlap)
            .unwrap_or_default();
        if options.workspace_source.is_none() {
            if let Some(w) = file.defaults.workspace {
                options.workspace = w;
            }
        }
        let caches_fill = file.caches_fill.as_ref().map(|c| CachesFill {
            command: c.clone(),
            timeout_secs: file
                .defaults
                .setup_timeout_secs
                .unwrap_or(DEFAULT_VERIFY_TIMEOUT_SEC),
        });
        let rules: Vec<_> = file
            .merge
            .iter()
            .map(|r| (r.paths.clone(), r.strategy))
            .collect();
        let merge_rules =
            crate::git::merge_rules::MergeRules::new(&rules).map_err(PlanError::Invalid)?;
        Ok(Plan {
            caches_fill,
            integrate,
            on_conflict,
            overlap,
            merge_rules,
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
            warnings,
            only: None,
            earlier_integration: None,
            earlier_reports: BTreeMap::new(),
            pricing: file.pricing.clone(),
            budget: file.budget.clone(),
        })
    }

    /// Folder of the run's worktrees.
    /// Keeps only the tasks `ids` select (see [`selection`]); the run saves the selection so
    /// that `fanout resume` and `fanout retry` run the same tasks.
    pub fn select(&mut self, ids: &[String], with_deps: bool) -> Result<(), PlanError> {
        let pairs: Vec<(String, Vec<String>)> = self
            .tasks
            .iter()
            .map(|t| {
                (
                    t.id().to_string(),
                    t.spec.depends_on.iter().map(|d| d.to_string()).collect(),
                )
            })
            .collect();
        let keep = selection(&pairs, ids, with_deps)?;
        self.tasks = keep_selected(std::mem::take(&mut self.tasks), &keep);
        self.only = Some(self.tasks.iter().map(|t| t.id().to_string()).collect());
        Ok(())
    }

    pub fn worktree_path(&self, task: &TaskId) -> PathBuf {
        crate::run_dir::RunDir::new(&self.run_dir)
            .worktrees_link()
            .join(task.as_str())
    }

    pub fn scratch_path(&self, task: &TaskId) -> PathBuf {
        crate::run_dir::RunDir::new(&self.run_dir)
            .scratch_link()
            .join(task.as_str())
    }
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
