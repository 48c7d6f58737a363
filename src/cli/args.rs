//! The command line as clap parses it: exactly what the user typed.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `--net` and `--read` are spelled and parsed the same for `run` and `sandbox`.
pub use crate::sandbox::cli::{NetArg, ReadArg};

#[derive(Parser, Debug)]
#[command(
    name = "fanout",
    version,
    about = "Run many coding agents in parallel, each confined to its own git worktree, then verify and merge what they did",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every task of a task file and merge the results into fanout/<run>/merged.
    Run(RunArgs),
    /// Integrate the hand-overs of a sharded run's shards as one run (docs/shards.md).
    Combine(CombineArgs),
    /// Check a task file and print every problem with its location.
    Validate(ValidateArgs),
    /// Show runs, or one run's tasks.
    Status(StatusArgs),
    /// Print one task's diff (`--stat`, `--word-diff`).
    Diff(DiffArgs),
    /// Print one task's agent events, one readable line each (`--json`: the raw lines).
    Log(LogArgs),
    /// Print the JSON Schema of a fanout file format (`tasks`; `events` is not available yet).
    Schema(SchemaArgs),
    /// Write a run's HTML report or JUnit file again from its event stream.
    Report(ReportArgs),
    /// Commit a workspace fanout kept because collecting it failed, onto the task's branch.
    Collect(CollectArgs),
    /// Continue an interrupted run: verified and ended tasks are kept, the rest run again.
    Resume(ResumeArgs),
    /// Run tasks of a finished run again (default: every task that did not merge or end with
    /// no changes) into the same run, and integrate them with the rest.
    Retry(RetryArgs),
    /// Bring a run's integration branch into a branch (default: the current one), only as a
    /// fast-forward or a clean merge, never over uncommitted changes.
    Merge(MergeArgs),
    /// Remove a run's leftover worktrees (after a crash) and, with --branches, its branches.
    Clean(CleanArgs),
    /// Check git, the Landlock ABI, the agent binaries and the verifier.
    Doctor(DoctorArgs),
    /// Run any command under the same Landlock confinement and supervisor as agents.
    Sandbox(crate::sandbox::cli::SandboxArgs),
    /// Serve fanout over MCP on stdin/stdout, or streamable HTTP with --http (tools fanout_start, fanout_wait, fanout_status,
    /// fanout_diff, fanout_cancel, fanout_merge).
    Mcp(McpArgs),
    /// Print the configuration that makes Claude Code or Codex start `fanout mcp` (or, with
    /// --http URL, connect to one).
    McpConfig(McpConfigArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct RepoArg {
    /// The repository (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
}

/// `--workspace` of `fanout run`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkspaceArg {
    /// Overlay when this machine allows it (probed once per run), else worktree.
    Auto,
    /// A shared read-only checkout under a per-task upper folder: costs what a task changes.
    Overlay,
    /// A full git worktree (checkout) per task.
    Worktree,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SandboxArg {
    On,
    Off,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadbackArg {
    Auto,
    Require,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The task file (tasks.json, version 1).
    #[arg(long, short = 't', value_name = "FILE")]
    pub tasks: PathBuf,
    /// At most this many agents at once (default: number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Base revision (default: the task file's `base`, else HEAD).
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Use this agent profile for every task.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Keep the task worktrees after the run.
    #[arg(long)]
    pub keep_worktrees: bool,
    /// Also write the JSON report here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Landlock confinement of agents; `off` runs them unconfined (with a warning).
    #[arg(long, value_enum, default_value = "on")]
    pub sandbox: SandboxArg,
    /// How task workspaces are made (docs/workspaces.md); default: the task file's
    /// `defaults.workspace`, else auto.
    #[arg(long, value_enum, env = "FANOUT_WORKSPACE")]
    pub workspace: Option<WorkspaceArg>,
    /// Network policy inside the sandbox: by default each task's own network namespace, whose
    /// only way out is fanout's egress proxy (docs/sandbox.md).
    #[arg(long, value_enum, default_value = "isolated")]
    pub net: NetArg,
    /// `strict` limits reads to system folders, the repository, the worktree and scratch.
    #[arg(long, value_enum, default_value = "all")]
    pub read: ReadArg,
    /// Read-back of every changed file through the verifier: `require` makes a missing verifier an error.
    #[arg(long, value_enum, default_value = "auto")]
    pub readback: ReadbackArg,
    /// Turn read-back off.
    #[arg(long, conflicts_with = "readback")]
    pub no_readback: bool,
    /// Print only warnings and the final table (of a run of more than 50 tasks: its summary line).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Refuse to start with less free space than this (MB) on the filesystem of `.git`; 0 turns the check off.
    #[arg(long, value_name = "MB", default_value_t = crate::preflight::DEFAULT_MIN_FREE_MB)]
    pub min_free_mb: u64,
    /// Require at least this Landlock ABI (testing the fail-closed path).
    #[arg(long, hide = true, default_value_t = 3)]
    pub min_abi: u32,
    /// Largest new or changed file a task may commit (default 50 MiB; overrides the task file).
    #[arg(long, value_name = "BYTES")]
    pub max_file_bytes: Option<u64>,
    /// Largest total of a task's new and changed files (default 500 MiB; overrides the task file).
    #[arg(long, value_name = "BYTES")]
    pub max_change_bytes: Option<u64>,
    /// Commit raw content for paths the repository stores through a filter driver fanout does
    /// not run (Git LFS, custom `filter=`); without it such a change fails its task.
    #[arg(long)]
    pub allow_unfiltered: bool,
    /// When fanout runs as root: the user (name or uid) agents run as, with no capabilities
    /// (default `nobody`).
    #[arg(long, value_name = "USER|UID")]
    pub agent_user: Option<String>,
    /// A task that conflicts with what was merged before it: `fail`, `retry[=N]` to run it
    /// again from the integration head (N times, default 1), or `resolve[=N]` to give the
    /// conflict to the task's own agent (N rounds, default 1). Overrides `defaults.on_conflict`.
    #[arg(long, value_name = "fail|retry[=N]|resolve[=N]", value_parser = parse_on_conflict)]
    pub on_conflict: Option<crate::taskfile::OnConflict>,
    /// Tasks whose `paths` overlap: `serialize` (run them one after another, each from the
    /// verified result of the one before) or `parallel`. Overrides `defaults.overlap`.
    #[arg(long, value_name = "serialize|parallel", value_parser = parse_overlap)]
    pub overlap: Option<crate::taskfile::OverlapChoice>,
    /// Make the integration one commit whose message lists the merged tasks.
    #[arg(long)]
    pub squash: bool,
    /// Run only these tasks of the task file (repeatable, or a comma list; generated ids of
    /// `for_each` too).
    #[arg(long, value_name = "ID,…")]
    pub only: Vec<String>,
    /// With --only: also run the tasks the selected ones depend on (transitively).
    #[arg(long, requires = "only")]
    pub with_deps: bool,
    #[command(flatten)]
    pub shards: ShardArgs,
}

/// Shards (docs/shards.md): which part of the task file this run is, and its hand-over.
#[derive(clap::Args, Debug, Default)]
pub struct ShardArgs {
    /// Run only shard K of N (1-based) of the task file.
    #[arg(long, value_name = "K/N", value_parser = parse_shard, conflicts_with = "shard_from_env")]
    pub shard: Option<crate::shard::Shard>,
    /// The shard from the engine's environment (GitHub matrix FANOUT_SHARD_INDEX/COUNT, Slurm
    /// SLURM_ARRAY_TASK_ID, Kubernetes JOB_COMPLETION_INDEX); N when the engine gives no count.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    pub shard_from_env: Option<u32>,
    /// The run's id (every shard and the combine share it: e.g. the CI run's id).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Refuse to run unless the base resolves to this commit (the one every shard uses).
    #[arg(long, value_name = "SHA")]
    pub base_commit: Option<String>,
    /// After the run, write the shard's hand-over (verified commits, report, events) to this
    /// git bundle file.
    #[arg(long, value_name = "PATH")]
    pub bundle: Option<PathBuf>,
    /// After the run, push the shard's hand-over to this remote under refs/fanout/<run>/.
    #[arg(long, value_name = "REMOTE")]
    pub push: Option<String>,
}

fn parse_shard(s: &str) -> Result<crate::shard::Shard, String> {
    crate::shard::Shard::parse(s).map_err(|e| e.to_string())
}

/// `fanout combine`: the shards' hand-overs integrated as one run.
#[derive(clap::Args, Debug)]
pub struct CombineArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The task file the shards ran.
    #[arg(long, short = 't', value_name = "FILE")]
    pub tasks: PathBuf,
    /// Hand-over bundle files, or folders holding `*.bundle` files.
    #[arg(long, value_name = "BUNDLE|DIR", num_args = 1.., required_unless_present = "from_remote", conflicts_with = "from_remote")]
    pub from: Vec<PathBuf>,
    /// Read the hand-overs the shards pushed to this remote (with --run).
    #[arg(long, value_name = "REMOTE", requires = "run")]
    pub from_remote: Option<String>,
    /// The run id the shards shared (required with --from-remote; checked with --from).
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,
    /// Integrate what was handed over even when shards are missing (their tasks stay `missing`).
    #[arg(long)]
    pub allow_missing: bool,
    /// Refuse unless the shards' base is this revision.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// A task that conflicts: `fail`, or `retry[=N]` to run it again here from the integration head.
    #[arg(long, value_name = "fail|retry[=N]", value_parser = parse_on_conflict)]
    pub on_conflict: Option<crate::taskfile::OnConflict>,
    /// At most this many agents at once for tasks run again (default: number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Also write the JSON report here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// When fanout runs as root: the user agents of tasks run again run as.
    #[arg(long, value_name = "USER|UID")]
    pub agent_user: Option<String>,
    /// Print only warnings and the final table (of a run of more than 50 tasks: its summary line).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Refuse to start with less free space than this (MB); 0 turns the check off.
    #[arg(long, value_name = "MB", default_value_t = crate::preflight::DEFAULT_MIN_FREE_MB)]
    pub min_free_mb: u64,
}

fn parse_overlap(s: &str) -> Result<crate::taskfile::OverlapChoice, String> {
    crate::taskfile::OverlapChoice::parse(s)
        .ok_or_else(|| format!("expected serialize or parallel, found {s:?}"))
}

fn parse_on_conflict(s: &str) -> Result<crate::taskfile::OnConflict, String> {
    crate::taskfile::OnConflict::parse(s)
}

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Also check the agent profiles and the verifier of this task file.
    #[arg(long, short = 't', value_name = "FILE")]
    pub tasks: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    #[arg(long, short = 't', value_name = "FILE")]
    pub tasks: PathBuf,
    /// Also check the repository and the base revision.
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Expand templates (`for_each`) against the repository (`--repo`, default: the current
    /// folder), print the generated tasks and check them like written ones.
    #[arg(long)]
    pub expand: bool,
    /// Check the selection `fanout run --only` would make (generated ids with --expand).
    #[arg(long, value_name = "ID,…")]
    pub only: Vec<String>,
    /// With --only: the selected tasks' dependencies too.
    #[arg(long, requires = "only")]
    pub with_deps: bool,
    /// Print each task's shard out of N and how many tasks each shard gets.
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// A run id or `last` (default: list runs).
    pub run: Option<String>,
    /// Print the run's report.json.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// A run id or `last`.
    pub run: String,
    /// The task id.
    pub task: String,
    /// Colour: `auto` (on a terminal, unless NO_COLOR is set), `always`, `never`.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorArg,
    /// Per-file insertions and deletions with a bar, instead of the patch.
    #[arg(long, conflicts_with = "word_diff")]
    pub stat: bool,
    /// Show changed words inside lines: `[-old-]{+new+}`, or coloured spans with colour.
    #[arg(long)]
    pub word_diff: bool,
    /// Candidates: show candidate K's change (its branch `fanout/<run>/task/<id>/candidate-K`).
    #[arg(long, value_name = "K")]
    pub candidate: Option<u32>,
}

/// The outputs of a run's event stream (run and resume).
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// One event per line on stdout (schema: `fanout schema events`); the table goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Also write a JUnit XML file (one test case per task).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Also write a self-contained HTML report.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Colour on the terminal: auto (a terminal without NO_COLOR), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorArg,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

impl ColorArg {
    /// Whether to colour: `always`/`never` as said; `auto` on a terminal when `NO_COLOR` is
    /// unset or empty (an explicit `--color always` wins over `NO_COLOR`, as no-color.org asks).
    pub fn enabled(self, is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
        match self {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => is_terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }

    /// [`ColorArg::enabled`] for standard output and this process's environment.
    pub fn for_stdout(self) -> bool {
        use std::io::IsTerminal;
        self.enabled(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        )
    }
}

#[derive(clap::Args, Debug)]
pub struct CollectArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// A run id or `last`.
    pub run: String,
    pub task: String,
    /// Largest new or changed file (default 50 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_file_bytes: Option<u64>,
    /// Largest total of new and changed files (default 500 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_change_bytes: Option<u64>,
    /// Commit raw content for paths stored through a filter driver fanout does not run.
    #[arg(long)]
    pub allow_unfiltered: bool,
}

#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The run id (see `fanout status`) or `last`.
    pub run: String,
    #[command(flatten)]
    pub go_on: ContinueArgs,
    /// Continue with this budget over the task file's (issue 23): `run.usd=5,task.tokens=200000`
    /// (keys task.tokens, task.usd, task.seconds, run.tokens, run.usd), a JSON object shaped
    /// like the task file's `budget`, or `@FILE` holding one. A finished run continues too: the
    /// tasks a budget stopped or skipped run again.
    #[arg(long, value_name = "LIMITS")]
    pub budget: Option<String>,
}

