//! Shared helpers for the integration tests: temp repositories with git isolated from the
//! machine's configuration, running the built `fanout` binary, reading reports and trees.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn fanout_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fanout")
}

pub fn fake_agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fake-agent")
}

/// git with the machine's global and system configuration shut out.
pub fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        // Repositories handed to the unprivileged user are still read by the tests as root.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        // Looking must not write: `git status` would otherwise refresh the user's index.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn git_text(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git(dir, args).stdout)
        .trim()
        .to_string()
}

/// Who runs fanout in a test. Security and data-loss tests run both ways: CI runs as root,
/// users run as themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The user the tests run as (root in CI).
    Invoker,
    /// An unprivileged uid: when the tests run as root, fanout is started through `setpriv`
    /// as [`UNPRIVILEGED_UID`] on a temp folder handed over to that uid; otherwise the invoker
    /// already is an ordinary user.
    Unprivileged,
}

/// The uid (and gid) of the second, unprivileged pass when the tests run as root.
pub const UNPRIVILEGED_UID: u32 = 65534;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Runner {
    /// Whether fanout really changes uid for this runner.
    pub fn drops_privileges(self) -> bool {
        self == Runner::Unprivileged && is_root()
    }
}

/// Gives `dir` and everything beneath it to `uid` (lchown: links are not followed).
pub fn chown_tree(dir: &Path, uid: u32) {
    let _ = std::os::unix::fs::lchown(dir, Some(uid), Some(uid));
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        if !meta.is_dir() {
            return;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

/// Defines `mod $name { as_invoker, as_unprivileged }` running `$body(Runner)` both ways.
#[macro_export]
macro_rules! both_ways {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn as_invoker() {
                super::$body($crate::support::Runner::Invoker)
            }
            #[test]
            fn as_unprivileged() {
                super::$body($crate::support::Runner::Unprivileged)
            }
        }
    };
}

/// Defines `mod $name` running `$body(Runner)` both ways in both kinds of workspace
/// (`--workspace overlay` and `--workspace worktree` on every `fanout run` of the test).
#[macro_export]
macro_rules! every_way {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn overlay_as_invoker() {
                $crate::support::in_workspace("overlay", || {
                    super::$body($crate::support::Runner::Invoker)
                })
            }
            #[test]
            fn overlay_as_unprivileged() {
                $crate::support::in_workspace("overlay", || {
                    super::$body($crate::support::Runner::Unprivileged)
                })
            }
            #[test]
            fn worktree_as_invoker() {
                $crate::support::in_workspace("worktree", || {
                    super::$body($crate::support::Runner::Invoker)
                })
            }
            #[test]
            fn worktree_as_unprivileged() {
                $crate::support::in_workspace("worktree", || {
                    super::$body($crate::support::Runner::Unprivileged)
                })
            }
        }
    };
}

thread_local! {
    /// The `--workspace` every `fanout run` of this test thread gets (see [`in_workspace`]).
    static WORKSPACE: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
    /// Variables set for every fanout of this test thread (see [`with_env`]).
    static EXTRA_ENV: std::cell::RefCell<Vec<(&'static str, &'static str)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with `key=value` in the environment of every fanout it starts on this thread.
pub fn with_env<T>(key: &'static str, value: &'static str, f: impl FnOnce() -> T) -> T {
    EXTRA_ENV.with(|e| e.borrow_mut().push((key, value)));
    let out = f();
    EXTRA_ENV.with(|e| e.borrow_mut().retain(|(k, _)| *k != key));
    out
}

/// Runs `f` with overlay lowers on disk (`FANOUT_LOWER_IN_MEMORY=0`) instead of in memory.
pub fn lowers_on_disk<T>(f: impl FnOnce() -> T) -> T {
    with_env("FANOUT_LOWER_IN_MEMORY", "0", f)
}

/// Lowers of run `run_id` left in the memory filesystem (there should be none after a run).
pub fn memory_lowers_of(run_id: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("fanout-lower-{run_id}-")))
        .collect()
}

/// Runs `f` with `--workspace mode` added to every `fanout run` it makes on this thread.
pub fn in_workspace<T>(mode: &'static str, f: impl FnOnce() -> T) -> T {
    WORKSPACE.with(|w| w.set(Some(mode)));
    let out = f();
    WORKSPACE.with(|w| w.set(None));
    out
}

