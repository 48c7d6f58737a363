/*!
The per-task event log: one JSON object per line (`events/<task>.jsonl` in the run folder),
holding every notification the agent sent plus fanout's own task transitions. Writes are
small and synchronous; the file is shared by the agent session and the task pipeline.

The log is bounded whatever the agent sends: each event is cut to [`MAX_EVENT_BYTES`] (long
strings shortened, saying so), and past [`MAX_AGENT_LOG_BYTES`] the agent's events are counted,
not written — one `log_truncated` marker says so, and fanout's own events (task transitions,
gates) go on being written, each preceded by the count of agent events dropped so far when it
changed. Those have their own, larger bound ([`MAX_LOG_BYTES`]).
*/

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// Cloneable handle to one task's JSONL log.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    file: Option<File>,
    path: PathBuf,
    /// Bytes written so far.
    bytes: u64,
    /// Agent events not written since the log reached [`MAX_AGENT_LOG_BYTES`].
    dropped: u64,
    /// `dropped` when it was last written down.
    dropped_noted: u64,
    forward: Option<Forward>,
}

/// Hands a bounded summary of agent events to the run's event stream, at most one per
/// [`FORWARD_EVERY`] (an agent streaming deltas must not flood the outputs).
struct Forward {
    send: Box<dyn Fn(String, String) + Send>,
    last: Option<std::time::Instant>,
}

/// Longest agent-event summary forwarded to the run's event stream (the full event stays in
/// the task's log).
pub const MAX_AGENT_SUMMARY: usize = 400;

const FORWARD_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Longest line one event takes in the log; longer events have their long strings cut.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Strings of an event that is too long are cut to this many bytes.
const MAX_FIELD_BYTES: usize = 4 * 1024;
/// Past this size the log stops writing the agent's events (a flooding agent must not fill
/// the disk) and counts them.
pub const MAX_AGENT_LOG_BYTES: u64 = 64 * 1024 * 1024;
/// Past this size nothing more is written, not even fanout's own events.
pub const MAX_LOG_BYTES: u64 = MAX_AGENT_LOG_BYTES + 16 * 1024 * 1024;

/// Events an agent sends, as many as it likes; every other kind is fanout's own.
const AGENT_KINDS: &[&str] = &[
    "notification",
    "stdout",
    "garbage",
    "server_request",
    "tool_call",
    "exec_exit",
    "exec_start",
    "thread_started",
    "turn_start",
    "turn_started",
    "turn_interrupt",
];

