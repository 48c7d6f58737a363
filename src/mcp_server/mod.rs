/*!
`fanout mcp`: fanout itself as an MCP server over stdio, so an orchestrating agent (Claude
Code, Codex) can start runs, wait for them, look at their diffs, cancel and merge them.

Newline-delimited JSON-RPC 2.0. Protocol versions `2025-06-18` (preferred), `2025-03-26` and
`2024-11-05`; a client asking for another one gets `2025-06-18`. JSON-RPC errors are kept for
protocol problems (malformed JSON -32700, not a request -32600, unknown method -32601, unknown
tool or arguments that do not fit the tool's schema -32602); everything else a tool can fail at
is a result with `isError: true`, so the model sees it.

Every `tools/call` runs on its own thread (`fanout_wait` blocks for minutes); runs run on
threads of their own ([`runs`]). When stdin closes — the client is gone — or a signal arrives,
every run is asked to stop at its next safe point, the server waits for them (they end
`interrupted`, resumable with `fanout resume`) and returns.
*/

mod options;
mod runs;
mod tool_list;
mod tools;
mod wire;

use std::io::{BufRead, Write};
use std::sync::mpsc;

use serde_json::{json, Value};

pub use runs::Registry;

/// Protocol versions this server speaks, preferred first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

/// Longest request line accepted (a task list inline can be large, not unbounded).
const MAX_LINE: usize = 16 * 1024 * 1024;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
/// MCP's "resource not found".
pub const RESOURCE_NOT_FOUND: i64 = -32002;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read the client's messages")]
    Read(#[source] std::io::Error),
    #[error("cannot start the server's threads")]
    Thread(#[source] std::io::Error),
}

pub use options::ServerOptions;

pub use wire::{BadParams, Out};

enum Incoming {
    Line(Vec<u8>),
    TooLong,
    /// stdin closed (or failed), or a stop signal: shut down.
    Gone,
}

/// Serves MCP on `input`/`output` until the client goes away; then stops every run cleanly.
pub fn serve(
    input: impl BufRead + Send + 'static,
    output: impl Write + Send + 'static,
    options: ServerOptions,
) -> Result<(), ServerError> {
    let out = Out::new(output);
    let registry = Registry::new(options.clone());
    let (tx, rx) = mpsc::channel::<Incoming>();
    std::thread::Builder::new()
        .name("mcp-stdin".into())
        .spawn({
            let tx = tx.clone();
            move || read_lines(input, tx)
        })
        .map_err(ServerError::Thread)?;
    // A signal ends the server like a closed stdin does; each run also hears it itself.
    std::thread::Builder::new()
        .name("mcp-signals".into())
        .spawn(move || wait_for_signal(tx))
        .map_err(ServerError::Thread)?;
    let mut initialized = false;
    while let Ok(msg) = rx.recv() {
        match msg {
            Incoming::Gone => break,
            Incoming::TooLong => out.error(
                &Value::Null,
                INVALID_REQUEST,
                &format!("request line longer than {MAX_LINE} bytes"),
            ),
            Incoming::Line(bytes) => {
                handle_line(&bytes, &out, &registry, &mut initialized);
            }
        }
    }
    registry.shutdown();
    Ok(())
}

fn read_lines(mut input: impl BufRead, tx: mpsc::Sender<Incoming>) {
    loop {
        let mut buf = Vec::new();
        // Bounded: a client's line never takes more than MAX_LINE (+ one buffer) of memory.
        let n =
            std::io::Read::take(input.by_ref(), MAX_LINE as u64 + 1).read_until(b'\n', &mut buf);
        match n {
            Ok(0) | Err(_) => {
                let _ = tx.send(Incoming::Gone);
                return;
            }
            Ok(_) if buf.len() > MAX_LINE => {
                // Skip the rest of the oversized line.
                let mut rest = Vec::new();
                while !rest.ends_with(b"\n") {
                    rest.clear();
                    match std::io::Read::take(input.by_ref(), 1 << 20).read_until(b'\n', &mut rest)
                    {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Incoming::Gone);
                            return;
                        }
                        Ok(_) => {}
                    }
                }
                if tx.send(Incoming::TooLong).is_err() {
                    return;
                }
            }
            Ok(_) => {
                if tx.send(Incoming::Line(buf)).is_err() {
                    return;
                }
            }
        }
    }
}

