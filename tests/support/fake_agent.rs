//! `fake-agent`: a scripted MCP server shaped like `codex mcp-server` (Codex CLI <= 0.153).
//!
//! It speaks newline-delimited JSON-RPC 2.0 on stdin/stdout, exposes the `codex` and
//! `codex-reply` tools, and treats the prompt as a tiny line-based script (write files, run
//! commands, misbehave on purpose). See `docs/fake-agent.md` for the protocol and the language.
//!
//! Only std + serde_json (+ libc for a few process-level misbehaviours).

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_PROTOCOL_VERSION: &str = "2025-06-18";
const SERVER_NAME: &str = "fake-agent";
const SERVER_VERSION: &str = "0.1.0";
const PREFIX_ENV: &str = "FAKE_AGENT_SCRIPT_PREFIX";

// ───────────────────────────── script language ─────────────────────────────

/// One parsed script command.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Write {
        path: String,
        text: String,
    },
    Append {
        path: String,
        text: String,
    },
    Replace {
        path: String,
        old: String,
        new: String,
    },
    Delete(String),
    Mkdir(String),
    Rename(String, String),
    Chmod(String, u32),
    Copy(String, String),
    Run(String),
    Say(String),
    Sleep(u64),
    Crash(i32),
    Hang,
    Garbage(u64),
    Flood(u64),
    FloodNotify(u64),
    /// N `agent_message` events of BYTES bytes each.
    FloodBigNotify(u64, u64),
    Slow(u64),
    Stderr(String),
    CloseStdout,
    ExitAfterReply,
    IgnoreSigterm,
    /// When stdin closes, wait MS before exiting (an agent slow to leave on its own).
    LingerOnEof(u64),
    SpawnOrphan(u64),
    ErrorReply,
    /// A line that starts with a command word but whose arguments do not parse.
    /// It fails (as an error step) when execution reaches it.
    Invalid(String),
}

/// A command with its 1-based line number and its (trimmed) source line.
#[derive(Debug, Clone, PartialEq)]
struct ScriptLine {
    no: usize,
    src: String,
    step: Step,
}

const COMMANDS: &[&str] = &[
    "write",
    "append",
    "replace",
    "delete",
    "mkdir",
    "rename",
    "chmod",
    "copy",
    "run",
    "say",
    "sleep",
    "crash",
    "hang",
    "garbage",
    "flood",
    "flood-notify",
    "flood-big-notify",
    "slow",
    "stderr",
    "close-stdout",
    "exit-after-reply",
    "ignore-sigterm",
    "linger-on-eof",
    "spawn-orphan",
    "error-reply",
];

/// Parses a prompt into commands. Blank lines, `#` comments and lines that do not start with a
/// command word (case-sensitive) are free text and skipped.
fn parse_script(text: &str) -> Vec<ScriptLine> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let no = i + 1;
        let line = lines[i].trim_end_matches('\r').trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = match line.find(char::is_whitespace) {
            Some(p) => (&line[..p], line[p..].trim_start()),
            None => (line, ""),
        };
        if !COMMANDS.contains(&word) {
            continue;
        }
        let step = if word == "write" || word == "append" {
            match parse_write(rest, &lines, &mut i) {
                Ok((path, text)) if word == "write" => Step::Write { path, text },
                Ok((path, text)) => Step::Append { path, text },
                Err(e) => Step::Invalid(e),
            }
        } else {
            parse_command(word, rest).unwrap_or_else(Step::Invalid)
        };
        out.push(ScriptLine {
            no,
            src: line.to_string(),
            step,
        });
    }
    out
}

/// `PATH <<<TEXT` or `PATH <<TAG` followed by lines up to a line equal to TAG.
/// `next` points at the line after the command and is advanced past a heredoc.
fn parse_write(rest: &str, lines: &[&str], next: &mut usize) -> Result<(String, String), String> {
    let (path, after) = next_token(rest)?.ok_or("missing PATH")?;
    let after = after.trim_start();
    if let Some(text) = after.strip_prefix("<<<") {
        return Ok((path, decode_escapes(text)));
    }
    let Some(tag) = after.strip_prefix("<<") else {
        return Err("expected `<<<TEXT` or `<<TAG` after PATH".into());
    };
    let tag = tag.trim();
    let tag = tag
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(tag);
    if tag.is_empty() || tag.contains(char::is_whitespace) {
        return Err("heredoc needs one TAG word, e.g. `<<EOF`".into());
    }
    let mut text = String::new();
    while *next < lines.len() {
        let l = lines[*next];
        *next += 1;
        if l.trim_end_matches('\r') == tag {
            return Ok((path, text));
        }
        text.push_str(l);
        text.push('\n');
    }
    Err(format!("heredoc not terminated by a `{tag}` line"))
}

