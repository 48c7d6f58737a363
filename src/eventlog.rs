/*!
The per-task event log: one JSON object per line (`events/<task>.jsonl` in the run folder),
holding every notification the agent sent plus fanout's own task transitions. Writes are
small and synchronous; the file is shared by the agent session and the task pipeline.
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
    lines: u64,
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

/// Past this many lines the log keeps counting but stops writing (a flooding agent must not fill the disk).
pub const MAX_EVENT_LINES: u64 = 200_000;

impl EventLog {
    pub fn open(path: &Path) -> std::io::Result<EventLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            inner: Arc::new(Mutex::new(Inner {
                file: Some(file),
                path: path.to_path_buf(),
                lines: 0,
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
                lines: 0,
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
        let mut line = json!({"t": t, "kind": kind});
        if let (Value::Object(dst), Value::Object(src)) = (&mut line, data) {
            dst.extend(src);
        }
        let mut inner = self.lock();
        inner.lines += 1;
        if inner.lines > MAX_EVENT_LINES {
            return;
        }
        let limit_hit = inner.lines == MAX_EVENT_LINES;
        if let Some(f) = inner.file.as_mut() {
            let mut text = crate::redact::redact(&line.to_string()).into_owned();
            text.push('\n');
            if limit_hit {
                text.push_str(&format!(
                    "{}\n",
                    json!({"t": t, "kind": "log_truncated", "after_lines": MAX_EVENT_LINES})
                ));
            }
            let _ = f.write_all(text.as_bytes());
        }
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
    .find_map(|f| match &v[*f] {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(Value::as_str)
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
