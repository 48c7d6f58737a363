//! What one client connection negotiated, and its requests in flight (for
//! `notifications/cancelled`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// The protocol revision that has JSON-RPC batches (2025-06-18 removed them again).
const BATCH_REVISION: &str = "2025-03-26";

#[derive(Clone, Default)]
pub struct Session {
    protocol: Arc<Mutex<Option<String>>>,
    calls: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Requests are told apart by their id as JSON text (`7` and `"7"` are two ids).
fn key(id: &Value) -> String {
    id.to_string()
}

impl Session {
    pub fn set_protocol(&self, version: &str) {
        *lock(&self.protocol) = Some(version.to_string());
    }

    /// Whether the negotiated revision takes JSON-RPC batches.
    pub fn batches_allowed(&self) -> bool {
        lock(&self.protocol).as_deref() == Some(BATCH_REVISION)
    }

    /// Registers a request that runs on a thread of its own; its flag is set when the client
    /// cancels it.
    pub fn begin(&self, id: &Value) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        lock(&self.calls).insert(key(id), flag.clone());
        flag
    }

    pub fn end(&self, id: &Value) {
        lock(&self.calls).remove(&key(id));
    }

    /// `notifications/cancelled`: flags the request; unknown or finished ones are ignored,
    /// as the specification asks.
    pub fn cancel(&self, id: &Value) {
        if let Some(flag) = lock(&self.calls).get(&key(id)) {
            flag.store(true, Ordering::SeqCst);
        }
    }
}
