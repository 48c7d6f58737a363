//! The server's side of the wire: messages to the client, and arguments that do not fit.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// The client's side of the pipe: one JSON message per line, written whole.
#[derive(Clone)]
pub struct Out(Arc<Mutex<Box<dyn Write + Send>>>);

impl Out {
    pub fn new(w: impl Write + Send + 'static) -> Out {
        Out(Arc::new(Mutex::new(Box::new(w))))
    }

    /// Messages handed to `f`, one (redacted) JSON text each: for the HTTP transport.
    pub fn lines(f: impl FnMut(String) + Send + 'static) -> Out {
        Out::new(LineSink {
            buf: Vec::new(),
            f: Box::new(f),
        })
    }

    /// Sends one message; a client that went away is noticed on stdin, not here.
    pub fn send(&self, msg: &Value) {
        // Secrets masked like every other output (no pattern matches a quote: JSON stays valid).
        let mut line = crate::redact::redact(&msg.to_string()).into_owned();
        line.push('\n');
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.write_all(line.as_bytes());
        let _ = w.flush();
    }

    pub(super) fn error(&self, id: &Value, code: i64, message: &str) {
        self.send(&error_message(id, code, message));
    }

    /// `notifications/progress` for a request that asked for it; `progress` must grow.
    pub fn progress(&self, token: &Value, progress: Value, total: u64, message: &str) {
        self.send(
            &json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                "progressToken": token, "progress": progress, "total": total, "message": message,
            }}),
        );
    }

    /// A notification without parameters (`notifications/resources/list_changed`).
    pub fn notify(&self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}));
    }
}

/// A writer that hands on each line without its newline.
struct LineSink {
    buf: Vec<u8>,
    f: Box<dyn FnMut(String) + Send>,
}

impl Write for LineSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            (self.f)(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A JSON-RPC result message.
pub(super) fn result_message(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A JSON-RPC error message.
pub(super) fn error_message(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A client's arguments that do not fit the tool (JSON-RPC -32602).
#[derive(Debug)]
pub struct BadParams(pub String);
