//! `fanout mcp`: the built binary as an MCP server on stdio, spoken to line by line — protocol
//! edge cases, a 10-task run with progress, cancel and resume, a client that goes away — and
//! real Codex and Claude Code as its clients, driven by scripted model servers.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{git_text, TestRepo};

/// A `fanout mcp` process and the lines it wrote.
pub(crate) struct Client {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) lines: mpsc::Receiver<Value>,
    /// Notifications seen while waiting for responses.
    pub(crate) notes: Vec<Value>,
    next_id: i64,
}

impl Client {
    pub(crate) fn start(repo: &TestRepo) -> Client {
        let mut child = repo
            .fanout_command()
            .arg("mcp")
            .current_dir(&repo.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fanout mcp starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON from fanout mcp ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Client {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            notes: Vec::new(),
            next_id: 1,
        }
    }

    pub(crate) fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// The next message with `id`, keeping notifications.
    pub(crate) fn response(&mut self, id: &Value, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no response to {id} within {within:?}"));
            if msg.get("id") == Some(id) {
                return msg;
            }
            self.notes.push(msg);
        }
    }

    pub(crate) fn request(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        self.send_raw(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        self.response(&id, Duration::from_secs(120))
    }

    pub(crate) fn initialize(&mut self) -> Value {
        let r = self.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "it", "version": "1"}}),
        );
        self.send_raw(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        r
    }

    /// `tools/call` → the result (panics on a JSON-RPC error).
    pub(crate) fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self.request("tools/call", json!({"name": tool, "arguments": args}));
        r.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{tool}: {r:#}"))
    }

    /// Closes stdin and waits for the server to exit.
    pub(crate) fn close(&mut self, within: Duration) -> std::process::ExitStatus {
        self.stdin.take();
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "fanout mcp did not exit after stdin closed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An `exec` agent writing `out-<prompt>.txt`; `pre` runs first (e.g. a sleep).
pub(crate) fn exec_tasks(n: usize, pre: &str) -> Value {
    let script =
        format!("{pre}printf 'edited by %s\\n' \"$FANOUT_PROMPT\" > \"out-$FANOUT_PROMPT.txt\"");
    json!({
        "agents": {"w": {"protocol": "exec", "command": "sh", "args": ["-c", script]}},
        "defaults": {"agent": "w", "timeout_secs": 120},
        "tasks": (1..=n).map(|i| json!({"id": format!("t{i}"), "prompt": format!("t{i}"),
                                        "paths": [format!("out-t{i}.txt")]})).collect::<Vec<_>>(),
    })
}

pub(crate) fn start_args(tasks: Value, extra: Value) -> Value {
    let mut a = tasks;
    a["readback"] = json!("off");
    a["jobs"] = json!(4);
    if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

#[test]
fn protocol_edge_cases() {
    let repo = TestRepo::with_files(1);
    let mut c = Client::start(&repo);
    // An older version the server speaks is echoed; an unknown one gets the newest.
    let r = c.request(
        "initialize",
        json!({"protocolVersion": "2025-03-26", "capabilities": {}}),
    );
    assert_eq!(r["result"]["protocolVersion"], "2025-03-26", "{r:#}");
    assert_eq!(r["result"]["serverInfo"]["name"], "fanout");
    let r = c.request(
        "initialize",
        json!({"protocolVersion": "2031-01-01", "capabilities": {}}),
    );
    assert_eq!(r["result"]["protocolVersion"], "2025-06-18", "{r:#}");
    let r = c.request("initialize", json!({"protocolVersion": "2024-11-05"}));
    assert_eq!(r["result"]["protocolVersion"], "2024-11-05", "{r:#}");

    c.send_raw("{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":");
    let r = c.response(&Value::Null, Duration::from_secs(10));
    assert_eq!(r["error"]["code"], -32700, "{r:#}");

    let r = c.request("no/such/method", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r:#}");
    let r = c.request("ping", json!({}));
    assert_eq!(r["result"], json!({}));

    let tools = c.request("tools/list", json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| {
            assert_eq!(t["inputSchema"]["type"], "object", "{t:#}");
            t["name"].as_str().unwrap_or("")
        })
        .collect();
    for want in [
        "fanout_start",
        "fanout_wait",
        "fanout_status",
        "fanout_diff",
        "fanout_cancel",
        "fanout_merge",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }

    let r = c.request(
        "tools/call",
        json!({"name": "fanout_explode", "arguments": {}}),
    );
    assert_eq!(r["error"]["code"], -32602, "{r:#}");
    let r = c.request(
        "tools/call",
        json!({"name": "fanout_wait", "arguments": {"run_id": 7}}),
    );
    assert_eq!(r["error"]["code"], -32602, "{r:#}");
    let r = c.request(
        "tools/call",
        json!({"name": "fanout_wait", "arguments": {}}),
    );
    assert_eq!(r["error"]["code"], -32602, "{r:#}");
    let r = c.request(
        "tools/call",
        json!({"name": "fanout_status", "arguments": {"bogus": 1}}),
    );
    assert_eq!(r["error"]["code"], -32602, "{r:#}");

    // A tool that fails is a result the model sees, not a protocol error.
    let r = c.call("fanout_status", json!({"run_id": "20200101-000000-0000"}));
    assert_eq!(r["isError"], true, "{r:#}");

    // Every problem of a task list at once, as `fanout validate` prints them.
    let r = c.call(
        "fanout_start",
        json!({"tasks": [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"},
                         {"id": "bad id", "prompt": "z"}, {"id": "c"}],
               "defaults": {"agent": "nobody-knows", "timeout_sec": 3}}),
    );
    assert_eq!(r["isError"], true, "{r:#}");
    let problems = r["structuredContent"]["problems"]
        .as_array()
        .expect("problems");
    assert!(problems.len() >= 4, "{r:#}");
    let text = r["content"][0]["text"].as_str().unwrap_or("");
    for needle in [
        "$.tasks[1].id",
        "$.tasks[2].id",
        "$.tasks[3]",
        "timeout_sec",
    ] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }
    // Nothing was created.
    assert!(
        !repo.path.join(".git/fanout/runs").exists()
            || std::fs::read_dir(repo.path.join(".git/fanout/runs"))
                .map(|d| d.count())
                .unwrap_or(0)
                == 0
    );

    let r = c.request(
        "resources/read",
        json!({"uri": "fanout://runs/nope/report"}),
    );
    assert_eq!(r["error"]["code"], -32002, "{r:#}");
    let status = c.close(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn ten_tasks_wait_with_progress_diff_status_merge() {
    let repo = TestRepo::with_files(1);
    let mut c = Client::start(&repo);
    c.initialize();
    let r = c.call("fanout_start", start_args(exec_tasks(10, ""), json!({})));
    assert_eq!(r["isError"], false, "{r:#}");
    let run_id = r["structuredContent"]["run_id"]
        .as_str()
        .expect("run_id")
        .to_string();

    let id = json!("wait-1");
    c.send_raw(
        &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "fanout_wait", "arguments": {"run_id": run_id, "timeout_secs": 120},
            "_meta": {"progressToken": "tok-1"}}})
        .to_string(),
    );
    let r = c.response(&id, Duration::from_secs(150));
    let report = &r["result"]["structuredContent"];
    assert_eq!(report["ended"], true, "{r:#}");
    assert_eq!(report["counts"]["merged"], 10, "{report:#}");
    let merged_branch = format!("fanout/{run_id}/merged");
    assert_eq!(report["integration_branch"], merged_branch.as_str());
    assert_eq!(report["tasks"][0]["files"][0], "out-t1.txt", "{report:#}");
    assert_eq!(report["tasks"][0]["insertions"], 1);
    let progress: Vec<&Value> = c
        .notes
        .iter()
        .filter(|n| {
            n["method"] == "notifications/progress" && n["params"]["progressToken"] == "tok-1"
        })
        .collect();
    assert!(!progress.is_empty(), "no progress: {:#?}", c.notes);
    let last = progress.last().expect("progress");
    assert_eq!(last["params"]["progress"], 10);
    assert_eq!(last["params"]["total"], 10);
    let values: Vec<u64> = progress
        .iter()
        .filter_map(|p| p["params"]["progress"].as_u64())
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");

    let d = c.call("fanout_diff", json!({"run_id": run_id, "task": "t3"}));
    assert_eq!(d["isError"], false, "{d:#}");
    let diff = d["structuredContent"]["diff"].as_str().unwrap_or("");
    assert!(diff.contains("+edited by t3"), "{diff}");
    let cut = c.call(
        "fanout_diff",
        json!({"run_id": run_id, "task": "t3", "max_bytes": 10}),
    );
    assert_eq!(cut["structuredContent"]["truncated"], true, "{cut:#}");
    let missing = c.call("fanout_diff", json!({"run_id": run_id, "task": "t99"}));
    assert_eq!(missing["isError"], true, "{missing:#}");

    let s = c.call("fanout_status", json!({}));
    let runs = s["structuredContent"]["runs"].as_array().expect("runs");
    assert!(
        runs.iter()
            .any(|r| r["run_id"] == run_id.as_str() && r["status"] == "finished"),
        "{s:#}"
    );
    let s = c.call("fanout_status", json!({"run_id": run_id}));
    assert_eq!(s["structuredContent"]["counts"]["merged"], 10, "{s:#}");

    // The run is the same run on disk as a CLI run.
    let out = repo.fanout(&["status", &run_id]);
    assert!(crate::support::stdout(&out).contains("finished"), "{out:?}");

    let list = c.request("resources/list", json!({}));
    let uri = format!("fanout://runs/{run_id}/report");
    assert!(
        list["result"]["resources"]
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["uri"] == uri.as_str()),
        "{list:#}"
    );
    let read = c.request("resources/read", json!({"uri": uri}));
    let text = read["result"]["contents"][0]["text"]
        .as_str()
        .expect("text");
    let parsed: Value = serde_json::from_str(text).expect("report json");
    assert_eq!(parsed["run_id"], run_id.as_str());

    // Merge into the checked-out branch: refused while it has uncommitted changes, then a
    // fast-forward once it is clean.
    std::fs::write(repo.path.join("src/file_00.txt"), "dirty\n").expect("write");
    let m = c.call("fanout_merge", json!({"run_id": run_id, "into": "main"}));
    assert_eq!(m["isError"], true, "{m:#}");
    assert!(
        m["structuredContent"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("uncommitted"),
        "{m:#}"
    );
    crate::support::git(&repo.path, &["checkout", "--", "src/file_00.txt"]);
    let m = c.call("fanout_merge", json!({"run_id": run_id, "into": "main"}));
    assert_eq!(m["structuredContent"]["outcome"], "fast_forward", "{m:#}");
    assert_eq!(
        git_text(&repo.path, &["rev-parse", "main"]),
        git_text(&repo.path, &["rev-parse", &merged_branch])
    );
    assert!(
        repo.path.join("out-t7.txt").is_file(),
        "the checkout follows the branch"
    );
    assert!(c.close(Duration::from_secs(20)).success());
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

/// A world-readable folder (agents run as another uid when the tests run as root).
pub(crate) fn marker_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// Tasks that sleep until `fast` exists in `dir`, for at most 60 s.
pub(crate) fn sleepy_tasks(n: usize, dir: &Path) -> Value {
    let fast = dir.join("fast");
    exec_tasks(
        n,
        &format!(
            "i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; ",
            fast.display()
        ),
    )
}

pub(crate) fn wait_until_running(c: &mut Client, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = c.call("fanout_status", json!({"run_id": run_id}));
        let tasks = s["structuredContent"]["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if tasks.iter().any(|t| t["status"] == "running") {
            return;
        }
        assert!(Instant::now() < deadline, "no task started: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cancel_mid_run_then_cli_resume_completes() {
    let repo = TestRepo::with_files(1);
    let marker = marker_dir();
    let mut c = Client::start(&repo);
    c.initialize();
    let r = c.call(
        "fanout_start",
        start_args(sleepy_tasks(6, marker.path()), json!({"jobs": 2})),
    );
    let run_id = r["structuredContent"]["run_id"]
        .as_str()
        .expect("run_id")
        .to_string();
    wait_until_running(&mut c, &run_id);
    let x = c.call("fanout_cancel", json!({"run_id": run_id}));
    assert_eq!(x["structuredContent"]["cancel_requested"], true, "{x:#}");
    let w = c.call("fanout_wait", json!({"run_id": run_id, "timeout_secs": 60}));
    let report = &w["structuredContent"];
    assert_eq!(report["ended"], true, "{w:#}");
    assert_eq!(report["status"], "interrupted", "{w:#}");
    assert_eq!(report["resumable"], true, "{w:#}");
    // Only the server itself is left.
    let server = format!("{}: ", c.child.id());
    let left: Vec<String> = repo
        .live_processes()
        .into_iter()
        .filter(|p| !p.starts_with(&server))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Cancelling an ended run says so.
    let x = c.call("fanout_cancel", json!({"run_id": run_id}));
    assert_eq!(x["structuredContent"]["ended"], true, "{x:#}");
    assert!(c.close(Duration::from_secs(20)).success());

    std::fs::write(marker.path().join("fast"), "").expect("marker");
    let out = repo.fanout(&["resume", &run_id, "--quiet"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::support::stdout(&out),
        crate::support::stderr(&out)
    );
    let files = repo.tree_files(&format!("fanout/{run_id}/merged"));
    for i in 1..=6 {
        assert!(
            files.contains_key(&format!("out-t{i}.txt")),
            "t{i} missing: {:?}",
            files.keys()
        );
    }
}

#[test]
fn client_gone_mid_run_stops_runs_and_leaves_them_resumable() {
    let repo = TestRepo::with_files(1);
    let marker = marker_dir();
    let mut c = Client::start(&repo);
    c.initialize();
    let mut ids = Vec::new();
    // Two runs at once: one ending must not stop the other's agents (nor the server's end).
    for _ in 0..2 {
        let r = c.call(
            "fanout_start",
            start_args(sleepy_tasks(3, marker.path()), json!({"jobs": 2})),
        );
        assert_eq!(r["isError"], false, "{r:#}");
        ids.push(
            r["structuredContent"]["run_id"]
                .as_str()
                .expect("run_id")
                .to_string(),
        );
    }
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        wait_until_running(&mut c, id);
    }
    let status = c.close(Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
    std::fs::write(marker.path().join("fast"), "").expect("marker");
    for id in &ids {
        let out = repo.fanout(&["status", id]);
        assert!(
            crate::support::stdout(&out).contains("interrupted"),
            "{}",
            crate::support::stdout(&out)
        );
        let out = repo.fanout(&["resume", id, "--quiet"]);
        assert!(
            out.status.success(),
            "{}\n{}",
            crate::support::stdout(&out),
            crate::support::stderr(&out)
        );
        let files = repo.tree_files(&format!("fanout/{id}/merged"));
        assert!(files.contains_key("out-t3.txt"), "{:?}", files.keys());
    }
}

#[test]
fn two_runs_at_once_one_cancelled_the_other_merges() {
    let repo = TestRepo::with_files(1);
    let marker = marker_dir();
    let mut c = Client::start(&repo);
    c.initialize();
    let slow = c.call(
        "fanout_start",
        start_args(sleepy_tasks(2, marker.path()), json!({"jobs": 2})),
    );
    let slow_id = slow["structuredContent"]["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_until_running(&mut c, &slow_id);
    let fast = c.call(
        "fanout_start",
        start_args(exec_tasks(3, ""), json!({"jobs": 2})),
    );
    let fast_id = fast["structuredContent"]["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    let w = c.call(
        "fanout_wait",
        json!({"run_id": fast_id, "timeout_secs": 120}),
    );
    assert_eq!(w["structuredContent"]["counts"]["merged"], 3, "{w:#}");
    // The fast run's end did not stop the slow run's agents.
    let s = c.call("fanout_status", json!({"run_id": slow_id}));
    assert_eq!(s["structuredContent"]["ended"], false, "{s:#}");
    std::fs::write(marker.path().join("fast"), "").expect("marker");
    let w = c.call(
        "fanout_wait",
        json!({"run_id": slow_id, "timeout_secs": 120}),
    );
    assert_eq!(w["structuredContent"]["counts"]["merged"], 2, "{w:#}");
    assert!(c.close(Duration::from_secs(20)).success());
}

#[test]
fn mcp_config_snippets() {
    let out = Command::new(crate::support::fanout_bin())
        .args(["mcp-config", "claude"])
        .output()
        .expect("runs");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let cmd = v["mcpServers"]["fanout"]["command"]
        .as_str()
        .expect("command");
    assert!(Path::new(cmd).is_absolute(), "{cmd}");
    assert_eq!(v["mcpServers"]["fanout"]["args"], json!(["mcp"]));
    let out = Command::new(crate::support::fanout_bin())
        .args(["mcp-config", "codex"])
        .output()
        .expect("runs");
    let t: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("toml");
    let f = &t["mcp_servers"]["fanout"];
    assert_eq!(f["args"].as_array().map(|a| a.len()), Some(1));
    assert!(
        f["tool_timeout_sec"].as_integer().unwrap_or(0) >= 300,
        "{f:?}"
    );
}

/// The pinned binary of an agent package in `.agents/`.
pub(crate) fn agent_bin(dir: &str, bin: &str) -> std::path::PathBuf {
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

pub(crate) fn fanout_mcp_config(client: &str) -> String {
    let out = Command::new(crate::support::fanout_bin())
        .args(["mcp-config", client])
        .output()
        .expect("mcp-config runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first JSON object in a tool's output as a client passed it on (Codex prefixes it with
/// "Wall time: …\nOutput:\n").
pub(crate) fn json_in(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<Value>()
        .next()?
        .ok()
}

/// The text of the last function-call output Codex sent the model.
fn last_tool_output(req: &crate::model_server::Request) -> String {
    req.input()
        .iter()
        .rev()
        .find(|i| i["type"] == "function_call_output")
        .map(|i| match &i["output"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

#[test]
fn codex_0_169_calls_fanout_start_and_wait() {
    let repo = TestRepo::with_files(1);
    codex_calls_fanout_start_and_wait(&repo, "0.169.0", &fanout_mcp_config("codex"), &[]);
}

#[test]
fn codex_0_171_calls_fanout_start_and_wait() {
    let repo = TestRepo::with_files(1);
    codex_calls_fanout_start_and_wait(&repo, "0.171.0", &fanout_mcp_config("codex"), &[]);
}

/// Real Codex `version` (`codex exec`) with `fanout_config` as its `[mcp_servers.fanout]`
/// starts a 10-task run in `repo` and waits until it merged; `env` goes to Codex.
pub(crate) fn codex_calls_fanout_start_and_wait(
    repo: &TestRepo,
    version: &str,
    fanout_config: &str,
    env: &[(&str, &str)],
) {
    use crate::model_server::{ModelServer, Reply};
    let tasks = start_args(
        exec_tasks(10, ""),
        json!({"repo": repo.path.display().to_string()}),
    );
    let seen_tools = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let server = {
        let seen = seen_tools.clone();
        ModelServer::start(move |req| {
            let names = req.tool_names();
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = names.clone();
            // Codex 0.169 offers the server's tools inside one `namespace` tool `mcp__fanout`.
            assert!(names.iter().any(|n| n == "mcp__fanout"), "{names:?}");
            let call = |tool: &str, arguments: Value| Reply::Function {
                namespace: Some("mcp__fanout".into()),
                name: tool.into(),
                arguments,
            };
            let out = last_tool_output(req);
            if !req.after_tool_output() {
                return call("fanout_start", tasks.clone());
            }
            if let Some(v) = json_in(&out) {
                if v.get("ended").is_none() {
                    if let Some(run) = v["run_id"].as_str() {
                        return call("fanout_wait", json!({"run_id": run, "timeout_secs": 120}));
                    }
                }
            }
            Reply::Message(format!(
                "fanout said: {}",
                out.chars().take(2000).collect::<String>()
            ))
        })
    };
    let home = tempfile::tempdir().expect("tmp");
    let config = format!("{}\n{}", server.codex_config(), fanout_config);
    std::fs::write(home.path().join("config.toml"), config).expect("config");
    let out = Command::new(agent_bin(&format!("codex-{version}"), "codex"))
        .args([
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "Run the tasks through fanout.",
        ])
        .current_dir(&repo.path)
        .env("CODEX_HOME", home.path())
        // Codex snapshots the user's login shell; a machine's own rc files (a version manager's
        // background rehash) would leave processes of theirs in the repository behind.
        .env("HOME", home.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("codex runs");
    let stdout = crate::support::stdout(&out);
    let stderr = crate::support::stderr(&out);
    let tools = seen_tools.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let reqs = server.requests();
    let last = reqs.last().map(last_tool_output).unwrap_or_default();
    let v = json_in(&last).unwrap_or(Value::Null);
    assert!(
        v["ended"] == true && v["counts"]["merged"] == 10,
        "tools offered: {tools:?}\nlast tool output: {last}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let runs = git_text(&repo.path, &["branch", "--list", "fanout/*/merged"]);
    assert!(!runs.is_empty());
    // A `fanout mcp --http` serving this repository is not Codex's to stop.
    let left: Vec<String> = repo
        .live_processes()
        .into_iter()
        .filter(|p| !p.contains("--http"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn claude_code_2_1_332_calls_fanout_start_wait_and_diff() {
    use crate::anthropic_server::{AnthropicServer, Reply};
    let repo = TestRepo::with_files(1);
    let tasks = start_args(
        exec_tasks(10, ""),
        json!({"repo": repo.path.display().to_string()}),
    );
    let server = AnthropicServer::start(move |req| {
        let call = |tool: &str, input: Value| Reply::ToolUse {
            name: format!("mcp__fanout__{tool}"),
            input,
        };
        let Some(out) = req.last_tool_result() else {
            return call("fanout_start", tasks.clone());
        };
        let Some(v) = json_in(&out) else {
            return Reply::Text(format!("no JSON from fanout: {out}"));
        };
        let run = v["run_id"].as_str().unwrap_or("").to_string();
        if v.get("diff").is_some() {
            Reply::Text("all done".into())
        } else if v.get("ended").is_none() || v["ended"] == false {
            call("fanout_wait", json!({"run_id": run, "timeout_secs": 120}))
        } else {
            call("fanout_diff", json!({"run_id": run, "task": "t4"}))
        }
    });
    let cfg_dir = tempfile::tempdir().expect("tmp");
    let mcp_json = cfg_dir.path().join("mcp.json");
    std::fs::write(&mcp_json, fanout_mcp_config("claude")).expect("write");
    let home = cfg_dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let out = Command::new(agent_bin("claude-code-2.1.332", "claude"))
        .args(["-p", "Run the tasks through fanout.", "--mcp-config"])
        .arg(&mcp_json)
        .args([
            "--strict-mcp-config",
            "--permission-mode",
            "bypassPermissions",
            "--dangerously-skip-permissions",
        ])
        .current_dir(&repo.path)
        .env("HOME", &home)
        .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
        .env("ANTHROPIC_BASE_URL", server.base_url())
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("IS_SANDBOX", "1")
        .stdin(Stdio::null())
        .output()
        .expect("claude runs");
    let stdout = crate::support::stdout(&out);
    let stderr = crate::support::stderr(&out);
    let reqs = server.requests();
    let tools = reqs
        .iter()
        .map(|r| r.tool_names())
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let results: Vec<String> = reqs
        .last()
        .map(|r| r.all_tool_results())
        .unwrap_or_default();
    let joined = results.join("\n");
    assert!(
        joined.contains("\\\"merged\\\": 10") || joined.contains("\"merged\":10") || joined.contains("\\\"merged\\\":10"),
        "no merged run reached the model\ntools: {tools:?}\nresults: {joined}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        joined.contains("+edited by t4"),
        "the diff did not reach the model: {joined}"
    );
    assert!(stdout.contains("all done"), "{stdout}\n{stderr}");
    let merged = git_text(&repo.path, &["branch", "--list", "fanout/*/merged"]);
    assert!(!merged.is_empty());
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

/// Fake secrets in the shapes of files a client may point `tasks_file` at by mistake.
const FAKE_SECRETS: &[&str] = &[
    "sk-mcp-fake-secret-0123456789abcdef",
    "ghp_mcpFakeToken000000000000000000000000",
    "hunter2-mcp-password",
    "AKIAMCPFAKE000000000",
];

/// `fanout mcp` given a JSON file that is not a task file (credentials, an npm lock, a bare
/// array of secrets) answers only "<path> is not a fanout task file", quoting none of its
/// content; `fanout validate` and `fanout run` on the same files quote none of it either. A
/// task file with unknown fields names them without their values.
#[test]
fn a_file_that_is_not_a_task_file_is_never_quoted() {
    let repo = TestRepo::with_files(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let [key, token, password, aws] = FAKE_SECRETS else {
        unreachable!()
    };
    let files = [
        (
            "credentials.json",
            json!({"api_key": key, "github": {"token": token}, "password": password,
                   "aws_access_key_id": aws}),
        ),
        (
            "secrets-array.json",
            json!([{"id": key, "secret": token}, {"password": password, "aws": aws}]),
        ),
        ("strings.json", json!([key, token, password, aws])),
        ("scalar.json", json!(key)),
        (
            "nested.json",
            json!({"profiles": [{"name": "prod", "env": {"TOKEN": token, "KEY": key,
                   "PASSWORD": password, "AWS": aws}}]}),
        ),
    ];
    let mut c = Client::start(&repo);
    c.initialize();
    for (name, doc) in &files {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(doc).expect("json")).expect("write");
        let r = c.call(
            "fanout_start",
            json!({"tasks_file": path.display().to_string(), "readback": "off"}),
        );
        assert_eq!(r["isError"], true, "{r:#}");
        let text = r.to_string();
        for s in FAKE_SECRETS {
            assert!(!text.contains(s), "{name}: {s} quoted: {r:#}");
        }
        assert_eq!(
            r["structuredContent"]["error"],
            format!("{} is not a fanout task file", path.display()),
            "{r:#}"
        );
        for cli in [
            vec!["validate", "--tasks", path.to_str().expect("utf-8")],
            vec![
                "run",
                "--tasks",
                path.to_str().expect("utf-8"),
                "--no-readback",
            ],
        ] {
            let out = repo.fanout(&cli);
            assert_ne!(out.status.code(), Some(0), "{cli:?}");
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(all.contains("is not a fanout task file"), "{cli:?}: {all}");
            for s in FAKE_SECRETS {
                assert!(!all.contains(s), "{cli:?} {name}: {s} quoted: {all}");
            }
        }
    }
    // A task file (it has `tasks`) with unknown fields and a wrong `version`: the problems name
    // the fields, never their values.
    let path = dir.path().join("typo.json");
    let doc = json!({"version": key, "token": token,
                     "tasks": [{"id": "a", "prompt": "p", "password": password}],
                     "defaults": {"aws": aws}});
    std::fs::write(&path, doc.to_string()).expect("write");
    let r = c.call(
        "fanout_start",
        json!({"tasks_file": path.display().to_string(), "readback": "off"}),
    );
    assert_eq!(r["isError"], true, "{r:#}");
    let text = r.to_string();
    assert!(
        text.contains("token") && text.contains("password") && text.contains("aws"),
        "{r:#}"
    );
    for s in FAKE_SECRETS {
        assert!(!text.contains(s), "{s} quoted: {r:#}");
    }
    let out = repo.fanout(&["validate", "--tasks", path.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"token\""), "{err}");
    for s in FAKE_SECRETS {
        assert!(!err.contains(s), "{s} quoted: {err}");
    }
    // A real task file is still read (an empty bare array is a task list without tasks).
    let path = dir.path().join("empty.json");
    std::fs::write(&path, "[]").expect("write");
    let out = repo.fanout(&["validate", "--tasks", path.to_str().expect("utf-8")]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not a fanout task file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.close(Duration::from_secs(30));
}
