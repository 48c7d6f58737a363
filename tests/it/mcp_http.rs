//! `fanout mcp --http`: the streamable HTTP transport driven byte by byte (guards: token,
//! Origin, loopback; sessions; SSE answers with progress; resumption with Last-Event-ID;
//! DELETE) and by real Claude Code configured by `fanout mcp-config claude --http`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mcp_server::{exec_tasks, marker_dir, sleepy_tasks, start_args};
use crate::support::TestRepo;

pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";

/// A `fanout mcp --http 127.0.0.1:0` and the port it listens on.
pub(crate) struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    pub(crate) fn start(repo: &TestRepo) -> HttpServer {
        HttpServer::start_with(repo, &[], Some(TOKEN))
    }

    /// With more arguments, and the token in the environment or not.
    fn start_with(repo: &TestRepo, args: &[&str], env_token: Option<&str>) -> HttpServer {
        let mut cmd = repo.fanout_command();
        cmd.args(["mcp", "--http", "127.0.0.1:0"]).args(args);
        match env_token {
            Some(t) => cmd.env("FANOUT_MCP_TOKEN", t),
            None => cmd.env_remove("FANOUT_MCP_TOKEN"),
        };
        let mut child = cmd
            .current_dir(&repo.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fanout mcp --http starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                    let port = rest.trim_end_matches("/mcp").parse::<u16>().ok();
                    let _ = tx.send(port);
                }
                eprintln!("[fanout mcp] {line}");
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .expect("fanout mcp --http says where it listens");
        HttpServer { child, port }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // SIGTERM: the server stops its runs cleanly.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange's answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn body(mut self) -> String {
        let mut s = String::new();
        let _ = self.reader.read_to_string(&mut s);
        s
    }

    fn json(self) -> Value {
        let b = self.body();
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("not JSON ({e}): {b}"))
    }

    /// The next server-sent event: (id, data), None when the stream ended.
    fn event(&mut self) -> Option<(String, Value)> {
        let (mut id, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Some((id, serde_json::from_str(&data).expect("event JSON")));
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }
}

/// Sends one request (`Connection: close`) and reads the answer's head.
fn send(port: u16, method: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut head = format!(
        "{method} /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).expect("write");
    conn.write_all(body.as_bytes()).expect("write");
    let mut reader = BufReader::new(conn);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).expect("header");
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Answer {
        status,
        headers,
        reader,
    }
}

const BEARER: &str = "Bearer test-token-0123456789abcdef";
const JSON_AND_SSE: &str = "application/json, text/event-stream";

fn rpc(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// POSTs a message in session `sid` (none for initialize).
fn post(port: u16, sid: Option<&str>, body: &str) -> Answer {
    let mut h = vec![
        ("Authorization", BEARER),
        ("Content-Type", "application/json"),
        ("Accept", JSON_AND_SSE),
    ];
    if let Some(s) = sid {
        h.push(("Mcp-Session-Id", s));
    }
    send(port, "POST", &h, body)
}

fn initialize(port: u16) -> String {
    let a = post(
        port,
        None,
        &rpc(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "it", "version": "1"}}),
        ),
    );
    assert_eq!(a.status, 200);
    let sid = a.header("Mcp-Session-Id").expect("session id").to_string();
    assert_eq!(a.json()["result"]["serverInfo"]["name"], "fanout");
    let n = post(
        port,
        Some(&sid),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(n.status, 202);
    sid
}

/// The result of a tools/call answered on an event stream, and the events before it.
fn call_streamed(
    port: u16,
    sid: &str,
    id: u64,
    tool: &str,
    args: Value,
    token: Option<u64>,
) -> (Value, Vec<(String, Value)>) {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some(t) = token {
        params["_meta"] = json!({"progressToken": t});
    }
    let mut a = post(port, Some(sid), &rpc(id, "tools/call", params));
    assert_eq!(a.status, 200);
    assert_eq!(a.header("Content-Type"), Some("text/event-stream"));
    let mut before = Vec::new();
    while let Some((eid, msg)) = a.event() {
        if msg["id"] == id {
            return (msg["result"].clone(), before);
        }
        before.push((eid, msg));
    }
    panic!("the stream ended without an answer: {before:#?}");
}

crate::both_ways!(
    http_refuses_missing_and_wrong_tokens_foreign_origins_and_unknown_sessions,
    http_guards
);

