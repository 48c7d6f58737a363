/*!
A JSON-RPC 2.0 connection over a child's stdio: newline-delimited messages, requests matched
to replies by id, notifications and server→client requests handed to the caller in order.

Agent output is untrusted: lines are capped in length (the rest of an over-long line is
skipped, not buffered), unparsable lines are reported as [`Incoming::Garbage`] and never
answered (answering garbage makes two peers loop), and a closed stdout fails every pending
request instead of hanging.
*/

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Longest line accepted from an agent; longer lines are skipped and reported.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JsonRpcError {
    #[error("the agent closed its output ({0})")]
    Closed(String),
    #[error("no answer to {method} within {secs:.0} s")]
    Timeout { method: String, secs: f64 },
    #[error("{method} failed: {message} (JSON-RPC error {code})")]
    Remote {
        method: String,
        code: i64,
        message: String,
        data: Option<Value>,
    },
    #[error("cannot write to the agent")]
    Write(#[source] std::io::Error),
}

/// A message the peer sent that is not a reply to one of our requests.
#[derive(Debug, Clone)]
pub enum Incoming {
    Notification {
        method: String,
        params: Value,
    },
    /// A request from the server (approvals, user input); must be answered with [`Connection::respond`].
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A line that is not a JSON-RPC message (logged by the caller, never answered).
    Garbage(String),
}

type Reply = Result<Value, (i64, String, Option<Value>)>;

struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    closed: Mutex<Option<String>>,
}

/// The client end of a JSON-RPC connection.
pub struct Connection {
    /// `None` once [`Connection::close_input`] dropped it (the peer saw EOF).
    writer: tokio::sync::Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    incoming: mpsc::Receiver<Incoming>,
    reader: tokio::task::JoinHandle<()>,
    /// Whether to send the `"jsonrpc": "2.0"` member (codex app-server omits it; sending is harmless).
    tag_version: bool,
}

/// A request in flight.
pub struct PendingRequest {
    pub id: u64,
    pub method: String,
    rx: oneshot::Receiver<Reply>,
}