/// Mounts of overlay workspaces anywhere in this machine's mount table (there should be none
/// once a run ended: they live only in the tasks' private mount namespaces).
pub fn overlay_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("mountinfo")) else {
            continue;
        };
        out.extend(
            text.lines()
                .filter(|l| l.contains(" - overlay ") && l.contains(&dir))
                .map(str::to_string),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// A temporary repository with one commit.
pub struct TestRepo {
    pub tmp: tempfile::TempDir,
    pub path: PathBuf,
    pub runner: Runner,
}

impl TestRepo {
    /// `files` source files `src/file_NN.txt`, each with ten numbered lines.
    pub fn with_files(files: usize) -> TestRepo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("repo");
        std::fs::create_dir_all(path.join("src")).expect("mkdir");
        git(&path, &["init", "--quiet", "--initial-branch=main"]);
        for i in 0..files {
            let body: String = (1..=10).map(|l| format!("file {i} line {l}\n")).collect();
            std::fs::write(path.join(format!("src/file_{i:02}.txt")), body).expect("write");
        }
        std::fs::write(path.join(".gitignore"), "*.log\nbuild/\n").expect("write");
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "--quiet", "-m", "initial"]);
        TestRepo {
            tmp,
            path,
            runner: Runner::Invoker,
        }
    }

    /// The same repository, with fanout run by `runner` from now on.
    pub fn run_by(mut self, runner: Runner) -> TestRepo {
        self.runner = runner;
        self
    }

    /// A `Command` for the built fanout binary as this repository's runner: for the
    /// unprivileged pass as root, the temp folder is handed to [`UNPRIVILEGED_UID`] first (again
    /// each time, so files the test wrote since belong to it too) and fanout drops to it.
    pub fn fanout_command(&self) -> Command {
        let mut cmd = if self.runner.drops_privileges() {
            chown_tree(self.tmp.path(), UNPRIVILEGED_UID);
            let home = self.tmp.path().join("home");
            let _ = std::fs::create_dir_all(&home);
            chown_tree(&home, UNPRIVILEGED_UID);
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={UNPRIVILEGED_UID}"))
                .arg(format!("--regid={UNPRIVILEGED_UID}"))
                .arg("--clear-groups")
                .arg("--inh-caps=-all")
                .arg("--bounding-set=-all")
                .arg(fanout_bin())
                .env("HOME", home);
            c
        } else {
            Command::new(fanout_bin())
        };
        cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_SYSTEM", "/dev/null");
        EXTRA_ENV.with(|e| {
            for (k, v) in e.borrow().iter() {
                cmd.env(k, v);
            }
        });
        cmd
    }

    pub fn head(&self) -> String {
        git_text(&self.path, &["rev-parse", "HEAD"])
    }

    pub fn write_tasks(&self, json: &Value) -> PathBuf {
        let p = self.tmp.path().join("tasks.json");
        std::fs::write(&p, serde_json::to_vec_pretty(json).expect("json")).expect("write tasks");
        p
    }

    pub fn write_tasks_text(&self, text: &str) -> PathBuf {
        let p = self.tmp.path().join("tasks.json");
        std::fs::write(&p, text).expect("write tasks");
        p
    }

    pub fn report_path(&self) -> PathBuf {
        self.tmp.path().join("report.json")
    }

    /// Runs `fanout <args> --repo <repo>`.
    pub fn fanout(&self, args: &[&str]) -> Output {
        let mut cmd = self.fanout_command();
        cmd.args(args).arg("--repo").arg(&self.path);
        if let (Some(&"run"), Some(mode)) = (args.first(), WORKSPACE.with(|w| w.get())) {
            cmd.arg("--workspace").arg(mode);
        }
        cmd.output().expect("fanout runs")
    }

    /// `fanout run --tasks F --report R` plus `extra`; returns the output and the parsed report.
    pub fn run(&self, tasks: &Path, extra: &[&str]) -> (Output, Value) {
        let report = self.report_path();
        let _ = std::fs::remove_file(&report);
        let mut args = vec![
            "run",
            "--tasks",
            tasks.to_str().expect("utf-8 path"),
            "--report",
            report.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        let out = self.fanout(&args);
        let value = std::fs::read(&report)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        (out, value)
    }

    /// Everything about the user's checkout that fanout must leave alone: HEAD, branch, index
    /// bytes, config, stash, refs outside `fanout/*`, `git status` with ignored files, and the
    /// mode, mtime and content of every file and folder outside `.git`.
    pub fn snapshot(&self) -> Snapshot {
        let mut files = BTreeMap::new();
        collect_files(&self.path, &self.path, &mut files);
        let refs = git_text(
            &self.path,
            &["for-each-ref", "--format=%(refname) %(objectname)"],
        )
        .lines()
        .filter(|l| !l.starts_with("refs/heads/fanout/"))
        .map(str::to_string)
        .collect();
        Snapshot {
            head: git_text(&self.path, &["rev-parse", "HEAD"]),
            branch: git_text(&self.path, &["symbolic-ref", "-q", "HEAD"]),
            index: std::fs::read(self.path.join(".git/index")).unwrap_or_default(),
            stash: std::fs::read(self.path.join(".git/refs/stash")).unwrap_or_default(),
            config: std::fs::read(self.path.join(".git/config")).unwrap_or_default(),
            refs,
            status: git_text(
                &self.path,
                &[
                    "status",
                    "--porcelain=v1",
                    "--ignored",
                    "--untracked-files=all",
                ],
            ),
            files,
        }
    }

    /// Files of a revision's tree, path → content.
    pub fn tree_files(&self, rev: &str) -> BTreeMap<String, Vec<u8>> {
        let repo = open_repo(&self.path);
        let tree = repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_tree())
            .expect("tree");
        let mut out = BTreeMap::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                let blob = repo.find_blob(entry.id()).expect("blob");
                out.insert(
                    format!("{dir}{}", entry.name().unwrap_or("")),
                    blob.content().to_vec(),
                );
            }
            git2::TreeWalkResult::Ok
        })
        .expect("walk");
        out
    }

    pub fn branches(&self) -> Vec<String> {
        git_text(
            &self.path,
            &["branch", "--list", "--format=%(refname:short)"],
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Linked worktrees still registered.
    pub fn worktrees(&self) -> Vec<String> {
        git_text(&self.path, &["worktree", "list", "--porcelain"])
            .lines()
            .filter_map(|l| l.strip_prefix("worktree "))
            .map(str::to_string)
            .filter(|p| Path::new(p) != self.path)
            .collect()
    }

    /// The run left the user's checkout exactly as `before`, no worktree and no process behind.
    pub fn assert_left_as(&self, before: &Snapshot) {
        assert_eq!(&self.snapshot(), before);
        let mounts = overlay_mounts_under(self.tmp.path());
        assert!(mounts.is_empty(), "overlay mounts left: {mounts:?}");
        assert!(self.worktrees().is_empty(), "{:?}", self.worktrees());
        assert!(
            self.live_processes().is_empty(),
            "{:?}",
            self.live_processes()
        );
    }

    /// Like [`TestRepo::assert_left_as`], for runs that keep a failed task's workspace on purpose.
    pub fn assert_left_as_except_worktrees(&self, before: &Snapshot) {
        assert_eq!(&self.snapshot(), before);
        assert!(
            self.live_processes().is_empty(),
            "{:?}",
            self.live_processes()
        );
    }

    /// Processes whose working directory is inside this test's temp folder.
    /// Also processes of this repository's runs wherever their cwd is (as root, workspaces
    /// live outside the repository): agents carry `FANOUT_RUN_ID` in their environment.
    pub fn live_processes(&self) -> Vec<String> {
        let runs: Vec<String> = std::fs::read_dir(self.path.join(".git/fanout/runs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        processes_matching(|pid, cwd| {
            cwd.starts_with(self.tmp.path())
                || (!runs.is_empty() && {
                    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    env.split(|b| *b == 0).any(|kv| {
                        kv.strip_prefix(b"FANOUT_RUN_ID=")
                            .is_some_and(|v| runs.iter().any(|r| r.as_bytes() == v))
                    })
                })
        })
    }
}

/// Opens a repository with git2 from the tests, also one handed to the unprivileged uid.
pub fn open_repo(path: &Path) -> git2::Repository {
    // SAFETY: a process-wide libgit2 option, set before any repository is opened by this call;
    // the tests read repositories they created themselves.
    #[allow(unsafe_code)]
    unsafe {
        let _ = git2::opts::set_verify_owner_validation(false);
    }
    git2::Repository::open(path).expect("open the test repository")
}

#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub head: String,
    pub branch: String,
    pub index: Vec<u8>,
    pub stash: Vec<u8>,
    pub config: Vec<u8>,
    pub refs: Vec<String>,
    pub status: String,
    pub files: BTreeMap<String, FileState>,
}