fn http_guards(runner: crate::support::Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let server = HttpServer::start(&repo);
    let port = server.port;
    let init = rpc(1, "initialize", json!({"protocolVersion": "2025-06-18"}));
    let json_headers = [
        ("Content-Type", "application/json"),
        ("Accept", JSON_AND_SSE),
    ];
    let a = send(port, "POST", &json_headers, &init);
    assert_eq!(a.status, 401);
    assert_eq!(a.header("WWW-Authenticate"), Some("Bearer"));
    for wrong in [
        "Bearer nope",
        "Bearer test-token-0123456789abcdeF",
        "Basic dGVzdA==",
        BEARER.trim_start_matches("Bearer "),
    ] {
        let mut h = json_headers.to_vec();
        h.push(("Authorization", wrong));
        assert_eq!(send(port, "POST", &h, &init).status, 401, "{wrong}");
    }
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example:80",
        "null",
    ] {
        let mut h = json_headers.to_vec();
        h.push(("Authorization", BEARER));
        h.push(("Origin", origin));
        let a = send(port, "POST", &h, &init);
        assert_eq!(a.status, 403, "{origin}");
        assert!(a.body().contains("Origin"));
    }
    // A page of this machine may (the Inspector's web UI).
    let mut h = json_headers.to_vec();
    h.push(("Authorization", BEARER));
    h.push(("Origin", "http://localhost:6274"));
    assert_eq!(send(port, "POST", &h, &init).status, 200);
    // Sessions: required after initialize, unknown ones are 404, DELETE ends one.
    let sid = initialize(port);
    let list = rpc(2, "tools/list", json!({}));
    assert_eq!(post(port, None, &list).status, 400);
    assert_eq!(post(port, Some("0123"), &list).status, 404);
    let tools = post(port, Some(&sid), &list).json();
    assert_eq!(
        tools["result"]["tools"].as_array().map(Vec::len),
        Some(6),
        "{tools:#}"
    );
    let d = send(
        port,
        "DELETE",
        &[("Authorization", BEARER), ("Mcp-Session-Id", &sid)],
        "",
    );
    assert_eq!(d.status, 204);
    assert_eq!(post(port, Some(&sid), &list).status, 404);
    // Bounded: an oversized body is refused before it is read.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(b"POST /mcp HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

crate::both_ways!(
    http_listens_on_loopback_only_unless_told_and_needs_a_token,
    loopback_and_token
);