impl Connection {
    /// Starts the reader task. `incoming_capacity` bounds memory: a peer that floods
    /// notifications blocks on its own stdout once the caller falls behind.
    pub fn new<R, W>(read: R, write: W, incoming_capacity: usize) -> Connection
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            closed: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(incoming_capacity.max(1));
        let reader = tokio::spawn(read_loop(BufReader::new(read), shared.clone(), tx));
        Connection {
            writer: tokio::sync::Mutex::new(Some(Box::new(write))),
            shared,
            next_id: AtomicU64::new(1),
            incoming: rx,
            reader,
            tag_version: true,
        }
    }

    async fn write_message(&self, mut msg: Value) -> Result<(), JsonRpcError> {
        if self.tag_version {
            if let Value::Object(m) = &mut msg {
                m.insert("jsonrpc".into(), json!("2.0"));
            }
        }
        let mut line = serde_json::to_vec(&msg).map_err(|e| JsonRpcError::Write(e.into()))?;
        line.push(b'\n');
        let mut guard = self.writer.lock().await;
        let Some(w) = guard.as_mut() else {
            return Err(JsonRpcError::Write(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "our side of the connection is closed",
            )));
        };
        w.write_all(&line).await.map_err(JsonRpcError::Write)?;
        w.flush().await.map_err(JsonRpcError::Write)
    }

    /// Sends a request and returns a handle to await its reply.
    pub async fn start_request(
        &self,
        method: &str,
        params: Value,
    ) -> Result<PendingRequest, JsonRpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            if let Some(reason) = lock(&self.shared.closed).clone() {
                return Err(JsonRpcError::Closed(reason));
            }
            lock(&self.shared.pending).insert(id, tx);
        }
        let sent = self
            .write_message(json!({"id": id, "method": method, "params": params}))
            .await;
        if let Err(e) = sent {
            lock(&self.shared.pending).remove(&id);
            return Err(e);
        }
        Ok(PendingRequest {
            id,
            method: method.to_string(),
            rx,
        })
    }

    pub async fn notify(&self, method: &str, params: Value) -> Result<(), JsonRpcError> {
        self.write_message(json!({"method": method, "params": params}))
            .await
    }

    /// Answers a request the server sent us.
    pub async fn respond(&self, id: Value, result: Value) -> Result<(), JsonRpcError> {
        self.write_message(json!({"id": id, "result": result}))
            .await
    }

    pub async fn respond_error(
        &self,
        id: Value,
        code: i64,
        message: &str,
    ) -> Result<(), JsonRpcError> {
        self.write_message(json!({"id": id, "error": {"code": code, "message": message}}))
            .await
    }

    /// Waits for `req`'s reply until `deadline`, passing everything else the peer sends to
    /// `on_incoming` in arrival order. The handler may answer server requests itself.
    pub async fn wait<F>(
        &mut self,
        req: PendingRequest,
        deadline: Instant,
        mut on_incoming: F,
    ) -> Result<Value, JsonRpcError>
    where
        F: AsyncIncomingHandler,
    {
        let PendingRequest { id, method, mut rx } = req;
        let secs_total = deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let mut incoming_open = true;
        loop {
            tokio::select! {
                biased;
                reply = &mut rx => {
                    // Drain what arrived before the reply so events keep their order.
                    while let Ok(msg) = self.incoming.try_recv() {
                        on_incoming.handle(self, msg).await;
                    }
                    return match reply {
                        Ok(Ok(v)) => Ok(v),
                        Ok(Err((code, message, data))) => Err(JsonRpcError::Remote { method, code, message, data }),
                        Err(_) => Err(JsonRpcError::Closed(self.close_reason())),
                    };
                }
                msg = self.incoming.recv(), if incoming_open => {
                    match msg {
                        Some(m) => on_incoming.handle(self, m).await,
                        None => incoming_open = false,
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    lock(&self.shared.pending).remove(&id);
                    return Err(JsonRpcError::Timeout { method, secs: secs_total });
                }
            }
        }
    }

    /// Waits for the next message that is not a reply (used while a turn streams notifications).
    pub async fn next_incoming(&mut self, deadline: Instant) -> Result<Incoming, JsonRpcError> {
        tokio::select! {
            msg = self.incoming.recv() => msg.ok_or_else(|| JsonRpcError::Closed(self.close_reason())),
            _ = tokio::time::sleep_until(deadline) => Err(JsonRpcError::Timeout { method: "the agent's next message".into(), secs: 0.0 }),
        }
    }

    /// Sends `method` and waits for its reply, ignoring-but-forwarding other traffic.
    pub async fn request<F: AsyncIncomingHandler>(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
        on_incoming: F,
    ) -> Result<Value, JsonRpcError> {
        let req = self.start_request(method, params).await?;
        self.wait(req, Instant::now() + timeout, on_incoming).await
    }

    fn close_reason(&self) -> String {
        lock(&self.shared.closed)
            .clone()
            .unwrap_or_else(|| "connection closed".into())
    }

    /// Whether the peer's output has closed.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.closed).is_some()
    }

    pub fn set_tag_version(&mut self, on: bool) {
        self.tag_version = on;
    }

    /// Closes our side (the peer sees EOF on stdin), as the MCP stdio shutdown asks.
    /// The writer is dropped: shutting a pipe down does not close it, only dropping it does.
    pub async fn close_input(&self) {
        if let Some(mut w) = self.writer.lock().await.take() {
            let _ = w.shutdown().await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Handles traffic that arrives while waiting for a reply. Implemented for closures that
/// take the message only (the common case: log it).
pub trait AsyncIncomingHandler {
    fn handle(
        &mut self,
        conn: &Connection,
        msg: Incoming,
    ) -> impl std::future::Future<Output = ()> + Send;
}

impl<F: FnMut(Incoming) + Send> AsyncIncomingHandler for F {
    async fn handle(&mut self, _conn: &Connection, msg: Incoming) {
        self(msg)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of a plain map.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Incoming>,
) {
    let reason = loop {
        match read_capped_line(&mut reader, MAX_LINE_BYTES).await {
            Ok(None) => break "end of output".to_string(),
            Err(e) => break format!("read error: {e}"),
            Ok(Some(Line::TooLong(n))) => {
                let note = format!("skipped a line of {n} bytes (longer than {MAX_LINE_BYTES})");
                if tx.send(Incoming::Garbage(note)).await.is_err() {
                    break "receiver gone".into();
                }
            }
            Ok(Some(Line::Text(bytes))) => {
                if let Some(msg) = classify(&bytes, &shared) {
                    if tx.send(msg).await.is_err() {
                        break "receiver gone".into();
                    }
                }
            }
        }
    };
    *lock(&shared.closed) = Some(reason);
    // Dropping the senders fails every pending request with `Closed`.
    lock(&shared.pending).clear();
}

/// One line read by [`read_capped_line`].
pub(crate) enum Line {
    Text(Vec<u8>),
    /// The line was longer than the cap; only its length is kept.
    TooLong(usize),
}

/// Reads one line of at most `cap` bytes; an over-long line is consumed and only counted.
pub(crate) async fn read_capped_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    cap: usize,
) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if total == 0 {
                None
            } else if total > cap {
                Some(Line::TooLong(total))
            } else {
                Some(Line::Text(buf))
            });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        total += take;
        if total <= cap + 1 {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf = Vec::new();
        }
        reader.consume(take);
        if done {
            return Ok(Some(if total > cap + 1 {
                Line::TooLong(total - 1)
            } else {
                Line::Text(buf)
            }));
        }
    }
}