fn parse_command(word: &str, rest: &str) -> Result<Step, String> {
    let num = |s: &str, what: &str| -> Result<u64, String> {
        s.parse::<u64>()
            .map_err(|_| format!("{what} must be a non-negative integer, got `{s}`"))
    };
    // Commands whose argument is the raw rest of the line.
    match word {
        "run" if rest.is_empty() => return Err("missing command".into()),
        "run" => return Ok(Step::Run(rest.to_string())),
        "say" => return Ok(Step::Say(decode_escapes(rest))),
        "stderr" => return Ok(Step::Stderr(decode_escapes(rest))),
        _ => {}
    }
    let args = tokens(rest)?;
    let want = |n: usize, usage: &str| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("usage: {word} {usage}"))
        }
    };
    Ok(match word {
        "replace" => {
            want(3, "PATH OLD NEW")?;
            Step::Replace {
                path: args[0].clone(),
                old: args[1].clone(),
                new: args[2].clone(),
            }
        }
        "delete" => {
            want(1, "PATH")?;
            Step::Delete(args[0].clone())
        }
        "mkdir" => {
            want(1, "PATH")?;
            Step::Mkdir(args[0].clone())
        }
        "rename" => {
            want(2, "FROM TO")?;
            Step::Rename(args[0].clone(), args[1].clone())
        }
        "copy" => {
            want(2, "FROM TO")?;
            Step::Copy(args[0].clone(), args[1].clone())
        }
        "chmod" => {
            want(2, "PATH MODE")?;
            let mode = u32::from_str_radix(&args[1], 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("MODE must be octal like 755, got `{}`", args[1]))?;
            Step::Chmod(args[0].clone(), mode)
        }
        "sleep" => {
            want(1, "MS")?;
            Step::Sleep(num(&args[0], "MS")?)
        }
        "crash" => match args.len() {
            0 => Step::Crash(3),
            1 => Step::Crash(
                args[0]
                    .parse::<i32>()
                    .map_err(|_| format!("CODE must be an integer, got `{}`", args[0]))?,
            ),
            _ => return Err("usage: crash [CODE]".into()),
        },
        "garbage" => {
            want(1, "N")?;
            Step::Garbage(num(&args[0], "N")?)
        }
        "flood" => {
            want(1, "BYTES")?;
            Step::Flood(num(&args[0], "BYTES")?)
        }
        "flood-notify" => {
            want(1, "N")?;
            Step::FloodNotify(num(&args[0], "N")?)
        }
        "flood-big-notify" => {
            want(2, "N BYTES")?;
            Step::FloodBigNotify(num(&args[0], "N")?, num(&args[1], "BYTES")?)
        }
        "slow" => {
            want(1, "MS")?;
            Step::Slow(num(&args[0], "MS")?)
        }
        "linger-on-eof" => {
            want(1, "MS")?;
            Step::LingerOnEof(num(&args[0], "MS")?)
        }
        "spawn-orphan" => {
            want(1, "SECS")?;
            Step::SpawnOrphan(num(&args[0], "SECS")?)
        }
        "hang" => {
            want(0, "")?;
            Step::Hang
        }
        "close-stdout" => {
            want(0, "")?;
            Step::CloseStdout
        }
        "exit-after-reply" => {
            want(0, "")?;
            Step::ExitAfterReply
        }
        "ignore-sigterm" => {
            want(0, "")?;
            Step::IgnoreSigterm
        }
        "error-reply" => {
            want(0, "")?;
            Step::ErrorReply
        }
        other => return Err(format!("unknown command `{other}`")),
    })
}

fn tokens(mut s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    while let Some((t, rest)) = next_token(s)? {
        out.push(t);
        s = rest;
    }
    Ok(out)
}

/// Next token: a plain run of non-space characters, or a double-quoted string with
/// `\"`, `\n`, `\t` and `\\` escapes. Returns the token and the remaining text.
fn next_token(s: &str) -> Result<Option<(String, &str)>, String> {
    let s = s.trim_start();
    if s.is_empty() {
        return Ok(None);
    }
    let Some(body) = s.strip_prefix('"') else {
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        return Ok(Some((s[..end].to_string(), &s[end..])));
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let rest = &body[i + 1..];
                if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
                    return Err("expected a space after a closing quote".into());
                }
                return Ok(Some((out, rest)));
            }
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

/// Decodes `\n`, `\t` and `\\`; any other backslash is kept as is.
fn decode_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Joins a script path to the call's cwd, refusing absolute paths and `..`.
fn resolve(cwd: &Path, p: &str) -> Result<PathBuf, String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    for c in Path::new(p).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(format!("path `{p}` contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("path `{p}` is absolute"))
            }
        }
    }
    Ok(cwd.join(p))
}

// ───────────────────────────── server state ─────────────────────────────

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Out {
    /// Stdout was closed on purpose or broke: writes are dropped.
    closed: bool,
    /// Tests: collect lines here instead of writing to stdout.
    capture: Option<Vec<String>>,
}

/// A conversation: its cwd and the scripts queued for its next replies.
struct Thread {
    cwd: PathBuf,
    /// Sections after `--- on reply ---` lines, run by the following `codex-reply` calls in order.
    replies: std::collections::VecDeque<String>,
}

/// A prompt line that starts the script of the next `codex-reply` on the same thread.
const ON_REPLY: &str = "--- on reply ---";

/// Splits a prompt at its `--- on reply ---` lines: the script to run now, then the queued ones.
fn split_replies(prompt: &str) -> (String, std::collections::VecDeque<String>) {
    let mut sections = vec![String::new()];
    for line in prompt.split_inclusive('\n') {
        if line.trim() == ON_REPLY {
            sections.push(String::new());
        } else if let Some(last) = sections.last_mut() {
            last.push_str(line);
        }
    }
    let first = sections.remove(0);
    (first, sections.into())
}

#[derive(Default)]
struct Server {
    out: Mutex<Out>,
    slow_ms: AtomicU64,
    /// threadId → every thread this process created.
    threads: Mutex<HashMap<String, Thread>>,
    /// Serialized request id → cancel flag of every running tools/call.
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Calls still working (hung calls excluded): stdin EOF waits for them.
    active: Mutex<usize>,
    idle: Condvar,
    counter: AtomicU64,
    /// `linger-on-eof`: how long to stay once stdin closed.
    linger_ms: AtomicU64,
    no_codex_tool: bool,
    hang_at_start: bool,
    prefix: Option<String>,
}

impl Server {
    fn write_raw(&self, bytes: &[u8]) {
        let slow = self.slow_ms.load(Ordering::Relaxed);
        if slow > 0 {
            std::thread::sleep(Duration::from_millis(slow));
        }
        let mut out = lock(&self.out);
        if out.closed {
            return;
        }
        if let Some(cap) = out.capture.as_mut() {
            cap.push(String::from_utf8_lossy(bytes).into_owned());
            return;
        }
        let mut so = std::io::stdout().lock();
        let res = so
            .write_all(bytes)
            .and_then(|_| so.write_all(b"\n"))
            .and_then(|_| so.flush());
        if let Err(e) = res {
            eprintln!("fake-agent: stdout write failed ({e}); dropping further output");
            out.closed = true;
        }
    }

    fn send(&self, v: &Value) {
        self.write_raw(v.to_string().as_bytes());
    }

