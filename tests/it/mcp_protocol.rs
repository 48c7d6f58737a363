//! `fanout mcp` as real clients use it: tool annotations and output schemas (validated with a
//! JSON-Schema validator), progress beats during a long wait, `notifications/cancelled`,
//! batches of revision 2025-03-26, resource list changes, and a cancelled run told in one
//! vocabulary with errors in words.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mcp_server::{
    exec_tasks, marker_dir, sleepy_tasks, start_args, wait_until_running, Client,
};
use crate::support::TestRepo;

fn run_id_of(r: &Value) -> String {
    r["structuredContent"]["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id: {r:#}"))
        .to_string()
}

/// Every tool's `outputSchema`, compiled.
fn output_validators(c: &mut Client) -> Vec<(String, jsonschema::Validator)> {
    let tools = c.request("tools/list", json!({}));
    let tools = tools["result"]["tools"].as_array().cloned().expect("tools");
    assert_eq!(tools.len(), 6);
    tools
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap_or("").to_string();
            let a = &t["annotations"];
            for hint in [
                "readOnlyHint",
                "destructiveHint",
                "idempotentHint",
                "openWorldHint",
            ] {
                assert!(a[hint].is_boolean(), "{name}: {hint} missing: {t:#}");
            }
            assert_eq!(t["outputSchema"]["type"], "object", "{t:#}");
            let v = jsonschema::validator_for(&t["outputSchema"])
                .unwrap_or_else(|e| panic!("{name}: bad outputSchema: {e}"));
            (name, v)
        })
        .collect()
}

fn assert_fits(validators: &[(String, jsonschema::Validator)], tool: &str, r: &Value) {
    let (_, v) = validators
        .iter()
        .find(|(n, _)| n == tool)
        .expect("tool listed");
    let errors: Vec<String> = v
        .iter_errors(&r["structuredContent"])
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{tool}: {errors:?}\n{r:#}");
}

#[test]
fn every_result_fits_its_tools_output_schema_and_wait_and_status_are_read_only() {
    let repo = TestRepo::with_files(1);
    let mut c = Client::start(&repo);
    c.initialize();
    let validators = output_validators(&mut c);
    let tools = c.request("tools/list", json!({}));
    for t in tools["result"]["tools"].as_array().expect("tools") {
        let read_only = t["annotations"]["readOnlyHint"] == true;
        let want = matches!(
            t["name"].as_str(),
            Some("fanout_wait" | "fanout_status" | "fanout_diff")
        );
        assert_eq!(read_only, want, "{t:#}");
    }
    let r = c.call("fanout_start", start_args(exec_tasks(2, ""), json!({})));
    assert_fits(&validators, "fanout_start", &r);
    let run_id = run_id_of(&r);
    let w = c.call(
        "fanout_wait",
        json!({"run_id": run_id, "timeout_secs": 120}),
    );
    assert_eq!(w["structuredContent"]["ended"], true, "{w:#}");
    assert_fits(&validators, "fanout_wait", &w);
    for (tool, args) in [
        ("fanout_status", json!({})),
        ("fanout_status", json!({"run_id": run_id})),
        ("fanout_status", json!({"run_id": "20200101-000000-0000"})),
        ("fanout_diff", json!({"run_id": run_id, "task": "t1"})),
        ("fanout_diff", json!({"run_id": run_id, "task": "t9"})),
        ("fanout_cancel", json!({"run_id": run_id, "repo": "."})),
        ("fanout_merge", json!({"run_id": run_id, "into": "-bad"})),
        ("fanout_merge", json!({"run_id": run_id, "into": "main"})),
        ("fanout_start", json!({"tasks": [{"id": "a"}]})),
    ] {
        let r = c.call(tool, args.clone());
        assert_fits(&validators, tool, &r);
        assert!(r["structuredContent"].is_object(), "{tool} {args}: {r:#}");
    }
    assert!(c.close(Duration::from_secs(20)).success());
}

#[test]
fn a_long_wait_sends_progress_at_least_every_ten_seconds_and_says_how_to_go_on() {
    let repo = TestRepo::with_files(1);
    let marker = marker_dir();
    let mut c = Client::start(&repo);
    c.initialize();
    let tools = c.request("tools/list", json!({}));
    let wait_tool = tools["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "fanout_wait").cloned())
        .expect("fanout_wait");
    let description = wait_tool["description"].as_str().unwrap_or("");
    assert!(description.contains("default 45 s"), "{description}");
    assert!(description.contains("timeout_secs"), "{description}");
    let r = c.call(
        "fanout_start",
        start_args(sleepy_tasks(2, marker.path()), json!({})),
    );
    let run_id = run_id_of(&r);
    wait_until_running(&mut c, &run_id);
    let id = json!("beat");
    let asked = Instant::now();
    c.send_raw(
        &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "fanout_wait", "arguments": {"run_id": run_id, "timeout_secs": 22},
            "_meta": {"progressToken": 7}}})
        .to_string(),
    );
    let mut beats = Vec::new();
    let w = loop {
        let msg = c
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a message");
        if msg.get("id") == Some(&id) {
            break msg;
        }
        if msg["method"] == "notifications/progress" && msg["params"]["progressToken"] == 7 {
            beats.push((asked.elapsed(), msg["params"].clone()));
        }
    };
    let report = &w["result"]["structuredContent"];
    assert_eq!(report["ended"], false, "{w:#}");
    assert!(
        report["next"]
            .as_str()
            .unwrap_or("")
            .contains("fanout_wait"),
        "{report:#}"
    );
    // A beat at once, then none more than 10 s apart; the value grows, the total stays.
    assert!(beats.len() >= 3, "{beats:#?}");
    let mut times: Vec<Duration> = beats.iter().map(|b| b.0).collect();
    times.push(asked.elapsed());
    assert!(
        times
            .windows(2)
            .all(|w| w[1] - w[0] <= Duration::from_secs(10)),
        "{times:?}"
    );
    let values: Vec<f64> = beats
        .iter()
        .filter_map(|b| b.1["progress"].as_f64())
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    assert!(
        values.iter().all(|v| *v < 1.0),
        "nothing ended yet: {values:?}"
    );
    for (_, p) in &beats {
        assert_eq!(p["total"], 2, "{p:#}");
        let m = p["message"].as_str().unwrap_or("");
        assert!(m.starts_with("0/2 task(s) ended"), "{m}");
        assert!(m.contains("latest: "), "{m}");
    }
    std::fs::write(marker.path().join("fast"), "").expect("marker");
    let w = c.call(
        "fanout_wait",
        json!({"run_id": run_id, "timeout_secs": 120}),
    );
    assert_eq!(w["structuredContent"]["counts"]["merged"], 2, "{w:#}");
    assert!(c.close(Duration::from_secs(20)).success());
}