/// What `resume` and `retry` take besides the run: how the continued run goes.
#[derive(clap::Args, Debug)]
pub struct ContinueArgs {
    /// At most this many agents at once (default: as the run had).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Also write the JSON report here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Print only warnings and the final table (of a run of more than 50 tasks: its summary line).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Refuse to start with less free space than this (MB) on the filesystem of `.git`; 0 turns the check off.
    #[arg(long, value_name = "MB", default_value_t = crate::preflight::DEFAULT_MIN_FREE_MB)]
    pub min_free_mb: u64,
}

#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The run id (see `fanout status`) or `last`.
    pub run: String,
    /// The tasks to run again, separate or as comma lists (default: every task that did not
    /// merge or end with no changes).
    pub ids: Vec<String>,
    /// Also run again a named task that merged.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub go_on: ContinueArgs,
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// A run id or `last`.
    pub run: String,
    /// The branch to merge into (default: the branch checked out in the repository).
    #[arg(long, value_name = "BRANCH")]
    pub into: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct CleanArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// A run id or `last` (default: every run that is not running).
    pub run: Option<String>,
    /// Also delete the run's branches and its folder (branches whose work is on no other
    /// branch stay, with their run folder, unless --force).
    #[arg(long)]
    pub branches: bool,
    /// Also delete branches whose commits are on no other branch.
    #[arg(long)]
    pub force: bool,
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Only runs that started longer ago than this (`7d`, `12h`, `30m`).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Also remove the repository's shared caches (`caches` in the task file); not while a
    /// run is running.
    #[arg(long)]
    pub caches: bool,
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// A run id or `last`.
    pub run: String,
    /// The task id.
    pub task: String,
    /// Print the raw JSON lines instead.
    #[arg(long)]
    pub json: bool,
    /// Only the last N events.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Cut each event's text after this many characters (0: never cut).
    #[arg(long, value_name = "CHARS", default_value_t = 300)]
    pub max_chars: usize,
    /// Also show streaming deltas (one event per chunk of a message), folded away by default.
    #[arg(long)]
    pub deltas: bool,
}

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// Which format: `tasks` (tasks.json version 1) or `events` (one line of `--json` and of
    /// the run's `run-events.jsonl`).
    #[arg(value_enum)]
    pub which: SchemaKind,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    Tasks,
    Events,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The run id or `last`.
    pub run: String,
    /// Write the self-contained HTML report here.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Write the JUnit XML file here.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct McpArgs {
    /// Serve the streamable HTTP transport on ADDR (endpoint `/mcp`) instead of stdio; a bearer
    /// token is required (`--token-file` or FANOUT_MCP_TOKEN).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// With --http: read the bearer token from this file (else FANOUT_MCP_TOKEN).
    #[arg(long, value_name = "FILE", requires = "http")]
    pub token_file: Option<PathBuf>,
    /// With --http: allow an address other than loopback (the token is then all that guards it).
    #[arg(long, requires = "http")]
    pub allow_remote: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum McpClient {
    /// An `.mcp.json` entry for Claude Code (`claude --mcp-config FILE`, or the project's `.mcp.json`).
    Claude,
    /// A `[mcp_servers.fanout]` table for Codex's `config.toml`.
    Codex,
}

#[derive(clap::Args, Debug)]
pub struct McpConfigArgs {
    /// The client the snippet is for.
    #[arg(value_enum)]
    pub client: McpClient,
    /// Connect to a `fanout mcp --http` at this URL (e.g. http://build:8931/mcp) instead of
    /// starting fanout; the token comes from the client's FANOUT_MCP_TOKEN.
    #[arg(long, value_name = "URL")]
    pub http: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_is_respected_by_auto_only() {
        let set = Some(std::ffi::OsStr::new("1"));
        let empty = Some(std::ffi::OsStr::new(""));
        assert!(ColorArg::Auto.enabled(true, None));
        assert!(ColorArg::Auto.enabled(true, empty));
        assert!(!ColorArg::Auto.enabled(true, set));
        assert!(!ColorArg::Auto.enabled(false, None));
        assert!(ColorArg::Always.enabled(false, set));
        assert!(!ColorArg::Never.enabled(true, None));
    }
}