    fn reply(&self, id: &Value, result: Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    fn reply_error(&self, id: &Value, code: i64, message: &str) {
        self.send(
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        );
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn new_thread_id(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let a = mix(nanos ^ (u64::from(std::process::id()) << 32));
        let b = mix(a ^ self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    fn leave_active(&self) {
        let mut n = lock(&self.active);
        *n = n.saturating_sub(1);
        self.idle.notify_all();
    }

    fn close_stdout(&self) {
        let mut out = lock(&self.out);
        if out.capture.is_none() && !out.closed {
            let _ = std::io::stdout().flush();
            // Put /dev/null on fd 1 so the pipe is really closed but fd 1 cannot be reused by
            // a file opened later (which would then receive our output).
            // SAFETY: plain fd syscalls on our own descriptors.
            unsafe {
                let fd = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::dup2(fd, 1);
                    libc::close(fd);
                } else {
                    libc::close(1);
                }
            }
        }
        out.closed = true;
    }
}

/// splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

// ───────────────────────────── request dispatch ─────────────────────────────

fn tools_list(no_codex_tool: bool) -> Value {
    let codex = json!({
        "name": "codex",
        "title": "Codex",
        "description": "Run a Codex session. Accepts configuration parameters matching the Codex Config struct.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "prompt": {"type": "string", "description": "The *initial user prompt* to start the Codex conversation."},
                "approval-policy": {"type": "string", "enum": ["untrusted", "on-failure", "on-request", "never"]},
                "sandbox": {"type": "string", "enum": ["read-only", "workspace-write", "danger-full-access"]},
                "cwd": {"type": "string", "description": "Working directory for the session."},
                "model": {"type": "string"},
                "config": {"type": "object", "additionalProperties": true},
                "base-instructions": {"type": "string"},
                "developer-instructions": {"type": "string"},
                "compact-prompt": {"type": "string"}
            },
            "required": ["prompt"]
        }
    });
    let reply = json!({
        "name": "codex-reply",
        "title": "Codex Reply",
        "description": "Continue a Codex conversation by providing the thread id and prompt.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "threadId": {"type": "string", "description": "The thread id for this Codex session."},
                "conversationId": {"type": "string", "description": "DEPRECATED: use threadId instead."},
                "prompt": {"type": "string", "description": "The *next user prompt* to continue the Codex conversation."}
            },
            "required": ["prompt"]
        }
    });
    let tools = if no_codex_tool {
        vec![reply]
    } else {
        vec![codex, reply]
    };
    json!({ "tools": tools })
}

fn tool_result(text: &str, is_error: bool, thread_id: Option<&str>) -> Value {
    let mut r = Map::new();
    r.insert("content".into(), json!([{"type": "text", "text": text}]));
    if let Some(t) = thread_id {
        r.insert(
            "structuredContent".into(),
            json!({"threadId": t, "content": text}),
        );
    }
    if is_error {
        r.insert("isError".into(), Value::Bool(true));
    }
    Value::Object(r)
}

/// Handles one received line. Returns nothing: replies go through `srv`.
fn handle_line(srv: &Arc<Server>, line: &str) {
    let msg: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "fake-agent: ignoring unparsable line ({e}): {}",
                truncate(line, 120)
            );
            return;
        }
    };
    let Some(obj) = msg.as_object() else {
        eprintln!(
            "fake-agent: ignoring non-object message: {}",
            truncate(line, 120)
        );
        return;
    };
    let id = obj.get("id").cloned();
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) {
            return; // a response to a server request: we never send any
        }
        eprintln!(
            "fake-agent: ignoring message without a method: {}",
            truncate(line, 120)
        );
        if let Some(id) = id {
            srv.reply_error(&id, -32600, "Invalid Request: missing method");
        }
        return;
    };
    match (method, id) {
        ("notifications/cancelled", _) => {
            let Some(rid) = params.get("requestId") else {
                eprintln!("fake-agent: notifications/cancelled without requestId");
                return;
            };
            match lock(&srv.running).get(&id_key(rid)) {
                Some(flag) => flag.store(true, Ordering::SeqCst),
                None => eprintln!("fake-agent: cancel for unknown request {rid}"),
            }
        }
        (_, None) => {} // other notifications (notifications/initialized, …) are ignored
        ("initialize", Some(id)) => {
            if srv.hang_at_start {
                eprintln!("fake-agent: --hang-at-start: not answering initialize");
                return;
            }
            let version = params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_PROTOCOL_VERSION);
            srv.reply(
                &id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": SERVER_NAME, "version": SERVER_VERSION}
                }),
            );
        }
        ("ping", Some(id)) => srv.reply(&id, json!({})),
        ("tools/list", Some(id)) => srv.reply(&id, tools_list(srv.no_codex_tool)),
        ("tools/call", Some(id)) => {
            let Some(name) = params.get("name").and_then(Value::as_str) else {
                srv.reply_error(
                    &id,
                    -32602,
                    "Invalid params: tools/call needs a string `name`",
                );
                return;
            };
            let name = name.to_string();
            let args = match params.get("arguments") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(_) => {
                    srv.reply_error(&id, -32602, "Invalid params: `arguments` must be an object");
                    return;
                }
            };
            let cancel = Arc::new(AtomicBool::new(false));
            lock(&srv.running).insert(id_key(&id), cancel.clone());
            *lock(&srv.active) += 1;
            let srv = srv.clone();
            std::thread::spawn(move || {
                let hung = handle_call(&srv, &id, &name, &args, cancel);
                lock(&srv.running).remove(&id_key(&id));
                if !hung {
                    srv.leave_active();
                }
            });
        }
        (other, Some(id)) => srv.reply_error(&id, -32601, &format!("Method not found: {other}")),
    }
}