#[test]
fn a_cancelled_wait_stops_and_is_not_answered() {
    let repo = TestRepo::with_files(1);
    let marker = marker_dir();
    let mut c = Client::start(&repo);
    c.initialize();
    let r = c.call(
        "fanout_start",
        start_args(sleepy_tasks(1, marker.path()), json!({})),
    );
    let run_id = run_id_of(&r);
    for (n, id) in [json!("w-1"), json!(41)].into_iter().enumerate() {
        c.send_raw(
            &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "fanout_wait", "arguments": {"run_id": run_id, "timeout_secs": 120}}})
            .to_string(),
        );
        std::thread::sleep(Duration::from_millis(300));
        // Another id of the same text is not this request.
        let other = if n == 0 { json!(1_000) } else { json!("41") };
        for target in [other, id.clone()] {
            c.send_raw(
                &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": target, "reason": "client timeout"}})
                .to_string(),
            );
        }
        // The server goes on answering, and the cancelled wait never answers.
        let started = Instant::now();
        let p = c.request("ping", json!({}));
        assert_eq!(p["result"], json!({}), "{p:#}");
        while started.elapsed() < Duration::from_secs(4) {
            if let Ok(msg) = c.lines.recv_timeout(Duration::from_millis(200)) {
                assert_ne!(
                    msg.get("id"),
                    Some(&id),
                    "a cancelled call was answered: {msg:#}"
                );
            }
        }
    }
    // A wait that is not cancelled still answers.
    std::fs::write(marker.path().join("fast"), "").expect("marker");
    let w = c.call(
        "fanout_wait",
        json!({"run_id": run_id, "timeout_secs": 120}),
    );
    assert_eq!(w["structuredContent"]["ended"], true, "{w:#}");
    assert!(c.close(Duration::from_secs(20)).success());
}

/// The next message that is an array (a batch's answer).
fn next_batch(c: &mut Client) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = c.lines.recv_timeout(left).expect("a batch answer");
        if let Value::Array(a) = msg {
            return a;
        }
        c.notes.push(msg);
    }
}