fn loopback_and_token(runner: crate::support::Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let out = repo
        .fanout_command()
        .args(["mcp", "--http", "0.0.0.0:0"])
        .env("FANOUT_MCP_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = crate::support::stderr(&out);
    assert!(
        err.contains("not a loopback address") && err.contains("--allow-remote"),
        "{err}"
    );
    let out = repo
        .fanout_command()
        .args(["mcp", "--http", "127.0.0.1:0"])
        .env_remove("FANOUT_MCP_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = crate::support::stderr(&out);
    assert!(
        err.contains("--token-file") && err.contains("FANOUT_MCP_TOKEN"),
        "{err}"
    );
    // A token file: too short a token is refused; a good one is the only one that passes.
    let dir = crate::mcp_server::marker_dir();
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").expect("write");
    let out = repo
        .fanout_command()
        .args(["mcp", "--http", "127.0.0.1:0", "--token-file"])
        .arg(&short)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(
        crate::support::stderr(&out).contains("too short"),
        "{out:?}"
    );
    let file = dir.path().join("token");
    std::fs::write(&file, "file-token-0123456789abcdef\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let path = file.display().to_string();
    let from_file = HttpServer::start_with(&repo, &["--token-file", &path], Some(TOKEN));
    let init = rpc(1, "initialize", json!({"protocolVersion": "2025-06-18"}));
    let with = |bearer: &str| {
        send(
            from_file.port,
            "POST",
            &[
                ("Authorization", bearer),
                ("Content-Type", "application/json"),
                ("Accept", JSON_AND_SSE),
            ],
            &init,
        )
        .status
    };
    assert_eq!(with("Bearer file-token-0123456789abcdef"), 200);
    assert_eq!(with(BEARER), 401, "the file's token, not the environment's");
    drop(from_file);
    // Bound to loopback, the server is not reachable at this machine's other addresses.
    let server = HttpServer::start(&repo);
    let others = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname");
    let others: Vec<String> = String::from_utf8_lossy(&others.stdout)
        .split_whitespace()
        .filter(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
        .collect();
    assert!(
        !others.is_empty(),
        "this machine has no other IPv4 address to try"
    );
    for addr in others {
        let reached = TcpStream::connect_timeout(
            &format!("{addr}:{}", server.port).parse().expect("addr"),
            Duration::from_secs(3),
        );
        assert!(reached.is_err(), "reached the loopback server at {addr}");
    }
}

#[test]
fn http_streams_progress_lists_changes_and_resumes_after_a_lost_stream() {
    let repo = TestRepo::with_files(1);
    let marker = marker_dir();
    let server = HttpServer::start(&repo);
    let port = server.port;
    let sid = initialize(port);
    // The session's own stream: resource list changes arrive there.
    let mut listen = send(
        port,
        "GET",
        &[
            ("Authorization", BEARER),
            ("Mcp-Session-Id", &sid),
            ("Accept", "text/event-stream"),
        ],
        "",
    );
    assert_eq!(listen.status, 200);
    let (r, _) = call_streamed(
        port,
        &sid,
        2,
        "fanout_start",
        start_args(sleepy_tasks(1, marker.path()), json!({})),
        None,
    );
    let run_id = r["structuredContent"]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    let (eid, note) = listen.event().expect("a list change");
    assert_eq!(note["method"], "notifications/resources/list_changed");
    assert!(eid.starts_with("0-"), "{eid}");
    // A wait streams progress beats, then its answer.
    let (w, before) = call_streamed(
        port,
        &sid,
        3,
        "fanout_wait",
        json!({"run_id": run_id, "timeout_secs": 6}),
        Some(9),
    );
    assert_eq!(w["structuredContent"]["ended"], false, "{w:#}");
    assert!(
        before
            .iter()
            .any(|(_, m)| m["method"] == "notifications/progress"
                && m["params"]["progressToken"] == 9),
        "{before:#?}"
    );
    // A stream lost after its first event is taken up again with Last-Event-ID.
    let mut lost = post(
        port,
        Some(&sid),
        &rpc(
            4,
            "tools/call",
            json!({"name": "fanout_wait", "_meta": {"progressToken": 10},
            "arguments": {"run_id": run_id, "timeout_secs": 6}}),
        ),
    );
    let (first, _) = lost.event().expect("a first event");
    drop(lost);
    let mut resumed = send(
        port,
        "GET",
        &[
            ("Authorization", BEARER),
            ("Mcp-Session-Id", &sid),
            ("Accept", "text/event-stream"),
            ("Last-Event-ID", &first),
        ],
        "",
    );
    assert_eq!(resumed.status, 200);
    let mut ids = Vec::new();
    let answer = loop {
        let (eid, msg) = resumed.event().expect("the rest of the stream");
        ids.push(eid);
        if msg["id"] == 4 {
            break msg;
        }
    };
    assert_eq!(
        answer["result"]["structuredContent"]["run_id"],
        run_id.as_str()
    );
    assert!(!ids.contains(&first), "{first} replayed: {ids:?}");
    // The run's end is a list change too.
    std::fs::write(marker.path().join("fast"), "").expect("marker");
    let (w, _) = call_streamed(
        port,
        &sid,
        5,
        "fanout_wait",
        json!({"run_id": run_id, "timeout_secs": 120}),
        None,
    );
    assert_eq!(w["structuredContent"]["counts"]["merged"], 1, "{w:#}");
    let (_, note) = listen.event().expect("a second list change");
    assert_eq!(note["method"], "notifications/resources/list_changed");
    // JSON answers when the client takes no stream.
    let a = send(
        port,
        "POST",
        &[
            ("Authorization", BEARER),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("Mcp-Session-Id", &sid),
        ],
        &rpc(
            6,
            "tools/call",
            json!({"name": "fanout_status", "arguments": {"run_id": run_id}}),
        ),
    );
    assert_eq!(a.header("Content-Type"), Some("application/json"));
    assert_eq!(
        a.json()["result"]["structuredContent"]["status"],
        "finished"
    );
}

#[test]
fn mcp_config_http_takes_the_token_from_the_clients_environment() {
    let url = "http://build.example:8931/mcp";
    let out = Command::new(crate::support::fanout_bin())
        .args(["mcp-config", "claude", "--http", url])
        .output()
        .expect("runs");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let f = &v["mcpServers"]["fanout"];
    assert_eq!(f["type"], "http");
    assert_eq!(f["url"], url);
    assert_eq!(f["headers"]["Authorization"], "Bearer ${FANOUT_MCP_TOKEN}");
    let out = Command::new(crate::support::fanout_bin())
        .args(["mcp-config", "codex", "--http", url])
        .output()
        .expect("runs");
    let t: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("toml");
    let f = &t["mcp_servers"]["fanout"];
    assert_eq!(f["url"].as_str(), Some(url));
    assert_eq!(f["bearer_token_env_var"].as_str(), Some("FANOUT_MCP_TOKEN"));
    assert!(f.get("command").is_none(), "{f:?}");
}

#[test]
fn claude_code_drives_fanout_over_http() {
    use crate::anthropic_server::{AnthropicServer, Reply};
    let repo = TestRepo::with_files(1);
    let server = HttpServer::start(&repo);
    let tasks = start_args(exec_tasks(3, ""), json!({}));
    let model = AnthropicServer::start(move |req| {
        let call = |tool: &str, input: Value| Reply::ToolUse {
            name: format!("mcp__fanout__{tool}"),
            input,
        };
        let Some(out) = req.last_tool_result() else {
            return call("fanout_start", tasks.clone());
        };
        let Some(v) = crate::mcp_server::json_in(&out) else {
            return Reply::Text(format!("no JSON from fanout: {out}"));
        };
        match v["ended"].as_bool() {
            Some(true) => Reply::Text(format!("all done: {} merged", v["counts"]["merged"])),
            _ => call(
                "fanout_wait",
                json!({"run_id": v["run_id"], "timeout_secs": 60}),
            ),
        }
    });
    let cfg = tempfile::tempdir().expect("tmp");
    let out = Command::new(crate::support::fanout_bin())
        .args(["mcp-config", "claude", "--http", &server.url()])
        .output()
        .expect("runs");
    let mcp_json = cfg.path().join("mcp.json");
    std::fs::write(&mcp_json, &out.stdout).expect("write");
    let home = cfg.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let out = Command::new(crate::mcp_server::agent_bin(
        "claude-code-2.1.332",
        "claude",
    ))
    .args(["-p", "Run the tasks through fanout.", "--mcp-config"])
    .arg(&mcp_json)
    .args(["--strict-mcp-config", "--dangerously-skip-permissions"])
    .current_dir(&repo.path)
    .env("HOME", &home)
    .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
    .env("ANTHROPIC_BASE_URL", model.base_url())
    .env("ANTHROPIC_API_KEY", "test-key")
    .env("FANOUT_MCP_TOKEN", TOKEN)
    .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("IS_SANDBOX", "1")
    .stdin(Stdio::null())
    .output()
    .expect("claude runs");
    let stdout = crate::support::stdout(&out);
    let stderr = crate::support::stderr(&out);
    assert!(stdout.contains("all done: 3 merged"), "{stdout}\n{stderr}");
    let merged = crate::support::git_text(&repo.path, &["branch", "--list", "fanout/*/merged"]);
    assert!(!merged.is_empty(), "{stdout}");
}

/// A profile's MCP server by URL is checked when the task file is read.
#[test]
fn mcp_servers_by_url_are_validated() {
    let repo = TestRepo::with_files(1);
    let tasks = json!({
        "version": 1,
        "agents": {"codex": {"protocol": "auto", "command": "codex", "mcp_servers": {
            "both": {"command": "srv", "url": "http://127.0.0.1:1/mcp"},
            "ftp": {"url": "ftp://host/mcp"},
            "local_args": {"url": "https://host/mcp", "args": ["x"]},
            "token_no_url": {"command": "srv", "bearer_token_env_var": "T"},
            "headers": {"url": "https://host/mcp", "http_headers": {"X-A": 1}},
            "ok": {"url": "https://host/mcp", "bearer_token_env_var": "T",
                   "http_headers": {"X-Team": "build"}},
        }}},
        "tasks": [{"id": "a", "prompt": "x"}],
    });
    let file = repo.write_tasks(&tasks);
    let out = repo.fanout(&["validate", "--tasks", &file.display().to_string()]);
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        crate::support::stdout(&out),
        crate::support::stderr(&out)
    );
    for needle in [
        "mcp_servers.both",
        "not both",
        "mcp_servers.ftp.url",
        "mcp_servers.local_args.args",
        "mcp_servers.token_no_url.bearer_token_env_var",
        "mcp_servers.headers.http_headers.X-A",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    assert!(!text.contains("mcp_servers.ok"), "{text}");
}

/// A Codex 0.171.0 agent reaches `fanout mcp --http` by URL from inside its sandbox, with the
/// token passed by name: the call works, the token is in no file of the run, and `fanout log`
/// names the server, the tool and the outcome.
#[test]
fn a_codex_agent_calls_an_mcp_server_by_url_with_a_bearer_token() {
    use crate::model_server::{self, ModelServer, Reply};
    let repo = TestRepo::with_files(1);
    let server = HttpServer::start(&repo);
    let model = ModelServer::start(|req| {
        let Some(ns) = req
            .tool_names()
            .into_iter()
            .find(|n| n.starts_with("mcp__fanout"))
        else {
            return Reply::Message(format!("no fanout tools in {:?}", req.tool_names()));
        };
        let answered = req
            .input()
            .iter()
            .any(|i| i["type"] == "function_call_output");
        if answered {
            return Reply::Message("done".into());
        }
        Reply::Function {
            namespace: Some(ns),
            name: "fanout_status".into(),
            arguments: json!({}),
        }
    });
    let home = tempfile::tempdir().expect("tmp");
    std::fs::write(
        home.path().join("config.toml"),
        model_server::codex_config_for_port(model.port()),
    )
    .expect("write");
    let tasks = json!({
        "version": 1,
        "agents": {"codex": {"protocol": "auto", "command": "codex", "mcp_servers": {
            "fanout": {"url": server.url(), "bearer_token_env_var": "FANOUT_MCP_TOKEN",
                       "http_headers": {"X-Fanout-Test": "1"}}}}},
        "tasks": [{"id": "ask", "prompt": "List the fanout runs."}],
    });
    let tasks_file = repo.write_tasks(&tasks);
    let report_file = repo.report_path();
    let out = Command::new(crate::support::fanout_bin())
        .args(["run", "--repo"])
        .arg(&repo.path)
        .arg("--tasks")
        .arg(&tasks_file)
        // The server listens on the host's loopback, which a task's own namespace (the
        // default `--net isolated`) cannot reach: MCP servers by URL need `--net default`.
        .args(["--no-readback", "--quiet", "--net", "default", "--report"])
        .arg(&report_file)
        .env(
            "FANOUT_CODEX_BIN",
            crate::mcp_server::agent_bin("codex-0.171.0", "codex"),
        )
        .env("CODEX_HOME", home.path())
        .env("FANOUT_MCP_TOKEN", TOKEN)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("fanout runs");
    let stderr = crate::support::stderr(&out);
    let report: Value = std::fs::read_to_string(&report_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no report:\n{stderr}"));
    let t = &report["tasks"][0];
    assert_eq!(t["status"], "no_changes", "{t:#}\n{stderr}");
    // The model got fanout's answer: the repository's runs (the one going on among them).
    let reqs = model.requests();
    let output = reqs
        .iter()
        .flat_map(|r| r.input())
        .find(|i| i["type"] == "function_call_output")
        .map(|i| i["output"].to_string())
        .unwrap_or_default();
    assert!(output.contains("runs"), "{output}");
    assert!(
        output.contains(report["run_id"].as_str().unwrap_or("?")),
        "{output}"
    );
    // The token is passed by name, never written down.
    let run_dir = std::path::Path::new(report["run_dir"].as_str().expect("run dir"));
    let mut leaked = Vec::new();
    for entry in walk(run_dir) {
        if std::fs::read_to_string(&entry).is_ok_and(|t| t.contains(TOKEN)) {
            leaked.push(entry);
        }
    }
    assert!(leaked.is_empty(), "the token is in {leaked:?}");
    let log = repo.fanout(&["log", report["run_id"].as_str().unwrap_or("last"), "ask"]);
    let log = crate::support::stdout(&log);
    assert!(log.contains("mcpToolCall: fanout/fanout_status"), "{log}");
    assert!(log.contains("fanout/fanout_status → completed"), "{log}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Codex 0.169.0 and 0.171.0 configured by `fanout mcp-config codex --http` drive a whole run
/// over HTTP, the token read from their environment.
#[test]
fn codex_drives_fanout_over_http() {
    for version in ["0.169.0", "0.171.0"] {
        let repo = TestRepo::with_files(1);
        let server = HttpServer::start(&repo);
        let out = Command::new(crate::support::fanout_bin())
            .args(["mcp-config", "codex", "--http", &server.url()])
            .output()
            .expect("runs");
        let config = String::from_utf8_lossy(&out.stdout).into_owned();
        crate::mcp_server::codex_calls_fanout_start_and_wait(
            &repo,
            version,
            &config,
            &[("FANOUT_MCP_TOKEN", TOKEN)],
        );
    }
}