/// Runs one tools/call. Returns true if the call hung (and already left the active count).
fn handle_call(
    srv: &Server,
    id: &Value,
    name: &str,
    args: &Map<String, Value>,
    cancel: Arc<AtomicBool>,
) -> bool {
    let prompt = args.get("prompt").and_then(Value::as_str);
    let (thread_id, cwd, prompt) = match name {
        "codex" => {
            let Some(prompt) = prompt else {
                srv.reply(
                    id,
                    tool_result("Missing required argument: prompt", true, None),
                );
                return false;
            };
            let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            let cwd = match args.get("cwd") {
                None | Some(Value::Null) => base,
                Some(Value::String(c)) => base.join(c),
                Some(_) => {
                    srv.reply(id, tool_result("`cwd` must be a string", true, None));
                    return false;
                }
            };
            if !cwd.is_dir() {
                let text = format!("cwd is not a directory: {}", cwd.display());
                srv.reply(id, tool_result(&text, true, None));
                return false;
            }
            let tid = srv.new_thread_id();
            let (now, replies) = split_replies(prompt);
            lock(&srv.threads).insert(
                tid.clone(),
                Thread {
                    cwd: cwd.clone(),
                    replies,
                },
            );
            (tid, cwd, now)
        }
        "codex-reply" => {
            let tid = args
                .get("threadId")
                .or_else(|| args.get("conversationId"))
                .and_then(Value::as_str);
            let Some(tid) = tid else {
                srv.reply(
                    id,
                    tool_result("Missing required argument: threadId", true, None),
                );
                return false;
            };
            let Some(prompt) = prompt else {
                srv.reply(
                    id,
                    tool_result("Missing required argument: prompt", true, None),
                );
                return false;
            };
            // A queued `--- on reply ---` section runs instead of the reply's own text (which
            // is feedback prose that may well contain lines starting with command words).
            let found = lock(&srv.threads)
                .get_mut(tid)
                .map(|t| (t.cwd.clone(), t.replies.pop_front()));
            let Some((cwd, queued)) = found else {
                let text = format!("Session not found for thread_id: {tid}");
                srv.reply(id, tool_result(&text, true, None));
                return false;
            };
            let script = queued.unwrap_or_else(|| prompt.to_string());
            (tid.to_string(), cwd, script)
        }
        other => {
            srv.reply(
                id,
                tool_result(&format!("Unknown tool '{other}'"), true, None),
            );
            return false;
        }
    };
    let mut turn = Turn {
        srv,
        req_id: id.clone(),
        sub_id: srv.next().to_string(),
        cancel,
        cwd,
        error_reply: false,
        exit_after_reply: false,
        hung: false,
        calls: 0,
    };
    let outcome = turn.run(&prompt);
    let response = match outcome {
        Outcome::Cancelled => return turn.hung,
        Outcome::Done(msg) => tool_result(&msg, false, Some(&thread_id)),
        Outcome::Failed(msg) => tool_result(&msg, true, Some(&thread_id)),
    };
    if turn.error_reply {
        srv.reply_error(
            id,
            -32000,
            "fake-agent: error-reply requested by the script",
        );
    } else {
        srv.reply(id, response);
    }
    if turn.exit_after_reply {
        eprintln!("fake-agent: exit-after-reply");
        std::process::exit(0);
    }
    turn.hung
}

// ───────────────────────────── execution ─────────────────────────────

#[derive(Debug, PartialEq)]
enum Outcome {
    Done(String),
    Failed(String),
    Cancelled,
}

struct Turn<'a> {
    srv: &'a Server,
    req_id: Value,
    sub_id: String,
    cancel: Arc<AtomicBool>,
    cwd: PathBuf,
    error_reply: bool,
    exit_after_reply: bool,
    hung: bool,
    calls: u64,
}

