//! The official MCP TypeScript SDK client (pinned by scripts/install-agents.sh) against
//! `fanout mcp` over stdio and over `--http`: every result passes the SDK's own outputSchema
//! check, a wait longer than the client's request timeout succeeds with
//! `resetTimeoutOnProgress` (and times out without it), and the run is listed as a resource.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::mcp_http::{HttpServer, TOKEN};
use crate::mcp_server::{exec_tasks, start_args};
use crate::support::TestRepo;

/// The client's request timeout, and a wait half again as long.
const TIMEOUT_MS: u64 = 8_000;
const WAIT_SECS: u64 = 14;

fn sdk_dir() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents/mcp-sdk-1.32.2/node_modules/@modelcontextprotocol/sdk");
    assert!(
        p.join("package.json").is_file(),
        "the MCP TypeScript SDK is not installed at {}: run scripts/install-agents.sh first",
        p.display()
    );
    p
}

/// Runs the SDK client script with `settings`; its JSON summary.
fn sdk_client(repo: &TestRepo, settings: &[(&str, String)]) -> Value {
    // Tasks that take longer than both waits, so that the waits meet a running run.
    let tasks = start_args(
        exec_tasks(2, "sleep 30; "),
        json!({"repo": repo.path.display().to_string()}),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mcp_sdk_client.mjs");
    let out = Command::new("node")
        .arg(script)
        .env("SDK_DIR", sdk_dir())
        .env("TASKS", tasks.to_string())
        .env("TIMEOUT_MS", TIMEOUT_MS.to_string())
        .env("WAIT_SECS", WAIT_SECS.to_string())
        .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    let stdout = crate::support::stdout(&out);
    let stderr = crate::support::stderr(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn check(summary: &Value) {
    eprintln!("{summary:#}");
    let tools = summary["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 6, "{summary:#}");
    // Without progress resets the client gives up at its timeout (-32001 RequestTimeout).
    assert_eq!(summary["plain"]["ok"], false, "{summary:#}");
    assert_eq!(summary["plain"]["code"], -32001, "{summary:#}");
    // With them, a wait longer than the timeout ends as fanout ends it.
    let long = &summary["long"];
    assert!(
        long["ms"].as_u64() > Some(TIMEOUT_MS + 2_000),
        "{summary:#}"
    );
    assert!(long["beats"].as_u64() >= Some(2), "{summary:#}");
    assert_eq!(long["ended"], false, "{summary:#}");
    assert_eq!(summary["final"]["ended"], true, "{summary:#}");
    assert_eq!(summary["final"]["counts"]["merged"], 2, "{summary:#}");
    let run_id = summary["run_id"].as_str().expect("run id");
    let uri = format!("fanout://runs/{run_id}/report");
    assert!(
        summary["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|u| u == uri.as_str())),
        "{summary:#}"
    );
}

#[test]
fn the_typescript_sdk_client_over_stdio() {
    let repo = TestRepo::with_files(1);
    let summary = sdk_client(
        &repo,
        &[
            ("MODE", "stdio".into()),
            ("FANOUT_BIN", crate::support::fanout_bin().into()),
            ("REPO", repo.path.display().to_string()),
        ],
    );
    check(&summary);
}

#[test]
fn the_typescript_sdk_client_over_http() {
    let repo = TestRepo::with_files(1);
    let server = HttpServer::start(&repo);
    let summary = sdk_client(
        &repo,
        &[
            ("MODE", "http".into()),
            ("URL", server.url()),
            ("TOKEN", TOKEN.into()),
        ],
    );
    check(&summary);
}
