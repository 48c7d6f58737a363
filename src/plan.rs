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
    /// `--on-conflict`: overrides the task file's `defaults.on_conflict`.
    pub on_conflict: Option<taskfile::OnConflict>,
    /// `--squash`: the integration is one commit listing the tasks.
    pub squash: bool,
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
            },
            agent_name: "exec".into(),
            profile: crate::taskfile::AgentProfile::new(crate::taskfile::Protocol::Exec, "true"),
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
            include: Default::default(),
        }
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
    pub priors: BTreeMap<String, crate::state::Prior>,
    /// The task file's `integrate` gate.
    pub integrate: Option<IntegrateGate>,
    /// What a conflicting task does (command line over task file, default `fail`).
    pub on_conflict: taskfile::OnConflict,
    /// Said right after the run's first line (uncommitted changes left out, skipped includes).
    pub warnings: Vec<String>,
}

/// The integration gate: a verify command run on the integration result.
#[derive(Clone, Debug)]
pub struct IntegrateGate {
    pub verify: VerifyCommand,
    pub timeout_secs: f64,
}

pub const DEFAULT_VERIFY_TIMEOUT_SEC: f64 = 600.0;

/// A warning when the checkout has uncommitted changes (tracked or untracked, not ignored)
/// while the run starts from the commit checked out: the tasks will not see them.
fn uncommitted_warning(repo: &UserRepo, base: git2::Oid) -> Vec<String> {
    let head = repo.repo.head().ok().and_then(|h| h.target());
    if head != Some(base) {
        return Vec::new();
    }
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .include_ignored(false)
        .recurse_untracked_dirs(false);
    let Ok(statuses) = repo.repo.statuses(Some(&mut opts)) else {
        return Vec::new();
    };
    let paths: Vec<String> = statuses
        .iter()
        .filter(|s| s.status() != git2::Status::CURRENT)
        .filter_map(|s| s.path().map(str::to_string))
        .collect();
    if paths.is_empty() {
        return Vec::new();
    }
    let shown = paths.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let more = if paths.len() > 5 {
        format!(" and {} more", paths.len() - 5)
    } else {
        String::new()
    };
    vec![format!(
        "the checkout has uncommitted changes the run does not include ({shown}{more}): tasks start from the last commit; commit them first to include them"
    )]
}

/// Who task commits are authored by: the identity git would use in this repository
/// (`user.name`/`user.email`), else the task file's `commit.author`, else fanout (`None`).
pub fn commit_author(repo: &git2::Repository, from_file: Option<&str>) -> Option<(String, String)> {
    let configured = git_config(repo).and_then(|c| {
        let name = c.get_string("user.name").ok()?;
        let email = c.get_string("user.email").ok()?;
        (!name.trim().is_empty() && !email.trim().is_empty()).then_some((name, email))
    });
    configured.or_else(|| from_file.and_then(taskfile::parse_author))
}

/// The repository's configuration as git reads it: libgit2 ignores `GIT_CONFIG_GLOBAL`,
/// `GIT_CONFIG_SYSTEM` and `GIT_CONFIG_NOSYSTEM`, git (and CI setups) rely on them.
fn git_config(repo: &git2::Repository) -> Option<git2::Config> {
    use git2::{Config, ConfigLevel};
    let mut cfg = Config::new().ok()?;
    let mut add = |path: std::path::PathBuf, level| {
        if path.is_file() {
            let _ = cfg.add_file(&path, level, false);
        }
    };
    match std::env::var_os("GIT_CONFIG_SYSTEM") {
        _ if std::env::var_os("GIT_CONFIG_NOSYSTEM").is_some() => {}
        Some(p) => add(p.into(), ConfigLevel::System),
        None => {
            if let Ok(p) = Config::find_system() {
                add(p, ConfigLevel::System)
            }
        }
    }
    match std::env::var_os("GIT_CONFIG_GLOBAL") {
        Some(p) => add(p.into(), ConfigLevel::Global),
        None => {
            for p in [Config::find_xdg(), Config::find_global()]
                .into_iter()
                .flatten()
            {
                let level = if p.ends_with(".gitconfig") {
                    ConfigLevel::Global
                } else {
                    ConfigLevel::XDG
                };
                add(p, level);
            }
        }
    }
    add(repo.commondir().join("config"), ConfigLevel::Local);
    cfg.snapshot().ok()
}