fn classify(bytes: &[u8], shared: &Shared) -> Option<Incoming> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return None;
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
        return Some(Incoming::Garbage(truncate(text, 2000)));
    };
    let method = obj
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = obj.remove("id");
    match (method, id) {
        (Some(method), Some(id)) => Some(Incoming::Request {
            id,
            method,
            params: obj.remove("params").unwrap_or(Value::Null),
        }),
        (Some(method), None) => {
            let mut params = obj.remove("params").unwrap_or(Value::Null);
            // codex app-server puts `emittedAtMs` beside params; keep it with the event.
            if let (Some(at), Value::Object(p)) = (obj.remove("emittedAtMs"), &mut params) {
                p.entry("emittedAtMs").or_insert(at);
            }
            Some(Incoming::Notification { method, params })
        }
        (None, Some(id)) => {
            let Some(n) = id
                .as_u64()
                .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
            else {
                return Some(Incoming::Garbage(truncate(text, 2000)));
            };
            let sender = lock(&shared.pending).remove(&n);
            let Some(sender) = sender else {
                return Some(Incoming::Garbage(format!(
                    "reply to unknown request id {n}"
                )));
            };
            let reply = if let Some(err) = obj.get("error") {
                Err((
                    err.get("code").and_then(Value::as_i64).unwrap_or(0),
                    err.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_string(),
                    err.get("data").cloned(),
                ))
            } else {
                Ok(obj.remove("result").unwrap_or(Value::Null))
            };
            let _ = sender.send(reply);
            None
        }
        (None, None) => Some(Incoming::Garbage(truncate(text, 2000))),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn matches_replies_and_forwards_notifications() {
        let (client_side, server_side) = duplex(1 << 16);
        let (cr, cw) = tokio::io::split(client_side);
        let (sr, mut sw) = tokio::io::split(server_side);
        let mut conn = Connection::new(cr, cw, 16);
        let server = tokio::spawn(async move {
            let mut lines = BufReader::new(sr).lines();
            let line = lines.next_line().await.unwrap().unwrap();
            let req: Value = serde_json::from_str(&line).unwrap();
            let id = req["id"].clone();
            sw.write_all(b"not json at all\n").await.unwrap();
            sw.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"progress\",\"params\":{\"n\":1}}\n")
                .await
                .unwrap();
            let reply = json!({"jsonrpc":"2.0","id":id,"result":{"ok":true}});
            sw.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        });
        let mut seen = Vec::new();
        let v = conn
            .request("ping", json!({}), Duration::from_secs(5), |m: Incoming| {
                seen.push(m)
            })
            .await
            .unwrap();
        assert_eq!(v, json!({"ok": true}));
        assert!(matches!(seen[0], Incoming::Garbage(_)));
        assert!(matches!(&seen[1], Incoming::Notification { method, .. } if method == "progress"));
        server.await.unwrap();
    }

    /// A child's stdin pipe is closed for real (its shutdown alone leaves it open): `cat`
    /// sees EOF and exits, and writing afterwards is an error.
    #[tokio::test]
    async fn close_input_gives_the_peer_eof() {
        let mut child = tokio::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let conn = Connection::new(stdout, stdin, 16);
        conn.close_input().await;
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        assert!(status.is_ok_and(|s| s.is_ok_and(|s| s.success())));
        assert!(matches!(
            conn.write_message(json!({"method": "late"})).await,
            Err(JsonRpcError::Write(_))
        ));
    }

    #[tokio::test]
    async fn closed_output_fails_pending_requests() {
        let (client_side, server_side) = duplex(1 << 16);
        let (cr, cw) = tokio::io::split(client_side);
        let mut conn = Connection::new(cr, cw, 16);
        drop(server_side);
        let err = conn
            .request("x", json!({}), Duration::from_secs(5), |_m: Incoming| {})
            .await
            .unwrap_err();
        assert!(
            matches!(err, JsonRpcError::Closed(_) | JsonRpcError::Write(_)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn over_long_lines_are_skipped() {
        let data = format!("{}\n{{\"method\":\"m\"}}\n", "x".repeat(100));
        let mut r = BufReader::new(data.as_bytes());
        assert!(matches!(
            read_capped_line(&mut r, 10).await.unwrap(),
            Some(Line::TooLong(100))
        ));
        assert!(matches!(
            read_capped_line(&mut r, 100).await.unwrap(),
            Some(Line::Text(_))
        ));
        assert!(read_capped_line(&mut r, 10).await.unwrap().is_none());
    }
}
