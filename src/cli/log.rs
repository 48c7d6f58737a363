//! `fanout log RUN TASK`: the task's event log (`events/<task>.jsonl`) as one readable line per
//! event: time since the first event, what happened, and its salient field. `--json` prints the
//! raw lines. Output stays bounded: `--tail N`, long texts cut with a note, streaming deltas
//! folded away unless asked for.

use super::args::LogArgs;
use std::collections::VecDeque;
use std::io::BufRead;

use anyhow::Context;
use serde_json::{Map, Value};

use super::common::EXIT_OK;

/// Output is handed to stdout in pieces of about this size.
const CHUNK: usize = 64 * 1024;

pub fn run(a: LogArgs) -> anyhow::Result<i32> {
    let rt = super::common::run_task(&a.repo, &a.run, &a.task)?;
    let (run, task) = (&rt.run, &rt.task);
    let path = crate::run_dir::RunDir::new(&rt.run_dir)
        .task(task.as_str())
        .events;
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let status = rt.status.as_deref().unwrap_or("unknown");
            eprintln!("fanout: task {task} of run {run} has no event log (status {status}; it may never have started)");
            return Ok(EXIT_OK);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut sink = Sink::new(a.tail);
    let mut first_t: Option<u64> = None;
    let mut folded = 0u64;
    let mut raw = Vec::new();
    let mut number = 0u64;
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        number += 1;
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if a.json {
            sink.push(format!("{line}\n"))?;
            continue;
        }
        let event: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                let text = cut(&clean(line), a.max_chars);
                sink.push(format!("{:>10}  {:<20} {text}\n", "?", "(not an event)"))?;
                continue;
            }
        };
        let t = event.get("t").and_then(Value::as_u64);
        if first_t.is_none() {
            first_t = t;
        }
        let d = describe(&event);
        if d.delta && !a.deltas {
            folded += 1;
            continue;
        }
        let rel = match (t, first_t) {
            (Some(t), Some(first)) => format!("+{:.3}s", t.saturating_sub(first) as f64 / 1000.0),
            _ => "?".to_string(),
        };
        let text = cut(&clean(&d.text), a.max_chars);
        let label = clean(&d.label);
        sink.push(
            format!("{rel:>10}  {label:<20} {text}")
                .trim_end()
                .to_string()
                + "\n",
        )?;
    }
    sink.finish()?;
    if number == 0 {
        eprintln!("fanout: task {task} of run {run} has an empty event log");
    }
    if folded > 0 {
        eprintln!("fanout: {folded} streaming delta event(s) folded away (--deltas shows them)");
    }
    Ok(EXIT_OK)
}

/// Writes lines as they come, or keeps only the last `tail` of them.
struct Sink {
    tail: Option<usize>,
    kept: VecDeque<String>,
    buf: String,
}

impl Sink {
    fn new(tail: Option<usize>) -> Sink {
        Sink {
            tail,
            kept: VecDeque::new(),
            buf: String::new(),
        }
    }

