//! A live reading of what an agent's session has spent, for budgets that stop a turn while it
//! runs: the session sets it at each usage report, the runner watches it.

use std::sync::Arc;

use tokio::sync::watch;

use super::Usage;

/// The session's total so far (the agent's own running total, not per turn).
#[derive(Clone, Debug)]
pub struct Meter(Arc<watch::Sender<Usage>>);

impl Default for Meter {
    fn default() -> Self {
        Meter(Arc::new(watch::channel(Usage::default()).0))
    }
}

impl Meter {
    pub fn set(&self, total: Usage) {
        self.0.send_replace(total);
    }

    pub fn get(&self) -> Usage {
        self.0.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Usage> {
        self.0.subscribe()
    }
}