impl Plan {
    pub fn build(options: RunOptions) -> Result<Plan, PlanError> {
        crate::redact::register_process_env();
        let repo = UserRepo::open(&options.repo)?;
        // Templates expand over the tracked files at the base; the expanded file is what the
        // run saves, so `fanout resume` runs the same tasks.
        let (text, file) = taskfile::load_expanded(&options.tasks_file, &|file_base| {
            let rev = options.base.as_deref().or(file_base).unwrap_or("HEAD");
            tracked_files(&repo, rev)
        })?;
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
        let author = commit_author(&repo.repo, file.commit_author.as_deref());
        let mut warnings = uncommitted_warning(&repo, base);
        let include_globs = crate::include::globs(&repo.workdir, &file.include);
        let (include, include_warnings) =
            crate::include::find(&repo.repo, &repo.workdir, &include_globs)
                .map_err(|e| PlanError::Invalid(crate::error_chain(&e)))?;
        warnings.extend(include_warnings);
        let include = std::sync::Arc::new(include);
        let mut tasks = Vec::new();
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
                review: spec.review.clone().or_else(|| file.defaults.review.clone()),
                diagnose: file.defaults.diagnose.unwrap_or(false),
                claude: "claude".into(),
                profile,
                caches: file.caches.clone(),
                author: author.clone(),
                include: include.clone(),
                setup: spec.setup.clone().or_else(|| file.defaults.setup.clone()),
                setup_timeout_secs: spec
                    .setup_timeout_secs
                    .or(file.defaults.setup_timeout_secs)
                    .unwrap_or(DEFAULT_VERIFY_TIMEOUT_SEC),
                spec: spec.clone(),
            });
        }
        check_programs(&tasks)?;
        let verifier = match &file.verifier {
            Some(v) => Some(expand_profile(v, "$.verifier", &|n| std::env::var(n).ok())?),
            None => None,
        };
        // The built-in `claude-code` MCP server runs the same `claude` as the verifier.
        let claude = claude_command(verifier.as_ref());
        for t in &mut tasks {
            t.claude = claude.clone();
            if let Some(s) = t.profile.mcp_servers.get_mut(taskfile::CLAUDE_CODE_SERVER) {
                if s.command.is_none() {
                    s.command = Some(claude.clone());
                }
            }
        }
        let run_id = RunId::new();
        let run_dir = repo.runs_dir().join(run_id.as_str());
        let integrate = file.integrate.as_ref().map(|g| IntegrateGate {
            verify: g.verify.clone(),
            timeout_secs: g.timeout_secs.unwrap_or(DEFAULT_VERIFY_TIMEOUT_SEC),
        });
        if let Some(g) = &integrate {
            check_gate_program(&g.verify)?;
        }
        let on_conflict = options
            .on_conflict
            .or(file.defaults.on_conflict)
            .unwrap_or_default();
        Ok(Plan {
            integrate,
            on_conflict,
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

/// The paths of the files tracked at `rev` (blobs and links; not submodules), sorted.
pub fn tracked_files(repo: &UserRepo, rev: &str) -> Result<Vec<String>, String> {
    let base = repo.resolve_base(rev).map_err(|e| crate::error_chain(&e))?;
    let tree = repo
        .repo
        .find_commit(base)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read the tree of {rev}: {e}"))?;
    let mut out = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            if let Some(name) = entry.name() {
                out.push(format!("{dir}{name}"));
            }
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| format!("cannot walk the tree of {rev}: {e}"))?;
    out.sort();
    Ok(out)
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
    for (name, server) in p.mcp_servers.iter_mut() {
        for (k, v) in server.env.iter_mut() {
            let from_env = v.contains("${");
            *v = taskfile::expand_env(v, lookup).map_err(|e| {
                PlanError::Invalid(format!("{path}.mcp_servers.{name}.env.{k}: {e}"))
            })?;
            if from_env || crate::redact::is_secret_name(k) {
                crate::redact::register(v);
            }
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

/// The `claude` program fanout runs for Claude Code (the built-in `claude-code` MCP server,
/// the review gate, diagnoses): the verifier profile's command when it is a `claude`, else
/// `claude` on PATH.
pub fn claude_command(verifier: Option<&AgentProfile>) -> String {
    verifier
        .map(|v| v.command.as_str())
        .filter(|c| {
            c.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("claude"))
        })
        .unwrap_or("claude")
        .to_string()
}

/// A gate command that cannot start would fail on every integration and blame no task: say so
/// before anything runs. Commands relative to the checkout (`./x.sh`) are checked when it runs.
fn check_gate_program(verify: &VerifyCommand) -> Result<(), PlanError> {
    let argv = verify.argv();
    let Some(cmd) = argv.first() else {
        return Err(PlanError::Invalid("integrate.verify: empty command".into()));
    };
    if cmd.contains('/') && !Path::new(cmd).is_absolute() {
        return Ok(());
    }
    crate::which::find_program(cmd).map(|_| ()).map_err(|_| {
        PlanError::Invalid(format!(
            "integrate.verify: cannot find its command {cmd:?} ({}); nothing was run",
            if cmd.contains('/') {
                "no such file"
            } else {
                "not on PATH"
            }
        ))
    })
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