/// One entry of the user's checkout: mode, mtime and content (a link's target).
#[derive(Debug, PartialEq)]
pub struct FileState {
    pub mode: u32,
    pub mtime_ns: i128,
    pub content: Vec<u8>,
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeMap<String, FileState>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == ".git") && dir == root {
            continue;
        }
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let content = if meta.file_type().is_symlink() {
            std::fs::read_link(&p)
                .map(|t| t.as_os_str().as_encoded_bytes().to_vec())
                .unwrap_or_default()
        } else if meta.is_file() {
            std::fs::read(&p).unwrap_or_default()
        } else {
            Vec::new()
        };
        let state = FileState {
            mode: meta.mode(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            content,
        };
        let is_dir = meta.is_dir();
        out.insert(rel, state);
        if is_dir {
            collect_files(root, &p, out);
        }
    }
}

/// pids (with their command lines) of live processes whose cwd is beneath `dir`.
pub fn processes_under(dir: &Path) -> Vec<String> {
    processes_matching(|_, cwd| cwd.starts_with(dir))
}

/// pids (with their command lines) of live processes `pick(pid, cwd)` selects.
pub fn processes_matching(pick: impl Fn(u32, &Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        if pick(pid, &cwd) {
            // Zombies already exited; only count processes that still run.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
            {
                continue;
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A task-file `agents` entry for the fake MCP agent.
pub fn fake_mcp_profile(args: &[&str]) -> Value {
    serde_json::json!({
        "protocol": "mcp",
        "command": fake_agent_bin(),
        "args": args,
        "startup_timeout_sec": 20,
        "tool_timeout_sec": 60
    })
}

/// Statuses of a report's tasks, id → status.
pub fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .map(|t| {
                    (
                        t["id"].as_str().unwrap_or("").to_string(),
                        t["status"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == id))
        .unwrap_or(&Value::Null)
}

/// Whether a task's workspace holds `rel`, whatever kind it is: a worktree
/// (`worktrees/<task>/<rel>`) or an overlay, whose changes live in its upper folder
/// (`worktrees/.layers/<task>/upper/<rel>`; the merged view exists only inside the sandbox).
pub fn workspace_has(run_dir: &Path, task: &str, rel: &str) -> bool {
    run_dir.join("worktrees").join(task).join(rel).exists()
        || run_dir
            .join("worktrees/.layers")
            .join(task)
            .join("upper")
            .join(rel)
            .exists()
}

/// Commits a submodule `sub` (a gitlink at the current HEAD, with its `.gitmodules` entry)
/// without cloning anything: its folder stays empty, as in a checkout that never ran
/// `git submodule update`.
pub fn add_submodule(repo: &TestRepo) {
    let head = repo.head();
    std::fs::write(
        repo.path.join(".gitmodules"),
        "[submodule \"sub\"]\n\tpath = sub\n\turl = https://example.invalid/sub.git\n",
    )
    .expect("write");
    git(
        &repo.path,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},sub"),
        ],
    );
    git(&repo.path, &["add", ".gitmodules"]);
    git(&repo.path, &["commit", "--quiet", "-m", "submodule"]);
}

/// The pinned Claude Code binary that `scripts/install-agents.sh` installs.
pub fn claude_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents/claude-code-2.1.332/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-agents.sh (it installs the pinned agents into .agents/)",
        p.display()
    );
    p
}

/// The read-back verifier profile running the pinned `claude mcp serve`.
pub fn claude_verifier() -> Value {
    serde_json::json!({
        "command": claude_bin().display().to_string(),
        "args": ["mcp", "serve"],
        "startup_timeout_sec": 60,
        "tool_timeout_sec": 30
    })
}
