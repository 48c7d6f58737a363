//! The real Codex CLI (0.153.4 over `mcp-server`, 0.169.0 and 0.171.0 over `app-server`) driven by fanout
//! against the scripted model server. The binaries come from `scripts/install-agents.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::model_server::{self, ModelServer, Reply};

const OLD: &str = "0.153.4";
const NEW: &str = "0.169.0";
/// The newest Codex on npm when it was pinned.
const NEWEST: &str = "0.171.0";

/// The pinned Codex launcher of `version`; a missing one fails the test with the fix.
fn codex_bin(version: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents")
        .join(format!("codex-{version}"))
        .join("node_modules/.bin/codex");
    assert!(
        p.is_file(),
        "Codex {version} is not installed at {}: run scripts/install-agents.sh first",
        p.display()
    );
    p
}

/// git's output, untrimmed (git isolated from the machine's configuration).
fn git(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&crate::support::git(dir, args).stdout).into_owned()
}

fn init_repo(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README.md"), "hello\n").expect("write");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "base"]);
}

/// A user Codex home whose config points at `port`.
fn user_home(port: u16) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tmp");
    std::fs::write(
        home.path().join("config.toml"),
        model_server::codex_config_for_port(port),
    )
    .expect("write");
    home
}

struct RunOutcome {
    report: Value,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl RunOutcome {
    fn task(&self, id: &str) -> &Value {
        self.report["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id))
            .unwrap_or_else(|| {
                panic!(
                    "no task {id} in the report:\n{}\n{}",
                    self.stdout, self.stderr
                )
            })
    }
}

/// One `fanout run` of these tests at a time: each starts up to four Codex processes, and the
/// CI machines have two cores.
static RUN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `fanout run` with the built-in `codex` profile resolved to `codex_bin(version)`.
fn fanout_run(repo: &Path, tasks: &Value, version: &str, home: &Path) -> RunOutcome {
    fanout_run_with(repo, tasks, &codex_bin(version), home)
}

/// `fanout run` with the built-in `codex` profile resolved to `bin`.
fn fanout_run_with(repo: &Path, tasks: &Value, bin: &Path, home: &Path) -> RunOutcome {
    let dir = tempfile::tempdir().expect("tmp");
    let tasks_file = dir.path().join("tasks.json");
    let report_file = dir.path().join("report.json");
    std::fs::write(
        &tasks_file,
        serde_json::to_string_pretty(tasks).expect("json"),
    )
    .expect("write");
    let _one_at_a_time = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["run", "--repo"])
        .arg(repo)
        .arg("--tasks")
        .arg(&tasks_file)
        .args(["--jobs", "4", "--no-readback", "--quiet", "--report"])
        .arg(&report_file)
        .env("FANOUT_CODEX_BIN", bin)
        .env("CODEX_HOME", home)
        .output()
        .expect("fanout runs");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = std::fs::read_to_string(&report_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no report ({:?}):\n{stdout}\n{stderr}", out.status));
    RunOutcome {
        report,
        stdout,
        stderr,
        elapsed,
    }
}

fn edit_task(i: usize) -> Value {
    json!({
        "id": format!("t{i}"),
        "prompt": format!("Write the marker file.\nCMD: printf 'edited by task {i}\\n' > file{i}.txt"),
        "paths": [format!("file{i}.txt")],
    })
}

fn eight_tasks_merge(version: &str, protocol: &str) {
    let server = ModelServer::start_default();
    let home = user_home(server.port());
    let repo = tempfile::tempdir().expect("tmp");
    init_repo(repo.path());
    // No `agents` section: the built-in `codex` profile picks the protocol from the version.
    let tasks = json!({"version": 1, "tasks": (1..=8).map(edit_task).collect::<Vec<_>>()});
    let run = fanout_run(repo.path(), &tasks, version, home.path());
    for i in 1..=8 {
        let t = run.task(&format!("t{i}"));
        assert_eq!(t["status"], "merged", "task t{i}: {t:#}\n{}", run.stderr);
        // fanout's own Landlock confinement held Codex.
        assert_eq!(t["sandbox"], "fully_enforced", "{t:#}");
        let agent = &t["agent"];
        assert_eq!(agent["protocol"], protocol, "{agent:#}");
        assert_eq!(agent["version"], version, "{agent:#}");
        assert!(
            agent["thread_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{agent:#}"
        );
        assert!(agent["commands_run"].as_u64() >= Some(1), "{agent:#}");
        assert!(
            agent["tokens"]["total_tokens"].as_u64() > Some(0),
            "{agent:#}"
        );
        assert!(
            agent["last_message"]
                .as_str()
                .is_some_and(|m| m.starts_with("done:")),
            "{agent:#}"
        );
    }
    let branch = run.report["integration_branch"]
        .as_str()
        .expect("integration branch")
        .to_string();
    assert_eq!(run.report["sandbox"]["mode"], "landlock");
    let files = git(repo.path(), &["ls-tree", "-r", "--name-only", &branch]);
    let mut expected: Vec<String> = (1..=8).map(|i| format!("file{i}.txt")).collect();
    expected.push("README.md".into());
    expected.sort();
    let mut got: Vec<String> = files.lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, expected);
    for i in 1..=8 {
        let text = git(repo.path(), &["show", &format!("{branch}:file{i}.txt")]);
        assert_eq!(text, format!("edited by task {i}\n"));
    }
    // The user's checkout is untouched.
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
    eprintln!(
        "codex {version}: 8 tasks, --jobs 4, in {:.1} s",
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn codex_0153_mcp_eight_tasks_merge() {
    eight_tasks_merge(OLD, "mcp");
}

#[test]
fn codex_0169_app_server_eight_tasks_merge() {
    eight_tasks_merge(NEW, "codex-app-server");
}

#[test]
fn codex_0171_app_server_eight_tasks_merge() {
    eight_tasks_merge(NEWEST, "codex-app-server");
}

/// A follow-up through the runner's verify-feedback loop: the first attempt fails the verify
/// command, the feedback goes to the same thread, and the model's second command fixes it.
fn feedback_follow_up(version: &str) {
    let server = ModelServer::start(|req| {
        if req.after_tool_output() {
            return Reply::Message("done".into());
        }
        let all_user: Vec<String> = req
            .input()
            .iter()
            .filter(|i| i["role"] == "user")
            .filter_map(|i| i["content"][0]["text"].as_str().map(str::to_string))
            .collect();
        let latest = req.last_user_text();
        if latest.contains("CMD: ") {
            return Reply::Command(req.command().unwrap_or_default());
        }
        // Feedback turn: only the same thread still holds the first prompt's FOLLOWUP line.
        match all_user
            .iter()
            .find_map(|t| t.split("FOLLOWUP: ").nth(1).map(|s| s.trim().to_string()))
        {
            Some(cmd) => Reply::Command(cmd),
            None => Reply::Message("lost the thread".into()),
        }
    });
    let home = user_home(server.port());
    let repo = tempfile::tempdir().expect("tmp");
    init_repo(repo.path());
    let tasks = json!({"version": 1, "defaults": {"max_attempts": 2}, "tasks": [{
        "id": "fix",
        "prompt": "CMD: echo one > first.txt\nFOLLOWUP: echo two > second.txt",
        "verify": "test -f second.txt",
    }]});
    let run = fanout_run(repo.path(), &tasks, version, home.path());
    let t = run.task("fix");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", run.stderr);
    assert_eq!(t["attempts"], 2, "{t:#}");
    assert_eq!(
        t["attempt_history"].as_array().map(Vec::len),
        Some(2),
        "{t:#}"
    );
    let branch = run.report["integration_branch"]
        .as_str()
        .expect("branch")
        .to_string();
    assert_eq!(
        git(repo.path(), &["show", &format!("{branch}:first.txt")]),
        "one\n"
    );
    assert_eq!(
        git(repo.path(), &["show", &format!("{branch}:second.txt")]),
        "two\n"
    );
    assert!(t["agent"]["commands_run"].as_u64() >= Some(2), "{t:#}");
}

#[test]
fn codex_0153_follow_up_on_same_thread() {
    feedback_follow_up(OLD);
}

#[test]
fn codex_0169_follow_up_on_same_thread() {
    feedback_follow_up(NEW);
}

#[test]
fn codex_0171_follow_up_on_same_thread() {
    feedback_follow_up(NEWEST);
}

/// The same at the session level: two turns, one thread, two edits.
fn session_follow_up(version: &str, protocol: &str) {
    use fanout::agent::{base_env, AgentContext, Session};
    use fanout::eventlog::EventLog;
    use fanout::ids::TaskId;
    use fanout::process::SpawnSpec;
    use fanout::sandbox::{NetPolicy, Policy, ReadAccess};
    use fanout::taskfile::{AgentProfile, Protocol};

    let server = ModelServer::start_default();
    let home = user_home(server.port());
    let work = tempfile::tempdir().expect("tmp");
    let wt = work.path().join("wt");
    let scratch = work.path().join("scratch");
    std::fs::create_dir_all(&wt).expect("mkdir");
    std::fs::create_dir_all(&scratch).expect("mkdir");
    init_repo(&wt);
    let task = TaskId::parse("s1").expect("id");
    let mut profile = AgentProfile::new(Protocol::Auto, &codex_bin(version).display().to_string());
    profile.startup_timeout_sec = 60.0;
    let mut env = base_env(&task, &wt, &scratch);
    env.insert("CODEX_HOME".into(), home.path().display().to_string());
    let events_path = work.path().join("events.jsonl");
    let ctx = AgentContext {
        resume_thread: None,
        task_id: task.clone(),
        worktree: wt.clone(),
        scratch: scratch.clone(),
        protocol: profile.protocol,
        codex: None,
        meter: Default::default(),
        spawn: SpawnSpec {
            self_exe: PathBuf::from(env!("CARGO_BIN_EXE_fanout")),
            policy: Policy {
                enforce: true,
                writable: vec![wt.clone(), scratch.clone()],
                read: ReadAccess::All,
                net: NetPolicy::ConnectPorts(vec![443]),
                min_abi: 3,
                run_as: None,
                overlay: None,
                caches: None,
                isolate_net: false,
                egress: None,
                hide: Vec::new(),
            },
            program: profile.command.clone(),
            args: Vec::new(),
            cwd: wt.clone(),
            env,
            env_remove: Vec::new(),
            stderr_log: work.path().join("stderr.log"),
            status_file: work.path().join("status.json"),
        },
        profile,
        events: EventLog::open(&events_path).expect("events"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let deadline = || tokio::time::Instant::now() + Duration::from_secs(60);
        let mut s = Session::start(ctx).await.expect("session starts");
        let first = s
            .turn("CMD: echo a > a.txt", deadline())
            .await
            .expect("turn 1");
        assert_eq!(first.message.as_deref(), Some("done: echo a > a.txt"));
        let thread = s.info().thread_id.expect("thread id");
        let second = s
            .turn("CMD: echo b > b.txt", deadline())
            .await
            .expect("turn 2");
        assert_eq!(second.message.as_deref(), Some("done: echo b > b.txt"));
        let info = s.info();
        assert_eq!(info.protocol, protocol);
        assert_eq!(info.thread_id.as_deref(), Some(thread.as_str()));
        assert_eq!(info.commands_run, 2, "{info:?}");
        s.shutdown().await;
    });
    assert_eq!(std::fs::read_to_string(wt.join("a.txt")).expect("a"), "a\n");
    assert_eq!(std::fs::read_to_string(wt.join("b.txt")).expect("b"), "b\n");
    // The second model request carried the first turn's history: the same conversation.
    let reqs = server.requests();
    let last = reqs.last().expect("requests");
    let history = serde_json::to_string(&last.input()).expect("json");
    assert!(
        history.contains("echo a > a.txt"),
        "the follow-up lost the thread"
    );
    // Codex's files stayed in the task's scratch, and secrets never reached the event log.
    assert!(scratch.join("codex-home/config.toml").is_file());
    let log = std::fs::read_to_string(&events_path).expect("log");
    assert!(log.contains("\"kind\":\"notification\""));
}

#[test]
fn codex_0153_session_follow_up() {
    session_follow_up(OLD, "mcp");
}

#[test]
fn codex_0169_session_follow_up() {
    session_follow_up(NEW, "codex-app-server");
}

#[test]
fn codex_0171_session_follow_up() {
    session_follow_up(NEWEST, "codex-app-server");
}

fn model_down(version: &str) {
    let home = user_home(model_server::dead_port());
    let repo = tempfile::tempdir().expect("tmp");
    init_repo(repo.path());
    let tasks = json!({"version": 1, "tasks": [edit_task(1)]});
    let run = fanout_run(repo.path(), &tasks, version, home.path());
    let t = run.task("t1");
    assert_eq!(t["status"], "failed", "{t:#}");
    let error = t["error"].as_str().unwrap_or("");
    // Through the egress proxy (the default `--net isolated`) Codex reaches the proxy, which
    // answers 502 naming the dead upstream; straight to it, Codex's own connection fails.
    assert!(
        error.contains("Connection failed")
            || (error.contains("502") && error.contains("model upstream")),
        "{error}"
    );
    assert!(
        run.elapsed < Duration::from_secs(60),
        "took {:?}",
        run.elapsed
    );
    eprintln!(
        "codex {version}: dead model endpoint -> failed in {:.1} s: {error}",
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn codex_0153_model_down_fails_fast() {
    model_down(OLD);
}

#[test]
fn codex_0169_model_down_fails_fast() {
    model_down(NEW);
}

#[test]
fn codex_0171_model_down_fails_fast() {
    model_down(NEWEST);
}

/// Processes whose environment holds `FANOUT_TASK_ID=<task>` and whose executable is named `exe`
/// (empty: any).
fn task_processes(task: &str, exe: &str) -> Vec<i32> {
    let needle = format!("FANOUT_TASK_ID={task}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        let name = std::fs::read_link(entry.path().join("exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        if exe.is_empty() || name == exe {
            out.push(pid);
        }
    }
    out
}

fn killed_mid_turn(version: &str) {
    // Ids of its own per version: tests run at once, and processes are found by task id.
    let victim = format!("victim-{}", version.replace('.', "_"));
    let hung = Arc::new(AtomicBool::new(false));
    let flag = hung.clone();
    let server = ModelServer::start(move |req| {
        if req.last_user_text().contains("VICTIM") && !req.after_tool_output() {
            flag.store(true, Ordering::SeqCst);
            return Reply::Hang;
        }
        model_server::run_prompt_command(req)
    });
    let home = user_home(server.port());
    let repo = tempfile::tempdir().expect("tmp");
    init_repo(repo.path());
    let mut tasks: Vec<Value> = (1..=3).map(edit_task).collect();
    tasks.push(json!({"id": victim, "prompt": "VICTIM\nCMD: echo never > victim.txt"}));
    let tasks = json!({"version": 1, "tasks": tasks});
    // Kill the native Codex binary of the victim task as soon as its model request is in.
    let victim_id = victim.clone();
    let killer = std::thread::spawn(move || {
        // The run may first wait for another test's run: count from the model request.
        let mut end = Instant::now() + Duration::from_secs(600);
        while Instant::now() < end {
            if hung.load(Ordering::SeqCst) {
                end = end.min(Instant::now() + Duration::from_secs(30));
                let pids = task_processes(&victim_id, "codex");
                if !pids.is_empty() {
                    for pid in &pids {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(*pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    return pids.len();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        0
    });
    let run = fanout_run(repo.path(), &tasks, version, home.path());
    assert!(
        killer.join().unwrap_or(0) > 0,
        "no Codex process of the victim task was found"
    );
    let report = run.task(&victim);
    assert_eq!(report["status"], "failed", "{report:#}");
    for i in 1..=3 {
        assert_eq!(
            run.task(&format!("t{i}"))["status"],
            "merged",
            "{}",
            run.stderr
        );
    }
    assert!(
        task_processes(&victim, "").is_empty(),
        "processes of the killed task remain"
    );
}

#[test]
fn codex_0153_killed_mid_turn() {
    killed_mid_turn(OLD);
}

#[test]
fn codex_0169_killed_mid_turn() {
    killed_mid_turn(NEW);
}

#[test]
fn codex_0171_killed_mid_turn() {
    killed_mid_turn(NEWEST);
}

fn turn_timeout(version: &str) {
    // An id of its own per version: tests run at once, and processes are found by task id.
    let slow_id = format!("slow-{}", version.replace('.', "_"));
    let server = ModelServer::start(|req| {
        if req.last_user_text().contains("SLOW") {
            return Reply::Hang;
        }
        model_server::run_prompt_command(req)
    });
    let home = user_home(server.port());
    let repo = tempfile::tempdir().expect("tmp");
    init_repo(repo.path());
    let tasks = json!({
        "version": 1,
        "agents": {"codex": {"protocol": "auto", "command": "codex", "tool_timeout_sec": 4}},
        "tasks": [
            {"id": slow_id, "prompt": "SLOW\nCMD: echo x > slow.txt"},
            edit_task(1),
        ],
    });
    let run = fanout_run(repo.path(), &tasks, version, home.path());
    let slow = run.task(&slow_id);
    assert_eq!(slow["status"], "timed_out", "{slow:#}\n{}", run.stderr);
    assert_eq!(run.task("t1")["status"], "merged");
    assert!(
        run.elapsed < Duration::from_secs(40),
        "took {:?}",
        run.elapsed
    );
    assert!(
        task_processes(&slow_id, "").is_empty(),
        "the timed-out agent's processes remain"
    );
    eprintln!(
        "codex {version}: hung model, tool_timeout_sec 4 -> timed_out, run {:.1} s",
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn codex_0153_turn_timeout() {
    turn_timeout(OLD);
}

#[test]
fn codex_0169_turn_timeout() {
    turn_timeout(NEW);
}

#[test]
fn codex_0171_turn_timeout() {
    turn_timeout(NEWEST);
}

#[test]
fn doctor_reports_both_codex_versions() {
    use fanout::doctor::{self, Level};
    for (version, protocol) in [
        (OLD, "mcp"),
        (NEW, "codex-app-server"),
        (NEWEST, "codex-app-server"),
    ] {
        let bin = codex_bin(version).display().to_string();
        let checks = doctor::codex_checks(&bin, None);
        assert_eq!(checks[0].level, Level::Ok, "{}", checks[0]);
        let line = checks[0].to_string();
        assert!(
            line.contains(&format!("Codex {version}"))
                && line.contains(protocol)
                && line.contains("0.154.x to 0.171.x"),
            "{line}"
        );
    }
    // `mcp-server` asked of 0.169 (Codex's own mcp_servers table) is an error; of 0.153 it is fine.
    for (version, errors) in [(OLD, 0), (NEW, 1)] {
        let home = tempfile::tempdir().expect("tmp");
        let config = format!(
            "[mcp_servers.codex]\ncommand = {:?}\nargs = [\"mcp-server\"]\n",
            codex_bin(version).display().to_string()
        );
        std::fs::write(home.path().join("config.toml"), config).expect("write");
        let checks = doctor::codex_config_checks(Some(home.path()));
        let found = checks.iter().filter(|c| c.level == Level::Error).count();
        assert_eq!(found, errors, "{checks:?}");
        if errors > 0 {
            assert!(
                checks
                    .iter()
                    .any(|c| c.message.contains("removed in 0.154.0")),
                "{checks:?}"
            );
        }
    }
}

/// A stand-in `codex` whose `--version` names `version` and whose app-server answers
/// `initialize` with `result` (`%ID%` becomes the request's id), then stays.
fn codex_answering(dir: &Path, version: &str, result: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let answer = format!(r#"{{"id":%ID%,"result":{result}}}"#);
    let script = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = --version ]; then echo 'codex-cli {version}'; exit 0; fi\n\
         read -r line\n\
         id=$(printf '%s' \"$line\" | sed -n 's/.*\"id\": *\\([0-9][0-9]*\\).*/\\1/p')\n\
         echo '{answer}' | sed \"s/%ID%/$id/\"\n\
         sleep 30\n"
    );
    let bin = dir.join("codex");
    std::fs::write(&bin, script).expect("write");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

/// An app-server of a version fanout does not know is refused at `initialize`, in words that
/// name the supported range; so is one that names no version.
#[test]
fn an_app_server_protocol_fanout_does_not_know_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().expect("tmp");
    let bins = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(bins.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (n, (version, result, needle)) in [
        (
            "0.180.0",
            r#"{"userAgent":"fanout/0.180.0 (Debian 12; x86_64) (fanout; 0.1.0)"}"#,
            "Codex 0.180.0 speaks an app-server protocol fanout does not know",
        ),
        (
            "0.171.0",
            r#"{"codexHome":"/tmp"}"#,
            "names no Codex version",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = bins.path().join(n.to_string());
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = codex_answering(&dir, version, result);
        let repo = tempfile::tempdir().expect("tmp");
        init_repo(repo.path());
        let tasks = json!({"version": 1, "tasks": [edit_task(1)]});
        let run = fanout_run_with(repo.path(), &tasks, &bin, home.path());
        let t = run.task("t1");
        assert_eq!(t["status"], "failed", "{t:#}");
        let error = t["error"].as_str().unwrap_or("");
        assert!(error.contains(needle), "{error}");
        assert!(error.contains("0.154.x to 0.171.x"), "{error}");
        assert!(
            run.elapsed < Duration::from_secs(25),
            "took {:?}",
            run.elapsed
        );
    }
}
