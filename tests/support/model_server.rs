/*!
A scripted stand-in for the OpenAI Responses API, so tests can drive the **real** Codex binary
without a network or a model.

Codex is pointed at it through `CODEX_HOME/config.toml` ([`ModelServer::codex_config`]): a custom
model provider with `base_url = "http://127.0.0.1:<port>/v1"` and `wire_api = "responses"`. Every
`POST /v1/responses` is answered according to a per-test script, as server-sent events:
`response.created`, one `response.output_item.done` (an `exec_command` function call or an
assistant message), then `response.completed` with token usage: each response reports its own
figures ([`usage_of`]) and the server sums what it reported ([`ModelServer::reported`]), so tests
compare fanout's accounting with what the model counted.

The default script makes Codex run the shell command that follows `CMD: ` in the latest user
message, and answers with a final message once the command's output came back. Std only (plus
rustls for [`ModelServer::start_tls`], an https server whose certificate a test CA signed):
one accept thread plus one thread per connection; everything stops when the server is dropped.
*/
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// What the scripted model does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Ask Codex to run this shell command through its `exec_command` tool.
    Command(String),
    /// Finish the turn with this assistant message.
    Message(String),
    /// Call any tool Codex offered with these JSON arguments; MCP tools of Codex 0.169 sit in
    /// a `namespace` tool (`mcp__<server>`) and are called by their own name plus `namespace`.
    Function {
        namespace: Option<String>,
        name: String,
        arguments: Value,
    },
    /// An HTTP error with this status and body.
    Error(u16, String),
    /// Accept the request and never answer (until the server is dropped).
    Hang,
    /// Close the connection without answering.
    Close,
}

/// One request as the model saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub body: Value,
    /// The `Authorization` header, when one came.
    pub authorization: Option<String>,
    /// The `ChatGPT-Account-Id` header (a ChatGPT login's requests), when one came.
    pub account_id: Option<String>,
}