/// Why a step stopped the turn.
enum Stop {
    Cancelled,
    Failed(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Self {
        Stop::Failed(s)
    }
}

impl Turn<'_> {
    fn emit(&self, msg: Value) {
        self.srv.send(&json!({
            "jsonrpc": "2.0",
            "method": "codex/event",
            "params": {"_meta": {"requestId": self.req_id}, "id": self.sub_id, "msg": msg}
        }));
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Sleeps `ms`, waking early on cancel. Returns false if cancelled.
    fn sleep(&self, ms: u64) -> bool {
        let end = Instant::now() + Duration::from_millis(ms);
        loop {
            if self.cancelled() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    fn call_id(&mut self) -> String {
        self.calls += 1;
        format!("call_{}_{}", self.sub_id, self.calls)
    }

    fn run(&mut self, prompt: &str) -> Outcome {
        let full = match &self.srv.prefix {
            Some(p) if p.is_empty() || p.ends_with('\n') => format!("{p}{prompt}"),
            Some(p) => format!("{p}\n{prompt}"),
            None => prompt.to_string(),
        };
        let script = parse_script(&full);
        self.emit(json!({"type": "task_started", "model_context_window": 272000}));
        let mut message = None;
        for (k, line) in script.iter().enumerate() {
            if self.cancelled() {
                return self.aborted();
            }
            if let Step::Say(text) = &line.step {
                message = Some(text.clone());
                continue;
            }
            match self.step(&line.step) {
                Ok(()) => {}
                Err(Stop::Cancelled) => return self.aborted(),
                Err(Stop::Failed(why)) => {
                    let text = format!(
                        "step {} (line {}) `{}` failed: {why}",
                        k + 1,
                        line.no,
                        truncate(&line.src, 200)
                    );
                    self.emit(json!({"type": "error", "message": text}));
                    return Outcome::Failed(text);
                }
            }
        }
        if self.cancelled() {
            return self.aborted();
        }
        let message = message.unwrap_or_else(|| format!("done: {} steps", script.len()));
        self.emit(json!({"type": "agent_message", "message": message}));
        let input = (full.len() as u64).div_ceil(4) + 100;
        let output = (message.len() as u64).div_ceil(4) + 16 * script.len() as u64;
        let usage = json!({
            "input_tokens": input, "cached_input_tokens": 0, "output_tokens": output,
            "reasoning_output_tokens": 0, "total_tokens": input + output
        });
        self.emit(json!({
            "type": "token_count",
            "info": {"total_token_usage": usage, "last_token_usage": usage, "model_context_window": 272000}
        }));
        self.emit(json!({"type": "task_complete", "last_agent_message": message}));
        Outcome::Done(message)
    }

    fn aborted(&self) -> Outcome {
        self.emit(json!({"type": "turn_aborted", "reason": "interrupted"}));
        Outcome::Cancelled
    }

    /// Emits a patch_apply_begin/end pair around `f`.
    fn patch(
        &mut self,
        changes: Value,
        f: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), Stop> {
        let call_id = self.call_id();
        self.emit(json!({"type": "patch_apply_begin", "call_id": call_id, "auto_approved": true, "changes": changes}));
        let res = f();
        let (stdout, stderr) = match &res {
            Ok(()) => ("Success.".to_string(), String::new()),
            Err(e) => (String::new(), e.clone()),
        };
        self.emit(json!({"type": "patch_apply_end", "call_id": call_id, "stdout": stdout, "stderr": stderr, "success": res.is_ok()}));
        Ok(res?)
    }

    /// Emits an exec_command_begin/end pair for an operation done in-process.
    fn exec_inline(
        &mut self,
        command: Vec<String>,
        f: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), Stop> {
        let call_id = self.call_id();
        self.emit(json!({"type": "exec_command_begin", "call_id": call_id, "command": command, "cwd": self.cwd, "parsed_cmd": []}));
        let res = f();
        let (code, err) = match &res {
            Ok(()) => (0, String::new()),
            Err(e) => (1, e.clone()),
        };
        self.emit(json!({
            "type": "exec_command_end", "call_id": call_id, "stdout": "", "stderr": err,
            "aggregated_output": err, "exit_code": code, "duration": {"secs": 0, "nanos": 0},
            "formatted_output": err
        }));
        Ok(res?)
    }

    fn step(&mut self, step: &Step) -> Result<(), Stop> {
        let cwd = self.cwd.clone();
        match step {
            Step::Invalid(why) => Err(Stop::Failed(format!("cannot parse command: {why}"))),
            Step::Write { path, text } | Step::Append { path, text } => {
                let full = resolve(&cwd, path)?;
                let append = matches!(step, Step::Append { .. });
                let kind = if full.exists() {
                    json!({"type": "update", "unified_diff": "", "move_path": null})
                } else {
                    json!({"type": "add", "content": text})
                };
                self.patch(changes(&full, kind), || {
                    make_parent(&full)?;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .append(append)
                        .truncate(!append)
                        .open(&full)
                        .map_err(|e| io_err("open", &full, e))?;
                    f.write_all(text.as_bytes())
                        .map_err(|e| io_err("write", &full, e))
                })
            }
            Step::Replace { path, old, new } => {
                let full = resolve(&cwd, path)?;
                let kind = json!({"type": "update", "unified_diff": "", "move_path": null});
                self.patch(changes(&full, kind), || {
                    if old.is_empty() {
                        return Err("OLD text is empty".into());
                    }
                    let body =
                        std::fs::read_to_string(&full).map_err(|e| io_err("read", &full, e))?;
                    if !body.contains(old.as_str()) {
                        return Err(format!("OLD text {old:?} not found in {path}"));
                    }
                    std::fs::write(&full, body.replace(old.as_str(), new))
                        .map_err(|e| io_err("write", &full, e))
                })
            }
            Step::Delete(path) => {
                let full = resolve(&cwd, path)?;
                let content = std::fs::read_to_string(&full).unwrap_or_default();
                let kind = json!({"type": "delete", "content": content});
                self.patch(changes(&full, kind), || {
                    let meta =
                        std::fs::symlink_metadata(&full).map_err(|e| io_err("stat", &full, e))?;
                    if meta.is_dir() {
                        std::fs::remove_dir_all(&full)
                    } else {
                        std::fs::remove_file(&full)
                    }
                    .map_err(|e| io_err("delete", &full, e))
                })
            }
            Step::Rename(from, to) => {
                let src = resolve(&cwd, from)?;
                let dst = resolve(&cwd, to)?;
                let kind = json!({"type": "update", "unified_diff": "", "move_path": dst});
                self.patch(changes(&src, kind), || {
                    make_parent(&dst)?;
                    std::fs::rename(&src, &dst).map_err(|e| io_err("rename", &src, e))
                })
            }
            Step::Copy(from, to) => {
                let src = resolve(&cwd, from)?;
                let dst = resolve(&cwd, to)?;
                let content = std::fs::read_to_string(&src).unwrap_or_default();
                let kind = json!({"type": "add", "content": content});
                self.patch(changes(&dst, kind), || {
                    make_parent(&dst)?;
                    copy_recursive(&src, &dst)
                })
            }
            Step::Mkdir(path) => {
                let full = resolve(&cwd, path)?;
                let cmd = vec!["mkdir".into(), "-p".into(), path.clone()];
                self.exec_inline(cmd, || {
                    std::fs::create_dir_all(&full).map_err(|e| io_err("mkdir", &full, e))
                })
            }
            Step::Chmod(path, mode) => {
                let full = resolve(&cwd, path)?;
                let cmd = vec!["chmod".into(), format!("{mode:o}"), path.clone()];
                self.exec_inline(cmd, || {
                    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode))
                        .map_err(|e| io_err("chmod", &full, e))
                })
            }
            Step::Run(cmd) => self.run_command(cmd),
            Step::Say(_) => Ok(()),
            Step::Sleep(ms) => {
                if self.sleep(*ms) {
                    Ok(())
                } else {
                    Err(Stop::Cancelled)
                }
            }
            Step::Crash(code) => {
                eprintln!("fake-agent: crash requested, exiting with code {code}");
                std::process::exit(*code);
            }
            Step::Hang => {
                eprintln!("fake-agent: hang requested; this call will never be answered");
                if !self.hung {
                    self.hung = true;
                    self.srv.leave_active();
                }
                while self.sleep(1000) {}
                Err(Stop::Cancelled)
            }
            Step::Garbage(n) => {
                for i in 0..*n {
                    let line = format!("~~ fake-agent garbage line {i} {{ not json ~~");
                    self.srv.write_raw(line.as_bytes());
                }
                Ok(())
            }
            Step::Flood(bytes) => {
                self.flood(*bytes);
                Ok(())
            }
            Step::FloodBigNotify(n, bytes) => {
                let body = "m".repeat(*bytes as usize);
                for i in 0..*n {
                    self.emit(json!({"type": "agent_message", "message": format!("{i} {body}")}));
                }
                Ok(())
            }
            Step::FloodNotify(n) => {
                for i in 0..*n {
                    self.emit(
                        json!({"type": "agent_message_delta", "delta": format!("chunk {i} ")}),
                    );
                }
                Ok(())
            }
            Step::Slow(ms) => {
                self.srv.slow_ms.store(*ms, Ordering::Relaxed);
                Ok(())
            }
            Step::Stderr(text) => {
                eprintln!("{text}");
                Ok(())
            }
            Step::CloseStdout => {
                eprintln!("fake-agent: closing stdout");
                self.srv.close_stdout();
                Ok(())
            }
            Step::ExitAfterReply => {
                self.exit_after_reply = true;
                Ok(())
            }
            Step::ErrorReply => {
                self.error_reply = true;
                Ok(())
            }
            Step::IgnoreSigterm => {
                // SAFETY: installing SIG_IGN has no handler code to be unsafe in.
                unsafe {
                    libc::signal(libc::SIGTERM, libc::SIG_IGN);
                }
                eprintln!("fake-agent: ignoring SIGTERM");
                Ok(())
            }
            Step::LingerOnEof(ms) => {
                self.srv.linger_ms.store(*ms, Ordering::Relaxed);
                Ok(())
            }
            Step::SpawnOrphan(secs) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(format!("exec sleep {secs}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                // SAFETY: setsid is async-signal-safe.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::setsid() == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let mut child = cmd.spawn().map_err(|e| format!("spawn-orphan: {e}"))?;
                eprintln!("fake-agent: spawn-orphan pid={}", child.id());
                std::thread::spawn(move || {
                    let _ = child.wait(); // reap it if we are still alive
                });
                Ok(())
            }
        }
    }

    /// One line of BYTES-1 'x' then a newline, written while holding stdout.
    fn flood(&self, bytes: u64) {
        let slow = self.srv.slow_ms.load(Ordering::Relaxed);
        if slow > 0 {
            std::thread::sleep(Duration::from_millis(slow));
        }
        let mut out = lock(&self.srv.out);
        if out.closed {
            return;
        }
        let body = bytes.saturating_sub(1) as usize;
        if let Some(cap) = out.capture.as_mut() {
            cap.push("x".repeat(body));
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut so = std::io::stdout().lock();
        let mut left = body;
        let mut res = Ok(());
        while left > 0 && res.is_ok() {
            let n = left.min(chunk.len());
            res = so.write_all(&chunk[..n]);
            left -= n;
        }
        if let Err(e) = res
            .and_then(|_| so.write_all(b"\n"))
            .and_then(|_| so.flush())
        {
            eprintln!("fake-agent: stdout write failed ({e}); dropping further output");
            out.closed = true;
        }
    }

    fn run_command(&mut self, cmd: &str) -> Result<(), Stop> {
        let call_id = self.call_id();
        let command = json!(["sh", "-c", cmd]);
        self.emit(json!({"type": "exec_command_begin", "call_id": call_id, "command": command, "cwd": self.cwd, "parsed_cmd": []}));
        let started = Instant::now();
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot start sh: {e}");
                self.emit(json!({"type": "exec_command_end", "call_id": call_id, "stdout": "", "stderr": msg,
                    "aggregated_output": msg, "exit_code": -1, "formatted_output": msg}));
                return Err(Stop::Failed(msg));
            }
        };
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out_t = drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err_t = drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let status = loop {
            if self.cancelled() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Stop::Cancelled);
            }
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break Err(e),
            }
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let code = match &status {
            Ok(st) => st.code().unwrap_or(-1),
            Err(_) => -1,
        };
        let elapsed = started.elapsed();
        let aggregated = format!("{stdout}{stderr}");
        self.emit(json!({
            "type": "exec_command_end", "call_id": call_id, "stdout": stdout, "stderr": stderr,
            "aggregated_output": aggregated, "exit_code": code,
            "duration": {"secs": elapsed.as_secs(), "nanos": elapsed.subsec_nanos()},
            "formatted_output": aggregated
        }));
        match status {
            Err(e) => Err(Stop::Failed(format!("waiting for command: {e}"))),
            Ok(_) if code == 0 => Ok(()),
            Ok(_) => Err(Stop::Failed(format!(
                "command exited with code {code}: {}",
                truncate(stderr.trim(), 300)
            ))),
        }
    }
}