impl EventLog {
    pub fn open(path: &Path) -> std::io::Result<EventLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            inner: Arc::new(Mutex::new(Inner {
                file: Some(file),
                path: path.to_path_buf(),
                bytes: 0,
                dropped: 0,
                dropped_noted: 0,
                forward: None,
            })),
        })
    }

    /// A log that writes nothing (unit tests).
    pub fn disabled() -> EventLog {
        EventLog {
            inner: Arc::new(Mutex::new(Inner {
                file: None,
                path: PathBuf::new(),
                bytes: 0,
                dropped: 0,
                dropped_noted: 0,
                forward: None,
            })),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Also send `(kind, summary)` of agent events to `send` (the run's event stream).
    pub fn forward_to(&self, send: impl Fn(String, String) + Send + 'static) {
        self.lock().forward = Some(Forward {
            send: Box::new(send),
            last: None,
        });
    }

    /// Appends `{"t": <ms since epoch>, "kind": kind, ...data}`.
    pub fn record(&self, kind: &str, data: Value) {
        {
            let mut inner = self.lock();
            if let Some(fw) = inner.forward.as_mut() {
                if fw.last.is_none_or(|l| l.elapsed() >= FORWARD_EVERY) {
                    if let Some((k, summary)) = summarize(kind, &data) {
                        fw.last = Some(std::time::Instant::now());
                        (fw.send)(k, summary);
                    }
                }
            }
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let agent = AGENT_KINDS.contains(&kind);
        {
            let mut inner = self.lock();
            if agent && inner.bytes >= MAX_AGENT_LOG_BYTES {
                inner.dropped += 1;
                return;
            }
            if inner.bytes >= MAX_LOG_BYTES {
                return;
            }
        }
        let mut line = json!({"t": t, "kind": kind});
        if let (Value::Object(dst), Value::Object(src)) = (&mut line, data) {
            dst.extend(src);
        }
        let mut text = bounded_line(line);
        text = crate::redact::redact(&text).into_owned();
        text.push('\n');
        let mut inner = self.lock();
        if inner.file.is_none() {
            return;
        }
        let mut out = String::new();
        if !agent && inner.dropped > inner.dropped_noted {
            out.push_str(&format!(
                "{}\n",
                json!({"t": t, "kind": "agent_events_dropped", "count": inner.dropped})
            ));
            inner.dropped_noted = inner.dropped;
        }
        out.push_str(&text);
        let before = inner.bytes;
        inner.bytes += out.len() as u64;
        if before < MAX_AGENT_LOG_BYTES && inner.bytes >= MAX_AGENT_LOG_BYTES {
            out.push_str(&format!(
                "{}\n",
                json!({"t": t, "kind": "log_truncated", "after_bytes": inner.bytes,
                       "note": "the agent's further events are counted, not written"})
            ));
        }
        if let Some(f) = inner.file.as_mut() {
            let _ = f.write_all(out.as_bytes());
        }
    }
}

/// The event as one JSON line of at most about [`MAX_EVENT_BYTES`]: when longer, its strings
/// are cut to [`MAX_FIELD_BYTES`] and its arrays to their first items, and `"truncated"` says
/// how long it was; if that is still too long, only its kind and size are kept.
fn bounded_line(mut line: Value) -> String {
    let text = line.to_string();
    if text.len() <= MAX_EVENT_BYTES {
        return text;
    }
    shorten(&mut line);
    if let Value::Object(m) = &mut line {
        m.insert("truncated".into(), json!({"bytes": text.len()}));
    }
    let short = line.to_string();
    if short.len() <= MAX_EVENT_BYTES {
        return short;
    }
    json!({"t": line["t"], "kind": line["kind"], "truncated": {"bytes": text.len()}}).to_string()
}

/// Cuts long strings and long arrays in place.
fn shorten(v: &mut Value) {
    match v {
        // Masked before the cut: a secret cut in two would not be recognised.
        Value::String(s) if s.len() > MAX_FIELD_BYTES => {
            *s = crate::jsonrpc::truncate(&crate::redact::redact(s), MAX_FIELD_BYTES);
        }
        Value::Array(a) => {
            if a.len() > 64 {
                let n = a.len();
                a.truncate(64);
                a.push(json!(format!("… {} more items", n - 64)));
            }
            a.iter_mut().for_each(shorten);
        }
        Value::Object(m) => m.values_mut().for_each(shorten),
        _ => {}
    }
}

/// What an agent event says, in one bounded line: `(kind, summary)`; `None` for fanout's own
/// bookkeeping and for streaming deltas.
fn summarize(kind: &str, data: &Value) -> Option<(String, String)> {
    let (k, v) = match kind {
        "notification" => {
            let params = &data["params"];
            let msg = &params["msg"];
            let k = msg["type"]
                .as_str()
                .or_else(|| data["method"].as_str())
                .unwrap_or("notification");
            if k.contains("delta") {
                return None;
            }
            (k.to_string(), if msg.is_null() { params } else { msg })
        }
        "stdout" | "tool_call" | "exec_exit" | "thread_started" | "garbage" => {
            (kind.to_string(), data)
        }
        _ => return None,
    };
    let text = [
        "message", "text", "command", "cmd", "line", "prompt", "name",
    ]
    .iter()
    // Bounded before anything is copied: an event may be megabytes long.
    .find_map(|f| match &v[*f] {
        Value::String(s) => Some(crate::jsonrpc::truncate(s, MAX_AGENT_SUMMARY)),
        Value::Array(a) => Some(
            a.iter()
                .take(64)
                .filter_map(Value::as_str)
                .map(|s| crate::jsonrpc::truncate(s, MAX_AGENT_SUMMARY))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    })
    .unwrap_or_default();
    let text = text.replace(['\n', '\r'], " ");
    Some((
        k,
        crate::jsonrpc::truncate(&text, MAX_AGENT_SUMMARY).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_big_event_is_cut_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("t.jsonl")).unwrap();
        let big = "x".repeat(5 * 1024 * 1024);
        log.record(
            "notification",
            json!({"params": {"msg": {"type": "agent_message", "message": big}}}),
        );
        let items: Vec<String> = (0..10_000).map(|i| format!("item {i}")).collect();
        log.record("notification", json!({"params": {"list": items}}));
        log.record("task_started", json!({"task": "t"}));
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(
            text.lines().all(|l| l.len() <= MAX_EVENT_BYTES),
            "a line is too long"
        );
        let got = lines(&log.path());
        assert_eq!(got.len(), 3);
        assert!(got[0]["truncated"]["bytes"].as_u64().unwrap() > 5_000_000);
        let message = got[0]["params"]["msg"]["message"].as_str().unwrap();
        assert!(
            message.len() < 5000 && message.ends_with("bytes)"),
            "{message}"
        );
        assert_eq!(got[1]["params"]["list"].as_array().unwrap().len(), 65);
        assert_eq!(got[2]["kind"], "task_started");
    }

    #[test]
    fn past_the_cap_agent_events_are_counted_and_transitions_still_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("t.jsonl")).unwrap();
        let chunk = "y".repeat(60 * 1024);
        let n = (MAX_AGENT_LOG_BYTES / (60 * 1024)) as usize + 500;
        log.record("task_started", json!({"task": "t"}));
        for _ in 0..n {
            log.record("notification", json!({"params": {"text": chunk}}));
        }
        log.record("verify", json!({"attempt": 1}));
        log.record("notification", json!({"params": {"text": "late"}}));
        log.record("verified", json!({"attempt": 1}));
        let size = std::fs::metadata(log.path()).unwrap().len();
        assert!(
            size <= MAX_AGENT_LOG_BYTES + 2 * MAX_EVENT_BYTES as u64,
            "{size}"
        );
        let got = lines(&log.path());
        let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "log_truncated").count(), 1);
        let tail = &kinds[kinds.len() - 4..];
        assert_eq!(
            tail,
            [
                "agent_events_dropped",
                "verify",
                "agent_events_dropped",
                "verified"
            ]
        );
        let written = kinds.iter().filter(|k| **k == "notification").count();
        let first = got[got.len() - 4]["count"].as_u64().unwrap() as usize;
        assert_eq!(written + first, n);
        assert_eq!(
            got[got.len() - 2]["count"].as_u64().unwrap() as usize,
            first + 1
        );
    }
}