impl Request {
    /// The `input` items of a Responses API request.
    pub fn input(&self) -> Vec<Value> {
        self.body
            .get("input")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the last input item is the output of a tool call (the model's command ran).
    pub fn after_tool_output(&self) -> bool {
        self.input()
            .last()
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "function_call_output")
    }

    /// Text of the latest user message.
    pub fn last_user_text(&self) -> String {
        self.input()
            .iter()
            .rev()
            .find(|i| i.get("role").and_then(Value::as_str) == Some("user") && !is_context(i))
            .map(message_text)
            .unwrap_or_default()
    }

    /// The command after `CMD: ` in the latest user message (to the end of that line).
    pub fn command(&self) -> Option<String> {
        let text = self.last_user_text();
        let start = text.find("CMD: ")? + 5;
        let rest = &text[start..];
        Some(rest.lines().next().unwrap_or("").trim().to_string())
    }

    /// The tool names Codex offered the model.
    pub fn tool_names(&self) -> Vec<String> {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn message_text(item: &Value) -> String {
    item.get("content")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Codex sends its environment context as a user message too; it is not the prompt.
fn is_context(item: &Value) -> bool {
    let t = message_text(item);
    t.starts_with("<environment_context>")
        || t.starts_with("<user_instructions>")
        || t.starts_with("# AGENTS.md")
}

/// The default script: run the prompt's `CMD: …`, then finish with a message naming it.
pub fn run_prompt_command(req: &Request) -> Reply {
    if req.after_tool_output() {
        return Reply::Message(format!("done: {}", req.command().unwrap_or_default()));
    }
    match req.command() {
        Some(cmd) => Reply::Command(cmd),
        None => Reply::Message("nothing to do".into()),
    }
}

type Script = dyn Fn(&Request) -> Reply + Send + Sync;

/// Token figures the server reported, summed over its responses (Responses API names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    pub responses: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
}

impl Reported {
    fn add(&mut self, u: &Reported) {
        self.responses += u.responses;
        self.input_tokens += u.input_tokens;
        self.cached_tokens += u.cached_tokens;
        self.output_tokens += u.output_tokens;
        self.reasoning_tokens += u.reasoning_tokens;
        self.total_tokens += u.total_tokens;
    }
}

/// What response `n` (0, 1, …) reports: different for each response, so a sum that skips or
/// repeats one shows.
pub fn usage_of(n: u64) -> Reported {
    let input = 1000 + 10 * n;
    let output = 50 + n;
    Reported {
        responses: 1,
        input_tokens: input,
        cached_tokens: 200,
        output_tokens: output,
        reasoning_tokens: 10,
        total_tokens: input + output,
    }
}

/// A certificate authority made for one test, and the server certificate it signed for
/// `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// The CA certificate (PEM): what `SSL_CERT_FILE` names for the client to trust.
    pub ca_pem: String,
    /// The same certificate (DER), for a test's own TLS client.
    pub ca_der: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "fanout test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
        let key = KeyPair::generate().expect("server key");
        let cert = leaf
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("server certificate");
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server TLS settings");
        TestCa {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            server: Arc::new(server),
        }
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns that path (for `SSL_CERT_FILE`).
    pub fn write_pem(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write the CA certificate");
        path
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

pub struct ModelServer {
    port: u16,
    tls: bool,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Request>>>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    reported: Arc<Mutex<Reported>>,
}

impl ModelServer {
    /// Starts a server answering with [`run_prompt_command`].
    pub fn start_default() -> ModelServer {
        ModelServer::start(run_prompt_command)
    }

    pub fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> ModelServer {
        ModelServer::start_with(None, script)
    }

    /// The same server behind TLS with `ca`'s certificate: `https://localhost:<port>/v1`.
    pub fn start_tls(
        ca: &TestCa,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> ModelServer {
        ModelServer::start_with(Some(ca.server.clone()), script)
    }

    fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> ModelServer {
        let is_tls = tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let counter = Arc::new(AtomicU64::new(0));
        let reported = Arc::new(Mutex::new(Reported::default()));
        let accept = {
            let (stop, requests, conns) = (stop.clone(), requests.clone(), conns.clone());
            let reported = reported.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(clone) = stream.try_clone() {
                        lock(&conns).push(clone);
                    }
                    let (stop, requests, script, counter, tls) = (
                        stop.clone(),
                        requests.clone(),
                        script.clone(),
                        counter.clone(),
                        tls.clone(),
                    );
                    let reported = reported.clone();
                    std::thread::spawn(move || {
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
                        let serve_on = |s: &mut dyn ReadWrite| {
                            serve(s, &stop, &requests, &*script, &counter, &reported)
                        };
                        match tls.map(rustls::ServerConnection::new) {
                            None => serve_on(&mut { stream }),
                            Some(Ok(conn)) => serve_on(&mut rustls::StreamOwned::new(conn, stream)),
                            Some(Err(_)) => {}
                        }
                    });
                }
            })
        };
        ModelServer {
            port,
            tls: is_tls,
            stop,
            requests,
            accept: Some(accept),
            conns,
            reported,
        }
    }

    /// The token figures of every response sent so far, summed.
    pub fn reported(&self) -> Reported {
        *lock(&self.reported)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/v1", self.port)
        } else {
            format!("http://127.0.0.1:{}/v1", self.port)
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.requests).clone()
    }

    /// A `config.toml` pointing Codex at this server, failing fast instead of retrying.
    pub fn codex_config(&self) -> String {
        codex_config_for_url(&self.base_url())
    }
}

/// A `config.toml` for a scripted provider at `port` (also used with a port nobody listens on).
pub fn codex_config_for_port(port: u16) -> String {
    codex_config_for_url(&format!("http://127.0.0.1:{port}/v1"))
}

/// A `config.toml` for a scripted provider at `base_url`.
pub fn codex_config_for_url(base_url: &str) -> String {
    format!(
        r#"model = "scripted-model"
model_provider = "scripted"

[model_providers.scripted]
name = "scripted"
base_url = "{base_url}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"#
    )
}

/// A loopback port with nothing listening (bound, then released).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, then cut every open connection (hanging ones included).
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in lock(&self.conns).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection, plain or TLS.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Serves keep-alive HTTP/1.1 requests on one connection until it closes. Requests and
/// answers alternate, so one stream serves both ways.
fn serve(
    stream: &mut dyn ReadWrite,
    stop: &AtomicBool,
    requests: &Mutex<Vec<Request>>,
    script: &Script,
    counter: &AtomicU64,
    reported: &Mutex<Reported>,
) {
    let mut reader = BufReader::new(stream);
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut content_length = 0usize;
        let mut chunked = false;
        let mut authorization = None;
        let mut account_id = None;
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
                if k == "authorization" {
                    authorization = Some(v.trim().to_string());
                } else if k == "chatgpt-account-id" {
                    account_id = Some(v.trim().to_string());
                } else if k == "content-length" {
                    content_length = v.trim().parse().unwrap_or(0);
                } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                    chunked = true;
                }
            }
        }
        let body = if chunked {
            read_chunked(&mut reader)
        } else {
            let mut b = vec![0u8; content_length];
            if reader.read_exact(&mut b).is_err() {
                return;
            }
            b
        };
        if method != "POST" || !path.ends_with("/responses") {
            let _ = respond(
                reader.get_mut(),
                404,
                "application/json",
                b"{\"error\":\"not found\"}",
            );
            continue;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let req = Request {
            path,
            body,
            authorization,
            account_id,
        };
        lock(requests).push(req.clone());
        let n = counter.fetch_add(1, Ordering::SeqCst);
        match script(&req) {
            Reply::Hang => {
                // Hold the connection open until the server is dropped (which shuts it down).
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Reply::Close => return,
            Reply::Error(status, text) => {
                let body = json!({"error": {"message": text, "type": "server_error"}}).to_string();
                if respond(
                    reader.get_mut(),
                    status,
                    "application/json",
                    body.as_bytes(),
                )
                .is_err()
                {
                    return;
                }
            }
            Reply::Command(cmd) => {
                let item = json!({
                    "type": "function_call", "id": format!("fc_{n}"), "call_id": format!("call_{n}"),
                    "name": "exec_command", // No login shell, and wait up to the tool's 30 s cap: on a loaded machine the
                    // default 10 s yield hands back a still-running command as "done".
                    "arguments": json!({"cmd": cmd, "login": false, "yield_time_ms": 30000}).to_string(),
                    "status": "completed",
                });
                if respond(reader.get_mut(), 200, "text/event-stream", &sse(n, item)).is_err() {
                    return;
                }
                lock(reported).add(&usage_of(n));
            }
            Reply::Function {
                namespace,
                name,
                arguments,
            } => {
                let mut item = json!({
                    "type": "function_call", "id": format!("fc_{n}"), "call_id": format!("call_{n}"),
                    "name": name, "arguments": arguments.to_string(), "status": "completed",
                });
                if let Some(ns) = namespace {
                    item["namespace"] = json!(ns);
                }
                if respond(reader.get_mut(), 200, "text/event-stream", &sse(n, item)).is_err() {
                    return;
                }
                lock(reported).add(&usage_of(n));
            }
            Reply::Message(text) => {
                let item = json!({
                    "type": "message", "role": "assistant", "id": format!("msg_{n}"), "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                });
                if respond(reader.get_mut(), 200, "text/event-stream", &sse(n, item)).is_err() {
                    return;
                }
                lock(reported).add(&usage_of(n));
            }
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let n =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if n == 0 {
            let mut end = String::new();
            let _ = reader.read_line(&mut end);
            return body;
        }
        let mut chunk = vec![0u8; n + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

fn sse(n: u64, item: Value) -> Vec<u8> {
    let u = usage_of(n);
    let events = [
        json!({"type": "response.created", "response": {"id": format!("resp_{n}")}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        json!({"type": "response.completed", "response": {"id": format!("resp_{n}"), "usage": {
            "input_tokens": u.input_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.total_tokens}}}),
    ];
    let mut out = Vec::new();
    for e in events {
        let kind = e["type"].as_str().unwrap_or("").to_string();
        out.extend_from_slice(format!("event: {kind}\ndata: {e}\n\n").as_bytes());
    }
    out
}

fn respond(
    out: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
