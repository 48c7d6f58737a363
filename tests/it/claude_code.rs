//! Claude Code inside fanout tasks (issue 12): a Codex agent consulting Claude Code through the
//! built-in `claude-code` MCP server, the review gate and diagnoses before feedback. Real
//! binaries: Codex 0.169.0 against the scripted Responses server, Claude Code 2.1.332 against
//! the scripted Anthropic server.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::anthropic_server::AnthropicServer;
use crate::model_server::{self, ModelServer, Reply};
use crate::support::TestRepo;

fn pinned(dir: &str, bin: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents")
        .join(dir)
        .join("node_modules/.bin")
        .join(bin);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-agents.sh first",
        p.display()
    );
    p
}

fn codex_bin() -> PathBuf {
    pinned("codex-0.169.0", "codex")
}

fn claude_bin() -> PathBuf {
    pinned("claude-code-2.1.332", "claude")
}

/// One run of these tests at a time (each starts Codex and Claude Code; two cores).
static RUN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Run {
    report: Value,
    stdout: String,
    stderr: String,
}

impl Run {
    fn task(&self, id: &str) -> &Value {
        self.report["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id))
            .unwrap_or_else(|| panic!("no task {id}:\n{}\n{}", self.stdout, self.stderr))
    }
}

/// `fanout run` with the pinned Codex, a user Codex home pointing at `model_port`, and `env`.
fn fanout_run(repo: &TestRepo, tasks: &Value, model_port: u16, env: &[(&str, String)]) -> Run {
    fanout_run_with(repo, tasks, model_port, env, &["--quiet", "--no-readback"])
}

/// The same with other output options (`--json` puts the event stream on stdout).
fn fanout_run_with(
    repo: &TestRepo,
    tasks: &Value,
    model_port: u16,
    env: &[(&str, String)],
    output: &[&str],
) -> Run {
    let home = tempfile::tempdir().expect("tmp");
    std::fs::write(
        home.path().join("config.toml"),
        model_server::codex_config_for_port(model_port),
    )
    .expect("write");
    let tasks_file = repo.write_tasks(tasks);
    let report_file = repo.report_path();
    let _ = std::fs::remove_file(&report_file);
    let _one = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(crate::support::fanout_bin());
    cmd.args(["run", "--repo"])
        .arg(&repo.path)
        .arg("--tasks")
        .arg(&tasks_file)
        .args(["--jobs", "2", "--report"])
        .arg(&report_file)
        .args(output)
        .env("FANOUT_CODEX_BIN", codex_bin())
        .env("CODEX_HOME", home.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("fanout runs");
    let stdout = crate::support::stdout(&out);
    let stderr = crate::support::stderr(&out);
    let report = std::fs::read_to_string(&report_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no report ({:?}):\n{stdout}\n{stderr}", out.status));
    Run {
        report,
        stdout,
        stderr,
    }
}

/// The worktree Codex works in, from the environment context it sends the model.
fn cwd_of(req: &model_server::Request) -> Option<String> {
    let text = req.body.to_string();
    let start = text.find("<cwd>")? + 5;
    let end = text[start..].find("</cwd>")? + start;
    Some(text[start..end].to_string())
}

/// Outputs of the function calls so far, oldest first.
fn tool_outputs(req: &model_server::Request) -> Vec<String> {
    req.input()
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .map(|i| match &i["output"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The namespace tool Codex offers for an MCP server whose name starts with `prefix`.
fn namespace_of(req: &model_server::Request, prefix: &str) -> Option<String> {
    req.tool_names().into_iter().find(|n| n.starts_with(prefix))
}

#[test]
fn codex_consults_claude_code_inside_the_sandbox() {
    let repo = TestRepo::with_files(1);
    std::fs::write(repo.path.join("NOTES.md"), "the secret word is pineapple\n").expect("write");
    crate::support::git(&repo.path, &["add", "."]);
    crate::support::git(&repo.path, &["commit", "-q", "-m", "notes"]);
    let outside = tempfile::tempdir().expect("tmp");
    let escape = outside.path().join("escaped.txt");
    let anthropic = AnthropicServer::start(|_| crate::anthropic_server::Reply::Text("ok".into()));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    // Commands run while Claude Code's server was not up yet (a loaded machine).
    let waits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = {
        let (escape, seen) = (escape.display().to_string(), seen.clone());
        let waits = waits.clone();
        ModelServer::start(move |req| {
            if let Ok(mut s) = seen.lock() {
                s.push(req.body["tools"].clone());
            }
            let waited = waits.load(std::sync::atomic::Ordering::SeqCst);
            let Some(ns) = namespace_of(req, "mcp__claude") else {
                if waited < 10 {
                    waits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return Reply::Command("sleep 2".into());
                }
                return Reply::Message(format!("no claude tools in {:?}", req.tool_names()));
            };
            let cwd = cwd_of(req).unwrap_or_default();
            let call = |name: &str, arguments: Value| Reply::Function {
                namespace: Some(ns.clone()),
                name: name.into(),
                arguments,
            };
            match tool_outputs(req).len().saturating_sub(waited) {
                0 => call("Read", json!({"file_path": format!("{cwd}/NOTES.md")})),
                1 => call(
                    "Write",
                    json!({"file_path": escape, "content": "escaped\n"}),
                ),
                2 => call(
                    "Write",
                    json!({"file_path": format!("{cwd}/answer.txt"), "content": "pineapple\n"}),
                ),
                _ => Reply::Message("done".into()),
            }
        })
    };
    let tasks = json!({
        "version": 1,
        "verifier": {"command": claude_bin().display().to_string(), "args": ["mcp", "serve"]},
        "agents": {"codex": {"protocol": "auto", "command": "codex",
                             "mcp_servers": {"claude-code": {}}}},
        "tasks": [{"id": "ask", "prompt": "Ask Claude Code for the secret word."}],
    });
    let run = fanout_run(
        &repo,
        &tasks,
        server.port(),
        &[
            ("ANTHROPIC_BASE_URL", anthropic.base_url()),
            ("ANTHROPIC_API_KEY", "sk-ant-test-secret-0123456789".into()),
        ],
    );
    let t = run.task("ask");
    let tools = seen.lock().map(|s| s.first().cloned()).ok().flatten();
    assert_eq!(
        t["status"], "merged",
        "{t:#}\ntools: {tools:#?}\n{}",
        run.stderr
    );
    // Codex 0.169 names the namespace after the server, `-` turned into `_`.
    assert!(
        reqs_names(&server).iter().any(|n| n == "mcp__claude_code"),
        "{:?}",
        reqs_names(&server)
    );
    // The answer reached the model: the request after the Read carries the file's content.
    let reqs = server.requests();
    let mut outputs = reqs.last().map(tool_outputs).unwrap_or_default();
    outputs.drain(
        ..waits
            .load(std::sync::atomic::Ordering::SeqCst)
            .min(outputs.len()),
    );
    assert!(
        outputs.first().is_some_and(|o| o.contains("pineapple")),
        "{outputs:#?}"
    );
    // Claude Code runs inside the task's sandbox: its write outside the worktree failed.
    assert!(!escape.exists(), "Claude Code wrote outside the worktree");
    assert!(
        outputs.get(1).is_some_and(|o| o.contains("EACCES")),
        "{outputs:#?}"
    );
    let branch = run.report["integration_branch"].as_str().expect("branch");
    assert_eq!(
        crate::support::git_text(&repo.path, &["show", &format!("{branch}:answer.txt")]),
        "pineapple"
    );
    // The call and its answer are in the task's event log; the key is not.
    let log_path = t["event_log"].as_str().expect("event log");
    let log = std::fs::read_to_string(log_path).expect("log");
    assert!(log.contains("\"mcpToolCall\""), "{log}");
    assert!(log.contains("pineapple"), "{log}");
    assert!(
        !log.contains("sk-ant-test-secret"),
        "the key leaked into the log"
    );
    // The key is passed by name, never written into the task's config.toml.
    let run_dir = Path::new(log_path)
        .parent()
        .and_then(Path::parent)
        .expect("run dir");
    for entry in walk(run_dir) {
        let text = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&text).contains("sk-ant-test-secret"),
            "the key is in {}",
            entry.display()
        );
    }
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

fn reqs_names(server: &ModelServer) -> Vec<String> {
    server
        .requests()
        .last()
        .map(|r| r.tool_names())
        .unwrap_or_default()
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(ft) if ft.is_dir() => out.extend(walk(&p)),
            Ok(ft) if ft.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

fn anthropic_env(server: &AnthropicServer) -> Vec<(&'static str, String)> {
    vec![
        ("ANTHROPIC_BASE_URL", server.base_url()),
        ("ANTHROPIC_API_KEY", "sk-ant-test-secret-0123456789".into()),
    ]
}

/// The text of every message of an Anthropic request.
fn anthropic_text(req: &crate::anthropic_server::Request) -> String {
    req.body["messages"].to_string()
}

#[test]
fn review_gate_approves_one_task_and_rejects_the_other() {
    use crate::anthropic_server::Reply as A;
    let repo = TestRepo::with_files(1);
    let reviewer = AnthropicServer::start(|req| {
        let text = anthropic_text(req);
        if text.contains("+FORBIDDEN") {
            A::Text("REJECT: it writes the forbidden word\nPlease write something else.".into())
        } else if text.contains("allowed.txt") {
            A::Text("APPROVE\nThe change does what the task asks.".into())
        } else {
            A::Text("no diff in the prompt".into())
        }
    });
    let tasks = json!({
        "version": 1,
        "verifier": {"command": claude_bin().display().to_string(), "args": ["mcp", "serve"]},
        "agents": {
            "good": {"protocol": "exec", "command": "sh", "args": ["-c", "echo fine > allowed.txt"]},
            "bad": {"protocol": "exec", "command": "sh", "args": ["-c", "echo FORBIDDEN > bad.txt"]},
        },
        "defaults": {"agent": "good", "max_attempts": 1,
                     "review": {"prompt": "Reject any change that adds the word FORBIDDEN.", "timeout_secs": 120}},
        "tasks": [
            {"id": "good", "prompt": "write allowed.txt"},
            {"id": "bad", "prompt": "write bad.txt", "agent": "bad"},
        ],
    });
    let run = fanout_run(
        &repo,
        &tasks,
        model_server::dead_port(),
        &anthropic_env(&reviewer),
    );
    let good = run.task("good");
    assert_eq!(good["status"], "merged", "{good:#}\n{}", run.stderr);
    let review = good["verify"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["gate"] == "review"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(review["passed"], true, "{good:#}");
    let bad = run.task("bad");
    assert_eq!(bad["status"], "verify_failed", "{bad:#}\n{}", run.stderr);
    let error = bad["error"].as_str().unwrap_or("");
    assert!(
        error.contains("the reviewer rejected the change: it writes the forbidden word"),
        "{error}"
    );
    let branch = run.report["integration_branch"].as_str().expect("branch");
    let files = crate::support::git_text(&repo.path, &["ls-tree", "-r", "--name-only", branch]);
    assert!(files.contains("allowed.txt"), "{files}");
    assert!(!files.contains("bad.txt"), "{files}");
    // The reviewer saw each diff.
    let reqs = reviewer.requests();
    assert!(reqs
        .iter()
        .any(|r| anthropic_text(r).contains("+FORBIDDEN")));
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

#[test]
fn diagnosis_reaches_the_codex_thread_and_the_task_is_fixed() {
    use crate::anthropic_server::Reply as A;
    let repo = TestRepo::with_files(1);
    let diagnoser = AnthropicServer::start(|req| {
        if anthropic_text(req).contains("## command gate") {
            A::Text("ROOT CAUSE: second.txt was never created.\nFIX: echo two > second.txt".into())
        } else {
            A::Text("no verification report in the prompt".into())
        }
    });
    let server = ModelServer::start(|req| {
        if req.after_tool_output() {
            return Reply::Message("done".into());
        }
        let latest = req.last_user_text();
        if let Some(fix) = latest.split("FIX: ").nth(1) {
            return Reply::Command(fix.lines().next().unwrap_or("").trim().to_string());
        }
        if latest.contains("did not pass verification") {
            return Reply::Message("no diagnosis, no fix".into());
        }
        model_server::run_prompt_command(req)
    });
    let tasks = json!({
        "version": 1,
        "verifier": {"command": claude_bin().display().to_string(), "args": ["mcp", "serve"]},
        "defaults": {"max_attempts": 2, "diagnose": true},
        "tasks": [{"id": "fix", "prompt": "CMD: echo one > first.txt", "verify": "test -f second.txt"}],
    });
    let run = fanout_run_with(
        &repo,
        &tasks,
        server.port(),
        &anthropic_env(&diagnoser),
        &["--json", "--no-readback"],
    );
    let t = run.task("fix");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", run.stderr);
    assert_eq!(t["attempts"], 2, "{t:#}");
    let diagnosis = t["attempt_history"][0]["diagnosis"].as_str().unwrap_or("");
    assert!(diagnosis.contains("second.txt was never created"), "{t:#}");
    // The feedback turn on the same thread carried the gate's output and the diagnosis.
    let reqs = server.requests();
    assert!(
        reqs.iter().any(|r| {
            let t = r.last_user_text();
            t.contains("## command gate") && t.contains("ROOT CAUSE: second.txt was never created")
        }),
        "the diagnosis did not reach the model"
    );
    // And it is in the event stream.
    let events: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.iter().any(|e| e["event"] == "diagnosis"
            && e["task"] == "fix"
            && e["attempt"] == 1
            && e["text"].as_str().is_some_and(|x| x.contains("ROOT CAUSE"))),
        "{}",
        run.stdout
    );
    let branch = run.report["integration_branch"].as_str().expect("branch");
    assert_eq!(
        crate::support::git_text(&repo.path, &["show", &format!("{branch}:second.txt")]),
        "two"
    );
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

/// The real Anthropic key of the runs below (fanout's environment only).
const REAL_ANTHROPIC_KEY: &str = "sk-ant-real-key-of-the-run-0123456789";
/// The real OpenAI key of the runs below.
const REAL_OPENAI_KEY: &str = "sk-openai-real-key-of-the-run-0123456789";

/// What the test saw of the processes alive while the model was asked: the `ANTHROPIC_*`
/// settings of every process holding a Claude Code endpoint, and every process but `fanout run`
/// itself whose environment holds a real key.
#[derive(Default, Debug)]
struct Seen {
    claude_env: Vec<String>,
    leaks: Vec<String>,
}

fn look_at_processes(seen: &std::sync::Mutex<Seen>) {
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let env = String::from_utf8_lossy(&env).replace('\0', "\n");
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let is_fanout_run = cmd.split(' ').nth(1) == Some("run");
        if !is_fanout_run && (env.contains(REAL_ANTHROPIC_KEY) || env.contains(REAL_OPENAI_KEY)) {
            s.leaks.push(cmd.clone());
        }
        if env.contains("CLAUDE_CONFIG_DIR=") {
            for l in env.lines().filter(|l| l.starts_with("ANTHROPIC_")) {
                if !s.claude_env.iter().any(|x| x == l) {
                    s.claude_env.push(l.to_string());
                }
            }
        }
    }
}

/// The sandbox status files of the run whose names contain `part`.
fn status_files(run: &Run, part: &str) -> Vec<String> {
    let dir = Path::new(run.report["run_dir"].as_str().unwrap_or_default()).join("status");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(part))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Under `--net isolated` the reviewer (`claude -p`) and the read-back verifier (`claude mcp
/// serve`) run in network namespaces of their own: the review reaches the scripted Messages API
/// only through the egress proxy, which adds the real key — Claude Code's own environment holds
/// the placeholder and the proxy's address — and read-back has no way out at all. With
/// `FANOUT_TEST_NO_NETNS=1` (no namespace can be made) the review goes out as before, with the
/// supervisor's warning in its log.
fn review_and_readback_when_isolated(namespaces: bool) {
    use crate::anthropic_server::Reply as A;
    let repo = TestRepo::with_files(1);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let reviewer = {
        let seen = seen.clone();
        AnthropicServer::start(move |_| {
            look_at_processes(&seen);
            A::Text("APPROVE\nfine".into())
        })
    };
    let tasks = json!({
        "version": 1,
        "verifier": {"command": claude_bin().display().to_string(), "args": ["mcp", "serve"]},
        "agents": {"good": {"protocol": "exec", "command": "sh", "args": ["-c", "echo fine > allowed.txt"]}},
        "defaults": {"agent": "good", "max_attempts": 1,
                     "review": {"prompt": "Approve.", "timeout_secs": 120}},
        "tasks": [{"id": "good", "prompt": "write allowed.txt"}],
    });
    let mut env = vec![
        ("ANTHROPIC_BASE_URL", reviewer.base_url()),
        ("ANTHROPIC_API_KEY", REAL_ANTHROPIC_KEY.to_string()),
    ];
    if !namespaces {
        env.push(("FANOUT_TEST_NO_NETNS", "1".into()));
    }
    let run = fanout_run_with(
        &repo,
        &tasks,
        model_server::dead_port(),
        &env,
        &["--quiet", "--net", "isolated"],
    );
    let t = run.task("good");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", run.stderr);
    assert_eq!(t["readback"]["result"], "passed", "{t:#}");
    let reqs = reviewer.requests();
    assert!(!reqs.is_empty(), "the reviewer was never asked");
    for r in &reqs {
        assert_eq!(r.api_key.as_deref(), Some(REAL_ANTHROPIC_KEY));
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let review = status_files(&run, "review");
    let verifier = status_files(&run, "verifier");
    assert!(
        !review.is_empty() && !verifier.is_empty(),
        "{review:?} {verifier:?}"
    );
    if namespaces {
        assert!(seen.leaks.is_empty(), "{:?}", seen.leaks);
        assert!(
            seen.claude_env
                .contains(&"ANTHROPIC_API_KEY=fanout-placeholder".to_string())
                && seen
                    .claude_env
                    .contains(&"ANTHROPIC_BASE_URL=http://127.0.0.1:3128/anthropic".to_string()),
            "{:?}",
            seen.claude_env
        );
        for s in review.iter().chain(&verifier) {
            assert!(s.contains("\"network\": \"namespace\""), "{s}");
        }
    } else {
        assert!(
            seen.claude_env
                .contains(&format!("ANTHROPIC_API_KEY={REAL_ANTHROPIC_KEY}")),
            "{:?}",
            seen.claude_env
        );
        for s in review.iter().chain(&verifier) {
            assert!(s.contains("\"network\": \"landlock-ports\""), "{s}");
        }
    }
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

#[test]
fn review_and_readback_run_in_namespaces_behind_the_proxy() {
    review_and_readback_when_isolated(true)
}

#[test]
fn without_namespaces_review_and_readback_go_out_as_before() {
    review_and_readback_when_isolated(false)
}

/// Pattern 2 under `--net isolated`: real Codex consults Claude Code's `claude mcp serve`, whose
/// `Agent` tool asks the model — through the proxy's Anthropic route, which adds the real key.
/// A command the model has Codex run in the same sandbox reads every `/proc/*/environ` it can:
/// Codex and Claude Code hold only placeholders, and no process of the task holds a real key.
#[test]
fn codex_consults_claude_code_through_the_proxy() {
    use crate::anthropic_server::Reply as A;
    let repo = TestRepo::with_files(1);
    let anthropic = AnthropicServer::start(|_| A::Text("the secret word is pineapple".into()));
    let scan = r#"for f in /proc/[0-9]*/environ; do tr '\0' '\n' < "$f" 2>/dev/null | grep -E '^(OPENAI_API_KEY|ANTHROPIC_API_KEY|ANTHROPIC_BASE_URL)='; done | sort -u > environ.txt; grep -l -e real-key-of-the-run /proc/[0-9]*/environ > leaks.txt 2>/dev/null; true"#;
    let server = ModelServer::start(move |req| {
        let outputs = tool_outputs(req);
        if outputs.is_empty() {
            return Reply::Command(scan.to_string());
        }
        if outputs.iter().any(|o| o.contains("pineapple")) {
            return Reply::Message("done".into());
        }
        match namespace_of(req, "mcp__claude") {
            Some(ns) => Reply::Function {
                namespace: Some(ns),
                name: "Agent".into(),
                arguments: json!({"description": "secret", "prompt": "What is the secret word?"}),
            },
            // On a loaded machine Claude Code's server may not be up yet: wait a little.
            None if outputs.len() < 10 => Reply::Command("sleep 2".into()),
            None => Reply::Message(format!("no claude tools in {:?}", req.tool_names())),
        }
    });
    let tasks = json!({
        "version": 1,
        "agents": {"codex": {"protocol": "auto", "command": "codex",
                             "mcp_servers": {"claude-code": {"command": claude_bin().display().to_string()}}}},
        "defaults": {"timeout_secs": 240, "max_attempts": 1},
        "tasks": [{"id": "ask", "prompt": "Ask Claude Code for the secret word."}],
    });
    let run = fanout_run_with(
        &repo,
        &tasks,
        server.port(),
        &[
            ("ANTHROPIC_BASE_URL", anthropic.base_url()),
            ("ANTHROPIC_API_KEY", REAL_ANTHROPIC_KEY.into()),
            ("OPENAI_API_KEY", REAL_OPENAI_KEY.into()),
        ],
        &["--quiet", "--no-readback", "--net", "isolated"],
    );
    let t = run.task("ask");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", run.stderr);
    assert_eq!(t["network"], "namespace", "{t:#}");
    let reqs = server.requests();
    let outputs = reqs.last().map(tool_outputs).unwrap_or_default();
    assert!(
        outputs.iter().any(|o| o.contains("pineapple")),
        "{outputs:#?}"
    );
    let asked = anthropic.requests();
    assert!(!asked.is_empty(), "Claude Code never asked the model");
    for r in &asked {
        assert_eq!(r.api_key.as_deref(), Some(REAL_ANTHROPIC_KEY));
    }
    for r in &reqs {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {REAL_OPENAI_KEY}").as_str())
        );
    }
    let branch = run.report["integration_branch"].as_str().expect("branch");
    let show = |f: &str| crate::support::git_text(&repo.path, &["show", &format!("{branch}:{f}")]);
    let environ = show("environ.txt");
    for want in [
        "ANTHROPIC_API_KEY=fanout-placeholder",
        "ANTHROPIC_BASE_URL=http://127.0.0.1:3128/anthropic",
        "OPENAI_API_KEY=fanout-placeholder",
    ] {
        assert!(environ.lines().any(|l| l == want), "{want}:\n{environ}");
    }
    assert!(!environ.contains("real-key"), "{environ}");
    assert_eq!(
        show("leaks.txt"),
        "",
        "a process of the task holds a real key"
    );
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

/// The diagnosis under `--net isolated`: `claude -p` in a namespace of its own reaches the
/// scripted Messages API only through its proxy (the real key added there, the placeholder in
/// its environment), and Codex, through the task's proxy, gets the diagnosis and fixes the task.
#[test]
fn diagnosis_goes_through_the_proxy() {
    use crate::anthropic_server::Reply as A;
    let repo = TestRepo::with_files(1);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let diagnoser = {
        let seen = seen.clone();
        AnthropicServer::start(move |req| {
            look_at_processes(&seen);
            if anthropic_text(req).contains("## command gate") {
                A::Text("ROOT CAUSE: no second.txt.\nFIX: echo two > second.txt".into())
            } else {
                A::Text("no verification report in the prompt".into())
            }
        })
    };
    let server = ModelServer::start(|req| {
        if req.after_tool_output() {
            return Reply::Message("done".into());
        }
        match req.last_user_text().split("FIX: ").nth(1) {
            Some(fix) => Reply::Command(fix.lines().next().unwrap_or("").trim().to_string()),
            None => model_server::run_prompt_command(req),
        }
    });
    let tasks = json!({
        "version": 1,
        "verifier": {"command": claude_bin().display().to_string(), "args": ["mcp", "serve"]},
        "defaults": {"max_attempts": 2, "diagnose": true},
        "tasks": [{"id": "fix", "prompt": "CMD: echo one > first.txt", "verify": "test -f second.txt"}],
    });
    let run = fanout_run_with(
        &repo,
        &tasks,
        server.port(),
        &[
            ("ANTHROPIC_BASE_URL", diagnoser.base_url()),
            ("ANTHROPIC_API_KEY", REAL_ANTHROPIC_KEY.into()),
            ("OPENAI_API_KEY", REAL_OPENAI_KEY.into()),
        ],
        &["--quiet", "--no-readback", "--net", "isolated"],
    );
    let t = run.task("fix");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", run.stderr);
    assert_eq!(t["attempts"], 2, "{t:#}");
    let diagnosis = t["attempt_history"][0]["diagnosis"].as_str().unwrap_or("");
    assert!(diagnosis.contains("ROOT CAUSE: no second.txt"), "{t:#}");
    let asked = diagnoser.requests();
    assert!(!asked.is_empty());
    for r in &asked {
        assert_eq!(r.api_key.as_deref(), Some(REAL_ANTHROPIC_KEY));
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    assert!(seen.leaks.is_empty(), "{:?}", seen.leaks);
    assert!(
        seen.claude_env
            .contains(&"ANTHROPIC_API_KEY=fanout-placeholder".to_string()),
        "{:?}",
        seen.claude_env
    );
    let statuses = status_files(&run, "diagnose");
    assert!(
        !statuses.is_empty()
            && statuses
                .iter()
                .all(|s| s.contains("\"network\": \"namespace\"")),
        "{statuses:?}"
    );
}
