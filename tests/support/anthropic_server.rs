/*!
A scripted stand-in for the Anthropic Messages API, so tests can drive the **real** Claude Code
binary (`claude -p`) without a network or a model.

Claude Code is pointed at it with `ANTHROPIC_BASE_URL=http://127.0.0.1:<port>` (no `/v1`); it
posts `/v1/messages?beta=true`, always streaming. Each request is answered by the test's script
as server-sent events: `message_start`, one content block (`tool_use` with its input sent as an
`input_json_delta`, or `text`), `message_delta` with the stop reason, `message_stop`. Any other
path gets a 404. Std only; everything stops when the server is dropped.
*/
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// What the scripted model answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Call a tool (`mcp__fanout__fanout_start`, …) with this input.
    ToolUse { name: String, input: Value },
    /// Call several tools in one message (name, input each).
    ToolUses(Vec<(String, Value)>),
    /// End the turn with this text.
    Text(String),
}

/// One `/v1/messages` request: its body and the credentials it came with, so tests can check
/// the real key arrives (added by fanout's egress proxy) and only here.
#[derive(Clone, Debug)]
pub struct Request {
    pub body: Value,
    /// The `x-api-key` header, when one came.
    pub api_key: Option<String>,
    /// The `Authorization` header, when one came.
    pub authorization: Option<String>,
}

impl Request {
    /// Names of the tools offered.
    pub fn tool_names(&self) -> Vec<String> {
        self.body["tools"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The text of the latest `tool_result` block (any role; `system` entries are tolerated).
    pub fn last_tool_result(&self) -> Option<String> {
        let msgs = self.body["messages"].as_array()?;
        for m in msgs.iter().rev() {
            let Some(blocks) = m["content"].as_array() else {
                continue;
            };
            for b in blocks.iter().rev() {
                if b["type"] == "tool_result" {
                    return Some(match &b["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(parts) => parts
                            .iter()
                            .filter_map(|p| p["text"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n"),
                        other => other.to_string(),
                    });
                }
            }
        }
        None
    }

    /// Every tool_result text of the conversation, oldest first.
    pub fn all_tool_results(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.body["messages"].as_array().into_iter().flatten() {
            for b in m["content"].as_array().into_iter().flatten() {
                if b["type"] == "tool_result" {
                    out.push(b["content"].to_string());
                }
            }
        }
        out
    }
}

type Script = dyn Fn(&Request) -> Reply + Send + Sync;

pub struct AnthropicServer {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Request>>>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AnthropicServer {
    pub fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> AnthropicServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::serve_on(listener, script)
    }

    /// The same on `port` when it can be bound (443 needs root), else on any free port.
    pub fn start_preferring(
        port: u16,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> AnthropicServer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        Self::serve_on(listener, script)
    }

    fn serve_on(
        listener: TcpListener,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> AnthropicServer {
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let counter = Arc::new(AtomicU64::new(0));
        let accept = {
            let (stop, requests, conns) = (stop.clone(), requests.clone(), conns.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(c) = stream.try_clone() {
                        lock(&conns).push(c);
                    }
                    let (requests, script, counter) =
                        (requests.clone(), script.clone(), counter.clone());
                    std::thread::spawn(move || serve(stream, &requests, &*script, &counter));
                }
            })
        };
        AnthropicServer {
            port,
            stop,
            requests,
            accept: Some(accept),
            conns,
        }
    }

    /// `ANTHROPIC_BASE_URL` for Claude Code (without `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        lock(&self.requests).clone()
    }
}

impl Drop for AnthropicServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in lock(&self.conns).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>, script: &Script, counter: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut first = String::new();
        match reader.read_line(&mut first) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut len = 0usize;
        let (mut api_key, mut authorization) = (None, None);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                } else if k == "x-api-key" {
                    api_key = Some(v.trim().to_string());
                } else if k == "authorization" {
                    authorization = Some(v.trim().to_string());
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if method != "POST" || !path.starts_with("/v1/messages") || path.contains("count_tokens") {
            if respond(&mut out, 404, "application/json", b"{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"not found\"}}").is_err() {
                return;
            }
            continue;
        }
        let req = Request {
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            api_key,
            authorization,
        };
        lock(requests).push(req.clone());
        let n = counter.fetch_add(1, Ordering::SeqCst);
        // Side requests (titles, summaries) come without tools: answer them with plain text.
        let reply = if req.tool_names().is_empty() {
            Reply::Text("ok".into())
        } else {
            script(&req)
        };
        if respond(&mut out, 200, "text/event-stream", &sse(n, &reply)).is_err() {
            return;
        }
    }
}

fn sse(n: u64, reply: &Reply) -> Vec<u8> {
    let tool = |i: usize, name: &str, input: &Value| {
        (
            json!({"type": "tool_use", "id": format!("toolu_{n:04}_{i}"), "name": name, "input": {}}),
            json!({"type": "input_json_delta", "partial_json": input.to_string()}),
        )
    };
    let (blocks, stop) = match reply {
        Reply::ToolUse { name, input } => (vec![tool(0, name, input)], "tool_use"),
        Reply::ToolUses(calls) => (
            calls
                .iter()
                .enumerate()
                .map(|(i, (name, input))| tool(i, name, input))
                .collect(),
            "tool_use",
        ),
        Reply::Text(t) => (
            vec![(
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": t}),
            )],
            "end_turn",
        ),
    };
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": format!("msg_{n}"), "type": "message",
            "role": "assistant", "model": "scripted", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    ];
    for (index, (block, delta)) in blocks.into_iter().enumerate() {
        events.push(json!({"type": "content_block_start", "index": index, "content_block": block}));
        events.push(json!({"type": "content_block_delta", "index": index, "delta": delta}));
        events.push(json!({"type": "content_block_stop", "index": index}));
    }
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": 5}}),
    );
    events.push(json!({"type": "message_stop"}));
    let mut out = Vec::new();
    for e in events {
        let kind = e["type"].as_str().unwrap_or("").to_string();
        out.extend_from_slice(format!("event: {kind}\ndata: {e}\n\n").as_bytes());
    }
    out
}

fn respond(out: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