fn wait_for_signal(tx: mpsc::Sender<Incoming>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    });
    let _ = tx.send(Incoming::Gone);
}

fn handle_line(bytes: &[u8], out: &Out, registry: &Registry, initialized: &mut bool) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let msg: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.error(&Value::Null, PARSE_ERROR, &format!("parse error: {e}"));
            return;
        }
    };
    let Some(obj) = msg.as_object() else {
        // Batches were removed from MCP in 2025-06-18.
        out.error(
            &Value::Null,
            INVALID_REQUEST,
            "invalid request: expected one JSON-RPC object per line",
        );
        return;
    };
    let id = obj.get("id").cloned();
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        // A response to a request of ours (we send none) or garbage.
        if let Some(id) = id {
            if !obj.contains_key("result") && !obj.contains_key("error") {
                out.error(&id, INVALID_REQUEST, "invalid request: no method");
            }
        }
        return;
    };
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    let Some(id) = id else {
        // Notifications (`notifications/initialized`, `notifications/cancelled`, …): nothing to answer.
        if method == "notifications/initialized" {
            *initialized = true;
        }
        return;
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        out.error(
            &Value::Null,
            INVALID_REQUEST,
            "invalid request: id must be a string or an integer",
        );
        return;
    }
    if !params.is_null() && !params.is_object() {
        out.error(&id, INVALID_PARAMS, "params must be an object");
        return;
    }
    match method {
        "initialize" => out.result(&id, initialize(&params)),
        "ping" => out.result(&id, json!({})),
        "tools/list" => out.result(&id, json!({"tools": tool_list::list()})),
        "tools/call" => {
            let (out, registry) = (out.clone(), registry.clone());
            let spawned = std::thread::Builder::new()
                .name("mcp-call".into())
                .spawn({
                    let id = id.clone();
                    move || match tools::call(&params, &registry, &out) {
                        Ok(result) => out.result(&id, result),
                        Err(BadParams(m)) => out.error(&id, INVALID_PARAMS, &m),
                    }
                });
            if let Err(e) = spawned {
                out_error_internal(&id, &e.to_string());
            }
        }
        "resources/list" => out.result(&id, json!({"resources": registry.resources()})),
        "resources/templates/list" => out.result(
            &id,
            json!({"resourceTemplates": [{
                "uriTemplate": "fanout://runs/{run_id}/report",
                "name": "run report",
                "description": "A run's report: report.json once it ended, the state as it stands before",
                "mimeType": "application/json",
            }]}),
        ),
        "resources/read" => {
            let uri = params.get("uri").and_then(Value::as_str);
            match uri {
                None => out.error(&id, INVALID_PARAMS, "resources/read needs a string `uri`"),
                Some(uri) => match registry.read_resource(uri) {
                    Some(text) => out.result(
                        &id,
                        json!({"contents": [{"uri": uri, "mimeType": "application/json", "text": text}]}),
                    ),
                    None => out.error(&id, RESOURCE_NOT_FOUND, &format!("resource not found: {uri}")),
                },
            }
        }
        other => out.error(&id, METHOD_NOT_FOUND, &format!("method not found: {other}")),
    }
}

fn out_error_internal(id: &Value, message: &str) {
    // Writing needs an Out; without a thread there is no way but stderr.
    eprintln!("fanout mcp: cannot answer request {id}: {message}");
}

fn initialize(params: &Value) -> Value {
    let asked = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| **v == asked)
        .copied()
        .unwrap_or(PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": {"listChanged": false},
            "resources": {"listChanged": false, "subscribe": false},
        },
        "serverInfo": {"name": "fanout", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "fanout runs many coding agents in parallel, each in its own git worktree, \
            verifies and merges their changes onto fanout/<run>/merged. Start a run with fanout_start \
            (it returns at once), then call fanout_wait until `ended` is true; fanout_diff shows one \
            task's change, fanout_merge brings the merged branch into yours.",
    })
}