fn changes(path: &Path, kind: Value) -> Value {
    let mut m = Map::new();
    m.insert(path.display().to_string(), kind);
    Value::Object(m)
}

fn make_parent(p: &Path) -> Result<(), String> {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => {
            std::fs::create_dir_all(d).map_err(|e| io_err("mkdir", d, e))
        }
        _ => Ok(()),
    }
}

fn copy_recursive(src: &Path, dst: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(src).map_err(|e| io_err("stat", src, e))?;
    if !meta.is_dir() {
        return std::fs::copy(src, dst)
            .map(|_| ())
            .map_err(|e| io_err("copy", src, e));
    }
    std::fs::create_dir_all(dst).map_err(|e| io_err("mkdir", dst, e))?;
    let entries = std::fs::read_dir(src).map_err(|e| io_err("read dir", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("read dir", src, e))?;
        copy_recursive(&entry.path(), &dst.join(entry.file_name()))?;
    }
    Ok(())
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

// ───────────────────────────── main ─────────────────────────────

#[derive(Debug, Default, PartialEq)]
struct Opts {
    crash_at_start: bool,
    garbage_at_start: u64,
    slow_start_ms: u64,
    hang_at_start: bool,
    no_codex_tool: bool,
    log: Option<PathBuf>,
}

const USAGE: &str = "usage: fake-agent [mcp-server] [--crash-at-start] [--garbage-at-start N] \
[--slow-start MS] [--hang-at-start] [--no-codex-tool] [--log PATH]";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |flag: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: `{v}`"))
        };
        match a.as_str() {
            "mcp-server" => {} // so `args: ["mcp-server"]` works like codex
            "--crash-at-start" => o.crash_at_start = true,
            "--hang-at-start" => o.hang_at_start = true,
            "--no-codex-tool" => o.no_codex_tool = true,
            "--garbage-at-start" => o.garbage_at_start = num(&a, value(&a)?)?,
            "--slow-start" => o.slow_start_ms = num(&a, value(&a)?)?,
            "--log" => o.log = Some(PathBuf::from(value(&a)?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fake-agent: {e}");
            std::process::exit(2);
        }
    };
    if opts.crash_at_start {
        eprintln!("fake-agent: --crash-at-start: exiting with code 3");
        std::process::exit(3);
    }
    if opts.slow_start_ms > 0 {
        std::thread::sleep(Duration::from_millis(opts.slow_start_ms));
    }
    let srv = Arc::new(Server {
        no_codex_tool: opts.no_codex_tool,
        hang_at_start: opts.hang_at_start,
        prefix: std::env::var(PREFIX_ENV).ok(),
        ..Server::default()
    });
    for i in 0..opts.garbage_at_start {
        srv.write_raw(format!("~~ fake-agent startup garbage {i} [not json ~~").as_bytes());
    }
    let mut log = opts.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| eprintln!("fake-agent: cannot open log {}: {e}", p.display()))
            .ok()
    });

    let mut stdin = std::io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("fake-agent: reading stdin: {e}");
                break;
            }
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if let Some(f) = log.as_mut() {
            let _ = f.write_all(&buf).and_then(|_| f.write_all(b"\n"));
        }
        match std::str::from_utf8(&buf) {
            Ok(line) if line.trim().is_empty() => {}
            Ok(line) => handle_line(&srv, line),
            Err(e) => eprintln!("fake-agent: ignoring non-UTF-8 line: {e}"),
        }
    }
    // stdin closed: let working calls finish (hung ones do not count), then leave.
    let mut n = lock(&srv.active);
    while *n > 0 {
        n = srv.idle.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    let linger = srv.linger_ms.load(Ordering::Relaxed);
    if linger > 0 {
        eprintln!("fake-agent: stdin closed, lingering {linger} ms");
        std::thread::sleep(Duration::from_millis(linger));
        eprintln!("fake-agent: exiting on its own after stdin closed");
    }
    std::process::exit(0);
}