#[test]
fn batches_are_answered_after_2025_03_26_and_refused_after_2025_06_18() {
    let repo = TestRepo::with_files(1);
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "s", "method": "tools/call",
         "params": {"name": "fanout_status", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 3, "method": "no/such"},
        {"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}},
        7
    ])
    .to_string();
    let mut c = Client::start(&repo);
    c.initialize();
    c.send_raw(&batch);
    let r = c.response(&Value::Null, Duration::from_secs(10));
    assert_eq!(r["error"]["code"], -32600, "{r:#}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("2025-03-26"),
        "{r:#}"
    );
    drop(c);

    let mut c = Client::start(&repo);
    let r = c.request(
        "initialize",
        json!({"protocolVersion": "2025-03-26", "capabilities": {}}),
    );
    assert_eq!(r["result"]["protocolVersion"], "2025-03-26");
    c.send_raw(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    c.send_raw(&batch);
    let answers = next_batch(&mut c);
    let by_id = |id: Value| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no answer to {id}: {answers:#?}"))
    };
    assert_eq!(answers.len(), 5, "{answers:#?}");
    assert_eq!(by_id(json!(1))["result"], json!({}));
    assert!(by_id(json!("s"))["result"]["structuredContent"]["runs"].is_array());
    assert_eq!(by_id(json!(3))["error"]["code"], -32601);
    assert_eq!(by_id(json!(4))["error"]["code"], -32600);
    assert_eq!(by_id(Value::Null)["error"]["code"], -32600);
    c.send_raw("[]");
    let r = c.response(&Value::Null, Duration::from_secs(10));
    assert_eq!(r["error"]["code"], -32600, "{r:#}");
    assert!(c.close(Duration::from_secs(20)).success());
}

#[test]
fn resources_list_changes_when_runs_start_and_end() {
    let repo = TestRepo::with_files(1);
    let mut c = Client::start(&repo);
    let init = c.initialize();
    assert_eq!(
        init["result"]["capabilities"]["resources"]["listChanged"], true,
        "{init:#}"
    );
    let r = c.call("fanout_start", start_args(exec_tasks(1, ""), json!({})));
    let run_id = run_id_of(&r);
    let w = c.call(
        "fanout_wait",
        json!({"run_id": run_id, "timeout_secs": 120}),
    );
    assert_eq!(w["structuredContent"]["ended"], true, "{w:#}");
    // The run's end is notified from its thread just after it ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let changed = |c: &Client| {
        c.notes
            .iter()
            .filter(|n| n["method"] == "notifications/resources/list_changed")
            .count()
    };
    while changed(&c) < 2 && Instant::now() < deadline {
        if let Ok(m) = c.lines.recv_timeout(Duration::from_millis(200)) {
            c.notes.push(m);
        }
    }
    assert_eq!(changed(&c), 2, "{:#?}", c.notes);
    let list = c.request("resources/list", json!({}));
    let uri = format!("fanout://runs/{run_id}/report");
    assert!(
        list["result"]["resources"]
            .as_array()
            .is_some_and(|l| l.iter().any(|r| r["uri"] == uri.as_str())),
        "{list:#}"
    );
    assert!(c.close(Duration::from_secs(20)).success());
}