    fn push(&mut self, line: String) -> Result<(), super::out::OutputError> {
        match self.tail {
            Some(0) => {}
            Some(n) => {
                if self.kept.len() == n {
                    self.kept.pop_front();
                }
                self.kept.push_back(line);
            }
            None => {
                self.buf.push_str(&line);
                if self.buf.len() >= CHUNK {
                    super::out::print(std::mem::take(&mut self.buf))?;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), super::out::OutputError> {
        for line in self.kept.drain(..) {
            self.buf.push_str(&line);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        super::out::print(self.buf)
    }
}

/// What one event says, for a person.
#[derive(Debug, PartialEq)]
struct Described {
    label: String,
    text: String,
    /// A chunk of a streamed message (one event per few characters).
    delta: bool,
}

fn describe(event: &Value) -> Described {
    let kind = str_of(event, "kind").unwrap_or("?");
    let text = match kind {
        "notification" => return notification(event),
        "task_started" => format!("agent {}", field(event, "agent")),
        "turn_started" => format!("attempt {}", field(event, "attempt")),
        // Visible rounds (issue 21): a line per round, with what caused it.
        "round_started" => match str_of(event, "cause") {
            Some(cause) => format!(
                "round {} ({}): {cause}",
                field(event, "round"),
                field(event, "round_kind")
            ),
            None => format!(
                "round {} ({})",
                field(event, "round"),
                field(event, "round_kind")
            ),
        },
        "exec_start" => format!(
            "attempt {}: {}",
            field(event, "attempt"),
            field(event, "command")
        ),
        "stdout" | "garbage" => field(event, "line"),
        "exec_exit" => field(event, "status"),
        "initialized" => {
            let r = event.get("result").unwrap_or(&Value::Null);
            match (
                at(r, &["serverInfo", "name"]),
                at(r, &["serverInfo", "version"]),
                str_of(r, "userAgent"),
            ) {
                (Some(n), v, _) => format!("{n} {}", v.unwrap_or("")),
                (None, _, Some(ua)) => ua.to_string(),
                _ => compact(r),
            }
        }
        "thread_started" => format!("thread {}", field(event, "threadId")),
        "turn_start" => format!(
            "turn {} on thread {}",
            field(event, "turn"),
            field(event, "threadId")
        ),
        "turn_interrupt" => format!(
            "turn {}: {}",
            field(event, "turnId"),
            field(event, "reason")
        ),
        "tool_call" => format!("{} (turn {})", field(event, "tool"), field(event, "turn")),
        "server_request" => match event.get("answer") {
            Some(answer) => format!("{} → {}", field(event, "method"), compact(answer)),
            None => field(event, "method"),
        },
        "codex" => format!(
            "{} {} ({})",
            field(event, "program"),
            field(event, "version"),
            field(event, "protocol")
        ),
        "codex_sandbox_override" => {
            format!("{} → {}", field(event, "asked"), field(event, "used"))
        }
        "log_truncated" => format!(
            "the agent's events stop here: the log reached {} bytes",
            field(event, "after_bytes")
        ),
        "agent_events_dropped" => format!("{} agent events not written", field(event, "count")),
        "verify" => {
            let gates: Vec<String> = event
                .get("gates")
                .and_then(Value::as_array)
                .map(|gates| gates.iter().map(gate).collect())
                .unwrap_or_default();
            let mut text = format!("attempt {}: ", field(event, "attempt"));
            text.push_str(&if gates.is_empty() {
                "no gates".to_string()
            } else {
                gates.join(", ")
            });
            if let Some(r) = at(event, &["readback", "result"]) {
                text.push_str(&format!("; read-back {r}"));
            }
            text
        }
        "verify_failed" => format!(
            "attempt {}: {}",
            field(event, "attempt"),
            field(event, "feedback")
        ),
        "verified" => format!("commit {}", short(&field(event, "commit"))),
        "task_failed" => format!("{}: {}", field(event, "status"), field(event, "error")),
        "no_changes" => String::new(),
        _ => compact(&without(event, &["t", "kind"])),
    };
    Described {
        label: kind.to_string(),
        text,
        delta: false,
    }
}

/// A notification of the agent: `codex/event` (mcp-server), app-server methods, anything else.
fn notification(event: &Value) -> Described {
    let method = str_of(event, "method").unwrap_or("?");
    let params = event.get("params").unwrap_or(&Value::Null);
    if method == "codex/event" {
        let msg = params.get("msg").unwrap_or(&Value::Null);
        let ty = str_of(msg, "type").unwrap_or("codex/event");
        let text = match ty {
            "agent_message" => field(msg, "message"),
            "agent_reasoning" => field(msg, "text"),
            "exec_command_begin" => command(msg.get("command")),
            "exec_command_end" => {
                let output = field(msg, "aggregated_output");
                let output = output.trim();
                if output.is_empty() {
                    format!("exit {}", field(msg, "exit_code"))
                } else {
                    format!("exit {}: {output}", field(msg, "exit_code"))
                }
            }
            "patch_apply_begin" => msg
                .get("changes")
                .and_then(Value::as_object)
                .map(|c| c.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            "patch_apply_end" => format!("success {}", field(msg, "success")),
            "mcp_tool_call_begin" | "mcp_tool_call_end" => codex_event_mcp_call(msg),
            "token_count" => match value_at(msg, &["info", "total_token_usage", "total_tokens"]) {
                Some(n) => format!("{n} tokens in total"),
                None => compact(&without(msg, &["type"])),
            },
            "task_started" => "the agent's turn begins".to_string(),
            "task_complete" => field(msg, "last_agent_message"),
            "error" | "stream_error" => field(msg, "message"),
            "turn_aborted" => field(msg, "reason"),
            _ if ty.ends_with("_delta") => field(msg, "delta"),
            _ => compact(&without(msg, &["type"])),
        };
        return Described {
            label: ty.to_string(),
            text,
            delta: ty.ends_with("_delta"),
        };
    }
    let item = params.get("item").unwrap_or(&Value::Null);
    let text = match method {
        "item/started" | "item/completed" => {
            let ty = str_of(item, "type").unwrap_or("?");
            let what = match ty {
                "agentMessage" => field(item, "text"),
                "commandExecution" => {
                    let mut s = command(item.get("command"));
                    if let Some(code) = item.get("exitCode").filter(|c| !c.is_null()) {
                        s.push_str(&format!(" → exit {code}"));
                    }
                    s
                }
                "fileChange" => item
                    .get("changes")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .filter_map(|c| str_of(c, "path"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                "mcpToolCall" => mcp_tool_call(item),
                _ => String::new(),
            };
            format!("{ty}: {what}")
        }
        "turn/started" => format!("turn {}", at(params, &["turn", "id"]).unwrap_or("?")),
        "turn/completed" => {
            let status = at(params, &["turn", "status"]).unwrap_or("?");
            match at(params, &["turn", "error", "message"]) {
                Some(e) => format!("{status}: {e}"),
                None => status.to_string(),
            }
        }
        "thread/started" => format!("thread {}", at(params, &["thread", "id"]).unwrap_or("?")),
        "thread/tokenUsage/updated" => {
            match value_at(params, &["tokenUsage", "total", "totalTokens"]) {
                Some(n) => format!("{n} tokens in total"),
                None => compact(params),
            }
        }
        "error" => {
            let message = at(params, &["error", "message"]).unwrap_or("?");
            match params.get("willRetry").and_then(Value::as_bool) {
                Some(true) => format!("{message} (will retry)"),
                _ => message.to_string(),
            }
        }
        _ if is_delta_method(method) => field(params, "delta"),
        _ => compact(params),
    };
    Described {
        label: method.to_string(),
        text,
        delta: is_delta_method(method),
    }
}

/// A Codex agent's call of an MCP tool: server and tool, the arguments while it runs, then the
/// outcome (`completed`/`failed`, the error or the first text of the answer).
fn mcp_tool_call(item: &Value) -> String {
    let name = format!(
        "{}/{}",
        str_of(item, "server").unwrap_or("?"),
        str_of(item, "tool").unwrap_or("?")
    );
    let status = str_of(item, "status").unwrap_or("?");
    if status == "inProgress" {
        return match item.get("arguments").filter(|a| !a.is_null()) {
            Some(args) => format!("{name} {}", compact(args)),
            None => name,
        };
    }
    let detail = at(item, &["error", "message"])
        .map(str::to_string)
        .or_else(|| {
            item.get("result")?
                .get("content")?
                .as_array()?
                .iter()
                .find_map(|c| str_of(c, "text"))
                .map(str::to_string)
        });
    let outcome = if value_at(item, &["result", "isError"]) == Some(&Value::Bool(true)) {
        "failed (the tool reported an error)"
    } else {
        status
    };
    match detail {
        Some(d) => format!("{name} → {outcome}: {d}"),
        None => format!("{name} → {outcome}"),
    }
}

/// The same from `codex mcp-server` (0.153): `invocation {server, tool, arguments}`, and at the
/// end `result` as `{"Ok": CallToolResult}` or `{"Err": message}`.
fn codex_event_mcp_call(msg: &Value) -> String {
    let inv = msg.get("invocation").unwrap_or(&Value::Null);
    let name = format!(
        "{}/{}",
        str_of(inv, "server").unwrap_or("?"),
        str_of(inv, "tool").unwrap_or("?")
    );
    let Some(result) = msg.get("result") else {
        return match inv.get("arguments").filter(|a| !a.is_null()) {
            Some(args) => format!("{name} {}", compact(args)),
            None => name,
        };
    };
    if let Some(err) = result.get("Err") {
        return format!(
            "{name} → failed: {}",
            err.as_str().unwrap_or(&err.to_string())
        );
    }
    let ok = result.get("Ok").unwrap_or(&Value::Null);
    let text = ok
        .get("content")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find_map(|c| str_of(c, "text")));
    let outcome = if ok.get("isError") == Some(&Value::Bool(true)) {
        "failed (the tool reported an error)"
    } else {
        "completed"
    };
    match text {
        Some(t) => format!("{name} → {outcome}: {t}"),
        None => format!("{name} → {outcome}"),
    }
}

fn is_delta_method(method: &str) -> bool {
    method.ends_with("/delta") || method.ends_with("Delta")
}

/// `scope passed`, `command FAILED (exit 1)`.
fn gate(g: &Value) -> String {
    let name = str_of(g, "gate").unwrap_or("?");
    let verdict = match g.get("passed").and_then(Value::as_bool) {
        Some(true) => "passed",
        _ => "FAILED",
    };
    match str_of(g, "detail") {
        Some(d) => format!("{name} {verdict} ({d})"),
        None => format!("{name} {verdict}"),
    }
}

/// A command as an argv array or a string.
fn command(v: Option<&Value>) -> String {
    match v {
        Some(Value::Array(argv)) => argv
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| a.to_string())
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(Value::String(s)) => s.clone(),
        Some(other) => compact(other),
        None => String::new(),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn value_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    value_at(v, path)?.as_str()
}

/// A field as text: strings as they are, anything else as JSON, missing as empty.
fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn without(v: &Value, keys: &[&str]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Object(m) if m.is_empty() => String::new(),
        other => other.to_string(),
    }
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// One line per event, and nothing an agent printed may drive the terminal: control
/// characters (newlines, escape sequences) are shown as their Unicode pictures.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32).unwrap_or('?'),
            '\u{7f}' => '\u{2421}',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// The first `max` characters, and a note saying how many were left out.
fn cut(text: &str, max: usize) -> String {
    if max == 0 {
        return text.to_string();
    }
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((i, _)) => {
            let rest = text[i..].chars().count();
            format!(
                "{}… (+{rest} chars cut; --max-chars 0 shows all)",
                &text[..i]
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describes_fanout_and_agent_events() {
        let d = describe(&json!({"t": 1, "kind": "verify", "attempt": 1, "gates": [
            {"gate": "scope", "passed": true},
            {"gate": "command", "passed": false, "detail": "exit 1"}]}));
        assert_eq!(d.text, "attempt 1: scope passed, command FAILED (exit 1)");
        let d = describe(&json!({"t": 1, "kind": "round_started", "round": 2,
            "round_kind": "feedback", "cause": "command failed: exit 1"}));
        assert_eq!(d.text, "round 2 (feedback): command failed: exit 1");
        let d = describe(
            &json!({"t": 1, "kind": "notification", "method": "codex/event",
            "params": {"msg": {"type": "exec_command_end", "exit_code": 2, "aggregated_output": "boom\n"}}}),
        );
        assert_eq!(
            (d.label.as_str(), d.text.as_str()),
            ("exec_command_end", "exit 2: boom")
        );
        let d = describe(
            &json!({"t": 1, "kind": "notification", "method": "item/completed",
            "params": {"item": {"type": "commandExecution", "command": "ls", "exitCode": 0}}}),
        );
        assert_eq!(d.text, "commandExecution: ls → exit 0");
        let d = describe(
            &json!({"t": 1, "kind": "notification", "method": "item/agentMessage/delta",
            "params": {"delta": "he"}}),
        );
        assert!(d.delta);
        let d = describe(
            &json!({"t": 1, "kind": "notification", "method": "item/started",
            "params": {"item": {"type": "mcpToolCall", "server": "claude", "tool": "Read",
                                "status": "inProgress", "arguments": {"file_path": "a.txt"}}}}),
        );
        assert_eq!(d.text, "mcpToolCall: claude/Read {\"file_path\":\"a.txt\"}");
        let d = describe(
            &json!({"t": 1, "kind": "notification", "method": "item/completed",
            "params": {"item": {"type": "mcpToolCall", "server": "claude", "tool": "Read",
                                "status": "completed", "result": {"content": [
                                    {"type": "text", "text": "pineapple"}]}}}}),
        );
        assert_eq!(d.text, "mcpToolCall: claude/Read → completed: pineapple");
        let d = describe(
            &json!({"t": 1, "kind": "notification", "method": "item/completed",
            "params": {"item": {"type": "mcpToolCall", "server": "claude", "tool": "Write",
                                "status": "failed", "error": {"message": "EACCES"}}}}),
        );
        assert_eq!(d.text, "mcpToolCall: claude/Write → failed: EACCES");
        let d = describe(
            &json!({"t": 1, "kind": "notification", "method": "codex/event",
            "params": {"msg": {"type": "mcp_tool_call_end", "invocation":
                {"server": "claude-code", "tool": "Read", "arguments": {}},
                "result": {"Ok": {"content": [{"type": "text", "text": "hi"}]}}}}}),
        );
        assert_eq!(d.text, "claude-code/Read → completed: hi");
        let d = describe(
            &json!({"t": 1, "kind": "notification", "method": "codex/event",
            "params": {"msg": {"type": "mcp_tool_call_end", "invocation":
                {"server": "s", "tool": "t"}, "result": {"Err": "timed out"}}}}),
        );
        assert_eq!(d.text, "s/t → failed: timed out");
        let d = describe(&json!({"t": 1, "kind": "something_new", "x": 1}));
        assert_eq!(d.text, "{\"x\":1}");
    }

    #[test]
    fn long_and_hostile_texts_stay_on_one_bounded_line() {
        assert_eq!(
            cut("abcdef", 3),
            "abc… (+3 chars cut; --max-chars 0 shows all)"
        );
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdef", 0), "abcdef");
        assert_eq!(clean("a\nb\x1b[31m"), "a\u{240a}b\u{241b}[31m");
    }
}
