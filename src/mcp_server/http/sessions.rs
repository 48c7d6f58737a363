//! Sessions of the HTTP transport (`Mcp-Session-Id`) and their event streams, kept for a
//! while so that a client that lost a stream resumes it with `Last-Event-ID`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::mcp_server::session::Session;

/// Events kept per stream for resumption.
const KEPT_EVENTS: usize = 1000;
/// Streams of answered POSTs kept per session.
const KEPT_STREAMS: usize = 32;
/// Sessions kept at once; a new one beyond ends the one used longest ago (clients that exit
/// without DELETE leave theirs behind).
pub const MAX_SESSIONS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct LogState {
    /// The sequence number the next event gets (events start at 1).
    next: u64,
    events: VecDeque<(u64, String)>,
    closed: bool,
}

/// One stream's events, numbered, the newest kept.
#[derive(Default)]
pub struct StreamLog {
    state: Mutex<LogState>,
    grew: Condvar,
}

impl StreamLog {
    pub fn push(&self, data: String) -> u64 {
        let mut s = lock(&self.state);
        s.next = s.next.max(1);
        let seq = s.next;
        s.next += 1;
        s.events.push_back((seq, data));
        if s.events.len() > KEPT_EVENTS {
            s.events.pop_front();
        }
        self.grew.notify_all();
        seq
    }

    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.grew.notify_all();
    }

    /// The sequence number of the newest event (0: none yet).
    pub fn last(&self) -> u64 {
        lock(&self.state).next.saturating_sub(1)
    }

    /// Events after `after`, waiting up to `timeout` for one; and whether the stream ended.
    pub fn after(&self, after: u64, timeout: Duration) -> (Vec<(u64, String)>, bool) {
        let s = lock(&self.state);
        let (s, _) = self
            .grew
            .wait_timeout_while(s, timeout, |s| {
                !s.closed && s.events.back().is_none_or(|(n, _)| *n <= after)
            })
            .unwrap_or_else(|e| e.into_inner());
        let events = s
            .events
            .iter()
            .filter(|(n, _)| *n > after)
            .cloned()
            .collect();
        (events, s.closed)
    }
}

/// The POST streams of a session: the last number given, and the streams kept.
type Streams = (u64, VecDeque<(u64, Arc<StreamLog>)>);

/// One client session: the MCP session state, its standalone stream (GET; stream 0) and the
/// streams of its POSTs (1, 2, …).
pub struct HttpSession {
    pub mcp: Session,
    used: Mutex<std::time::Instant>,
    pub standalone: Arc<StreamLog>,
    streams: Mutex<Streams>,
}

impl HttpSession {
    /// A new POST stream and its number.
    pub fn new_stream(&self) -> (u64, Arc<StreamLog>) {
        let mut s = lock(&self.streams);
        s.0 += 1;
        let n = s.0;
        let log = Arc::new(StreamLog::default());
        s.1.push_back((n, log.clone()));
        if s.1.len() > KEPT_STREAMS {
            s.1.pop_front();
        }
        (n, log)
    }

    /// Stream `n` (0 is the standalone one), while it is kept.
    pub fn stream(&self, n: u64) -> Option<Arc<StreamLog>> {
        if n == 0 {
            return Some(self.standalone.clone());
        }
        lock(&self.streams)
            .1
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, l)| l.clone())
    }
}

/// Every session of the server, by id.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Arc<HttpSession>>>>);

impl Sessions {
    /// A new session with a fresh unguessable id.
    pub fn create(&self) -> (String, Arc<HttpSession>) {
        let mut map = lock(&self.0);
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| *lock(&s.used))
                .map(|(k, _)| k.clone());
            match oldest.and_then(|k| map.remove(&k)) {
                Some(s) => s.standalone.close(),
                None => break,
            }
        }
        let id = new_id();
        let s = Arc::new(HttpSession {
            mcp: Session::default(),
            used: Mutex::new(std::time::Instant::now()),
            standalone: Arc::new(StreamLog::default()),
            streams: Mutex::new((0, VecDeque::new())),
        });
        map.insert(id.clone(), s.clone());
        (id, s)
    }

    pub fn get(&self, id: &str) -> Option<Arc<HttpSession>> {
        let s = lock(&self.0).get(id).cloned()?;
        *lock(&s.used) = std::time::Instant::now();
        Some(s)
    }

    /// Ends a session; its standalone stream ends too.
    pub fn remove(&self, id: &str) -> bool {
        match lock(&self.0).remove(id) {
            Some(s) => {
                s.standalone.close();
                true
            }
            None => false,
        }
    }

    /// A server-initiated message (resource list changes) to every session's standalone stream.
    pub fn broadcast(&self, data: &str) {
        for s in lock(&self.0).values() {
            s.standalone.push(data.to_string());
        }
    }
}

/// 128 random bits in hex, from the kernel.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // Never reached on Linux; still unique, if guessable.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = t.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_replay_after_an_event_id_and_end() {
        let log = StreamLog::default();
        assert_eq!(log.push("a".into()), 1);
        assert_eq!(log.push("b".into()), 2);
        let (events, closed) = log.after(1, Duration::from_millis(10));
        assert_eq!(events, vec![(2, "b".to_string())]);
        assert!(!closed);
        log.close();
        let (events, closed) = log.after(2, Duration::from_secs(5));
        assert!(events.is_empty() && closed);
        let sessions = Sessions::default();
        let (id, s) = sessions.create();
        // Full: the session used longest ago makes room.
        let others: Vec<String> = (1..MAX_SESSIONS).map(|_| sessions.create().0).collect();
        assert!(sessions.get(&id).is_some());
        let (_newest, _) = sessions.create();
        assert!(sessions.get(&others[0]).is_none() && sessions.get(&id).is_some());
        assert_eq!(id.len(), 32);
        let (n, _) = s.new_stream();
        assert!(s.stream(n).is_some() && s.stream(0).is_some() && s.stream(99).is_none());
        sessions.broadcast("x");
        assert_eq!(s.standalone.last(), 1);
        assert!(sessions.remove(&id) && sessions.get(&id).is_none());
    }
}