#[test]
fn a_cancelled_run_is_interrupted_everywhere_and_merge_says_why_in_words() {
    let repo = TestRepo::with_files(1);
    let marker = marker_dir();
    let mut c = Client::start(&repo);
    c.initialize();
    let r = c.call(
        "fanout_start",
        start_args(sleepy_tasks(3, marker.path()), json!({"jobs": 2})),
    );
    let run_id = run_id_of(&r);
    wait_until_running(&mut c, &run_id);
    let repo_arg = repo.path.display().to_string();
    let x = c.call("fanout_cancel", json!({"run_id": "last", "repo": repo_arg}));
    assert_eq!(x["isError"], false, "{x:#}");
    assert_eq!(x["structuredContent"]["cancel_requested"], true, "{x:#}");
    let w = c.call("fanout_wait", json!({"run_id": run_id, "timeout_secs": 60}));
    let view = &w["structuredContent"];
    assert_eq!(view["status"], "interrupted", "{w:#}");
    let statuses: Vec<&str> = view["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["status"].as_str())
        .collect();
    assert_eq!(statuses, ["interrupted"; 3], "{view:#}");
    assert_eq!(view["counts"]["interrupted"], 3, "{view:#}");
    // Nothing merged: no branch is named that does not exist.
    let branch = format!("fanout/{run_id}/merged");
    let exists = std::process::Command::new("git")
        .args(["rev-parse", "--verify", "-q", &branch])
        .current_dir(&repo.path)
        .output()
        .expect("git")
        .status
        .success();
    assert_eq!(view["integration_branch"].is_string(), exists, "{view:#}");
    let m = c.call("fanout_merge", json!({"run_id": run_id, "into": "main"}));
    assert_eq!(m["isError"], true, "{m:#}");
    let e = m["structuredContent"]["error"].as_str().unwrap_or("");
    // No task got through: the run changed nothing, so there is no branch.
    assert!(!exists, "{view:#}");
    assert!(e.contains("nothing to merge"), "{e}");
    assert!(e.contains("fanout resume"), "{e}");
    assert!(!e.contains("class="), "raw git text: {e}");
    // The run's resource (report.json) says the same.
    let read = c.request(
        "resources/read",
        json!({"uri": format!("fanout://runs/{run_id}/report")}),
    );
    let text = read["result"]["contents"][0]["text"].as_str().unwrap_or("");
    let report: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {read:#}"));
    assert_eq!(report["interrupted"], true, "{report:#}");
    assert_eq!(report["counts"]["interrupted"], 3, "{report:#}");
    assert!(report["counts"].get("failed").is_none(), "{report:#}");
    assert_eq!(
        report["integration_branch"].is_string(),
        exists,
        "{report:#}"
    );
    // The command line says the same.
    let out = repo.fanout(&["status", &run_id]);
    let text = crate::support::stdout(&out);
    assert!(text.contains("interrupted"), "{text}");
    assert!(!text.contains("failed"), "{text}");
    assert!(c.close(Duration::from_secs(20)).success());
}

/// Runs real Claude Code 2.1.332 (`claude -p`) against `fanout mcp` as `fanout mcp-config
/// claude` prints it, with `script` as its model; returns stdout and stderr.
fn claude_with_fanout(
    repo: &TestRepo,
    server: &crate::anthropic_server::AnthropicServer,
    mcp_config: &str,
) -> (String, String) {
    use std::process::{Command, Stdio};
    let cfg_dir = tempfile::tempdir().expect("tmp");
    let mcp_json = cfg_dir.path().join("mcp.json");
    std::fs::write(&mcp_json, mcp_config).expect("write");
    let home = cfg_dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let out = Command::new(crate::mcp_server::agent_bin(
        "claude-code-2.1.332",
        "claude",
    ))
    .args(["-p", "Run the tasks through fanout.", "--mcp-config"])
    .arg(&mcp_json)
    .args([
        "--strict-mcp-config",
        "--permission-mode",
        "bypassPermissions",
        "--dangerously-skip-permissions",
    ])
    .args(
        std::env::var("FANOUT_TEST_CLAUDE_DEBUG")
            .map(|d| vec!["--debug-file".to_string(), d])
            .unwrap_or_default(),
    )
    .current_dir(&repo.path)
    .env("FANOUT_MCP_TOKEN", crate::mcp_http::TOKEN)
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
    (crate::support::stdout(&out), crate::support::stderr(&out))
}

/// What the scripted model saw along the way.
#[derive(Default)]
struct Seen {
    runs: Vec<String>,
    waits_sent: Option<Instant>,
    waits_took: Option<Duration>,
    start_result: String,
    read_result: String,
}

/// Real Claude Code: two `fanout_wait` calls of one turn run at once (they are read-only), the
/// runs started during the session are listed as resources afterwards (list_changed), and the
/// model gets `structuredContent` (compact JSON) for a successful call.
#[test]
fn claude_code_runs_two_waits_at_once_and_reads_and_lists_the_runs_as_resources() {
    let repo = TestRepo::with_files(1);
    two_waits_and_resources(&repo, &crate::mcp_server::fanout_mcp_config("claude"));
}

#[test]
fn claude_code_over_http_runs_two_waits_at_once_and_reads_and_lists_the_runs_as_resources() {
    let repo = TestRepo::with_files(1);
    let server = crate::mcp_http::HttpServer::start(&repo);
    let out = std::process::Command::new(crate::support::fanout_bin())
        .args(["mcp-config", "claude", "--http", &server.url()])
        .output()
        .expect("runs");
    two_waits_and_resources(&repo, &String::from_utf8_lossy(&out.stdout));
}

fn two_waits_and_resources(repo: &TestRepo, mcp_config: &str) {
    use crate::anthropic_server::{AnthropicServer, Reply};
    use std::sync::{Arc, Mutex};
    let marker = marker_dir();
    let tasks = start_args(
        sleepy_tasks(1, marker.path()),
        json!({"repo": repo.path.display().to_string()}),
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = AnthropicServer::start({
        let seen = seen.clone();
        move |req| {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            let call = |tool: &str, input: Value| (format!("mcp__fanout__{tool}"), input);
            let step = req.body["messages"]
                .as_array()
                .map(|m| m.iter().filter(|m| m["role"] == "assistant").count())
                .unwrap_or(0);
            let last = req.last_tool_result().unwrap_or_default();
            if (1..=2).contains(&step) {
                if step == 1 {
                    seen.start_result = last.clone();
                }
                match crate::mcp_server::json_in(&last)
                    .and_then(|v| v["run_id"].as_str().map(str::to_string))
                {
                    Some(id) => seen.runs.push(id),
                    None => return Reply::Text(format!("no run id from fanout: {last}")),
                }
            }
            match step {
                0 | 1 => {
                    let (name, input) = call("fanout_start", tasks.clone());
                    Reply::ToolUse { name, input }
                }
                2 => {
                    seen.waits_sent = Some(Instant::now());
                    Reply::ToolUses(
                        seen.runs
                            .iter()
                            .map(|r| call("fanout_wait", json!({"run_id": r, "timeout_secs": 8})))
                            .collect(),
                    )
                }
                3 => {
                    seen.waits_took = seen.waits_sent.map(|t| t.elapsed());
                    Reply::ToolUse {
                        name: "ReadMcpResourceTool".into(),
                        input: json!({"server": "fanout",
                                      "uri": format!("fanout://runs/{}/report", seen.runs[0])}),
                    }
                }
                4 => {
                    seen.read_result = last;
                    Reply::Text("all done".into())
                }
                _ => Reply::Text("all done".into()),
            }
        }
    });
    let (stdout, stderr) = claude_with_fanout(repo, &server, mcp_config);
    std::fs::write(marker.path().join("fast"), "").expect("marker");
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(seen.runs.len(), 2, "{stdout}\n{stderr}");
    // structuredContent is compact JSON; the text block is pretty-printed.
    assert!(
        seen.start_result.contains("\"run_id\":\""),
        "not structuredContent: {}",
        seen.start_result
    );
    let took = seen.waits_took.expect("the waits were answered");
    eprintln!("two 8 s waits of one turn took {took:?}");
    assert!(
        took < Duration::from_secs(14),
        "the waits ran one after the other: {took:?}"
    );
    // A run's report is read by its URI in the session that started it.
    assert!(
        seen.read_result
            .contains(&format!("\"run_id\": \"{}\"", seen.runs[0]))
            || seen
                .read_result
                .contains(&format!("\\\"run_id\\\": \\\"{}\\\"", seen.runs[0])),
        "{}\n{stderr}",
        seen.read_result
    );
    // Claude Code lists resources when it connects (`-p` does not refresh on list_changed):
    // the next session lists the runs of the one before.
    let lister = AnthropicServer::start(|req| {
        if req.last_tool_result().is_none() {
            Reply::ToolUse {
                name: "ListMcpResourcesTool".into(),
                input: json!({"server": "fanout"}),
            }
        } else {
            Reply::Text("listed".into())
        }
    });
    let (stdout2, stderr2) = claude_with_fanout(repo, &lister, mcp_config);
    let listed = lister
        .requests()
        .last()
        .and_then(|r| r.last_tool_result())
        .unwrap_or_default();
    for id in &seen.runs {
        assert!(
            listed.contains(&format!("fanout://runs/{id}/report")),
            "run {id} not listed: {listed}\n{stdout2}\n{stderr2}"
        );
    }
    assert!(stdout.contains("all done"), "{stdout}\n{stderr}");
    // Over stdio the server stopped the runs when Claude left; over HTTP they run on (the marker
    // lets them end) beside the server itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let left: Vec<String> = repo
            .live_processes()
            .into_iter()
            .filter(|p| !p.contains("--http"))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(left.is_empty(), "{left:?}");
}