// ───────────────────────────── tests ─────────────────────────────

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(s: &str) -> Vec<Step> {
        parse_script(s).into_iter().map(|l| l.step).collect()
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fake-agent-test-{}-{tag}-{}",
            std::process::id(),
            mix(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0))
        ));
        std::fs::create_dir_all(&d).expect("tmpdir");
        d
    }

    fn capture_server() -> Server {
        Server {
            out: Mutex::new(Out {
                closed: false,
                capture: Some(Vec::new()),
            }),
            ..Server::default()
        }
    }

    fn turn<'a>(srv: &'a Server, cwd: &Path) -> Turn<'a> {
        Turn {
            srv,
            req_id: json!(7),
            sub_id: "1".into(),
            cancel: Arc::new(AtomicBool::new(false)),
            cwd: cwd.to_path_buf(),
            error_reply: false,
            exit_after_reply: false,
            hung: false,
            calls: 0,
        }
    }

    fn event_types(srv: &Server) -> Vec<String> {
        let out = lock(&srv.out);
        out.capture
            .iter()
            .flatten()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["params"]["msg"]["type"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn free_text_comments_and_blank_lines_are_ignored() {
        let s = "Wrap every handler in asyncHandler()\n\n# a comment\nwrite a.txt <<<hi\nWrite tests too";
        let parsed = parse_script(s);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].no, 4);
        assert_eq!(
            parsed[0].step,
            Step::Write {
                path: "a.txt".into(),
                text: "hi".into()
            }
        );
        assert!(parse_script("Please refactor the code.").is_empty());
    }

    #[test]
    fn inline_text_escapes() {
        assert_eq!(
            steps(r"append d/x.txt <<<a\nb\tc\\n"),
            vec![Step::Append {
                path: "d/x.txt".into(),
                text: "a\nb\tc\\n".into()
            }]
        );
        assert_eq!(decode_escapes(r"\q\"), r"\q\");
    }

    #[test]
    fn heredoc_is_exact_and_line_numbers_continue() {
        let s = "write src/lib.rs <<EOF\nfn a() {}\n  # not a comment\n\nEOF\nsay ok";
        let parsed = parse_script(s);
        assert_eq!(
            parsed[0].step,
            Step::Write {
                path: "src/lib.rs".into(),
                text: "fn a() {}\n  # not a comment\n\n".into()
            }
        );
        assert_eq!(parsed[1].no, 6);
        assert_eq!(parsed[1].step, Step::Say("ok".into()));
        assert!(matches!(steps("write a <<END\nx")[0], Step::Invalid(_)));
        assert!(matches!(steps("write a <<\nx")[0], Step::Invalid(_)));
        assert_eq!(
            steps("write a <<'T'\nx\nT"),
            vec![Step::Write {
                path: "a".into(),
                text: "x\n".into()
            }]
        );
    }

    #[test]
    fn replace_tokens_plain_and_quoted() {
        assert_eq!(
            steps(r#"replace f.rs "a \"b\"\n" c\d"#),
            vec![Step::Replace {
                path: "f.rs".into(),
                old: "a \"b\"\n".into(),
                new: r"c\d".into()
            }]
        );
        assert_eq!(
            steps(r#"replace f "" x"#),
            vec![Step::Replace {
                path: "f".into(),
                old: String::new(),
                new: "x".into()
            }]
        );
        assert!(matches!(steps("replace f a")[0], Step::Invalid(_)));
        assert!(matches!(steps(r#"replace f "a b"#)[0], Step::Invalid(_)));
        assert!(matches!(steps(r#"replace f "a"b c"#)[0], Step::Invalid(_)));
    }

    #[test]
    fn other_commands() {
        let s = "delete a\nmkdir b/c\nrename a b\nchmod run.sh 755\ncopy a b\nrun echo hi && ls\n\
                 say all \\n done\nsleep 20\ncrash\ncrash 9\nhang\ngarbage 3\nflood 100\n\
                 flood-notify 5\nslow 10\nstderr oops\nclose-stdout\nexit-after-reply\n\
                 ignore-sigterm\nspawn-orphan 30\nerror-reply\nlinger-on-eof 5";
        assert_eq!(
            steps(s),
            vec![
                Step::Delete("a".into()),
                Step::Mkdir("b/c".into()),
                Step::Rename("a".into(), "b".into()),
                Step::Chmod("run.sh".into(), 0o755),
                Step::Copy("a".into(), "b".into()),
                Step::Run("echo hi && ls".into()),
                Step::Say("all \n done".into()),
                Step::Sleep(20),
                Step::Crash(3),
                Step::Crash(9),
                Step::Hang,
                Step::Garbage(3),
                Step::Flood(100),
                Step::FloodNotify(5),
                Step::Slow(10),
                Step::Stderr("oops".into()),
                Step::CloseStdout,
                Step::ExitAfterReply,
                Step::IgnoreSigterm,
                Step::SpawnOrphan(30),
                Step::ErrorReply,
                Step::LingerOnEof(5),
            ]
        );
    }

    #[test]
    fn malformed_commands_become_invalid_steps() {
        for s in [
            "sleep soon",
            "chmod f 999",
            "chmod f",
            "hang now",
            "crash x",
            "run",
            "write f",
            "write f hello",
            "delete",
            "delete a b",
        ] {
            assert!(
                matches!(steps(s).as_slice(), [Step::Invalid(_)]),
                "{s} → {:?}",
                steps(s)
            );
        }
        // Capitalised words are free text, not commands.
        assert!(steps("Delete the old file\nRun the tests").is_empty());
    }

    #[test]
    fn paths_stay_inside_cwd() {
        let cwd = Path::new("/w");
        assert_eq!(resolve(cwd, "a/b").ok(), Some(PathBuf::from("/w/a/b")));
        assert_eq!(resolve(cwd, "./a").ok(), Some(PathBuf::from("/w/./a")));
        assert!(resolve(cwd, "/etc/passwd").is_err());
        assert!(resolve(cwd, "a/../../x").is_err());
        assert!(resolve(cwd, "..").is_err());
        assert!(resolve(cwd, "").is_err());
    }

    #[test]
    fn args() {
        let a = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        assert_eq!(
            a(&["mcp-server", "--garbage-at-start", "2", "--log", "/tmp/l"]),
            Ok(Opts {
                garbage_at_start: 2,
                log: Some("/tmp/l".into()),
                ..Opts::default()
            })
        );
        assert!(a(&["--slow-start"]).is_err());
        assert!(a(&["--slow-start", "x"]).is_err());
        assert!(a(&["--bogus"]).is_err());
    }

    #[test]
    fn executes_file_steps_and_reports_events() {
        let dir = tmpdir("exec");
        let srv = capture_server();
        let mut t = turn(&srv, &dir);
        let script =
            "write a/b.txt <<<one two\nappend a/b.txt <<<\\nthree\nreplace a/b.txt two 2\n\
                      copy a c\nrename c/b.txt d.txt\nmkdir e/f\nwrite x.sh <<<#!/bin/sh\\n\n\
                      chmod x.sh 700\ndelete a\nrun test -f d.txt";
        assert_eq!(t.run(script), Outcome::Done("done: 10 steps".into()));
        assert!(!dir.join("a").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("d.txt")).ok().as_deref(),
            Some("one 2\nthree")
        );
        assert!(dir.join("e/f").is_dir());
        let mode = std::fs::metadata(dir.join("x.sh")).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o700));
        let types = event_types(&srv);
        assert_eq!(types.first().map(String::as_str), Some("task_started"));
        assert_eq!(
            &types[types.len() - 3..],
            &["agent_message", "token_count", "task_complete"]
        );
        assert!(types.iter().any(|t| t == "patch_apply_begin"));
        assert!(types.iter().any(|t| t == "exec_command_end"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failing_step_keeps_earlier_steps_and_names_the_line() {
        let dir = tmpdir("fail");
        let srv = capture_server();
        let mut t = turn(&srv, &dir);
        let out = t.run("Do it.\nwrite f <<<abc\nreplace f zzz y\nwrite g <<<never");
        let Outcome::Failed(text) = out else {
            panic!("expected failure, got {out:?}");
        };
        assert!(text.contains("step 2 (line 3)"), "{text}");
        assert!(text.contains("zzz"), "{text}");
        assert!(dir.join("f").exists());
        assert!(!dir.join("g").exists());
        assert_eq!(event_types(&srv).last().map(String::as_str), Some("error"));

        let mut t = turn(&srv, &dir);
        assert!(matches!(t.run("write ../escape <<<x"), Outcome::Failed(_)));
        let mut t = turn(&srv, &dir);
        assert!(matches!(t.run("run exit 4"), Outcome::Failed(m) if m.contains("code 4")));
        let mut t = turn(&srv, &dir);
        assert!(matches!(t.run("sleep x"), Outcome::Failed(m) if m.contains("cannot parse")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn say_sets_message_and_cancel_aborts_sleep() {
        let dir = tmpdir("say");
        let srv = capture_server();
        let mut t = turn(&srv, &dir);
        assert_eq!(t.run("say hello"), Outcome::Done("hello".into()));

        let mut t = turn(&srv, &dir);
        let flag = t.cancel.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        assert_eq!(t.run("sleep 10000\nwrite no <<<x"), Outcome::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!dir.join("no").exists());
        let _ = h.join();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn thread_ids_look_like_uuids_and_differ() {
        let srv = Server::default();
        let (a, b) = (srv.new_thread_id(), srv.new_thread_id());
        assert_ne!(a, b);
        let lens: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(lens, vec![8, 4, 4, 4, 12]);
    }

    #[test]
    fn on_reply_sections_queue_in_order() {
        let (now, queued) = split_replies(
            "write a <<<1\n--- on reply ---\nwrite b <<<2\n  --- on reply ---  \nsay third\n",
        );
        assert_eq!(now, "write a <<<1\n");
        assert_eq!(
            queued,
            vec!["write b <<<2\n".to_string(), "say third\n".to_string()]
        );
        let (now, queued) = split_replies("say only");
        assert_eq!((now.as_str(), queued.len()), ("say only", 0));
    }
}
