/*!
Stop requests: SIGINT, SIGTERM and SIGHUP, listened to for the whole run — from before the
verifier starts until the final state is written — on a task of the run's runtime, so they are
honoured while the main thread integrates or cleans up too (tokio keeps its handler installed
once registered: a run that stopped listening would swallow them).

The first signal asks every phase to stop at its next safe point and leave a resumable state;
the second asks to stop now (pipelines are dropped, worktree removal is skipped). Neither exits
the process: the run ends with `interrupted` and the caller decides the exit code.
*/

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Shared view of the stop requests.
#[derive(Clone)]
pub struct Stop {
    /// 0 = none, 1 = stop at the next safe point, 2 = stop now.
    level: Arc<AtomicU8>,
    reason: Arc<Mutex<Option<String>>>,
    cancel_tx: Arc<watch::Sender<bool>>,
    now_tx: Arc<watch::Sender<bool>>,
    cancel: watch::Receiver<bool>,
    now: watch::Receiver<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    /// A stop handle nobody has pulled yet (a caller such as the MCP server keeps a clone to
    /// cancel the run with [`Stop::request`]).
    pub fn new() -> Stop {
        let (cancel_tx, cancel) = watch::channel(false);
        let (now_tx, now) = watch::channel(false);
        Stop {
            level: Arc::new(AtomicU8::new(0)),
            reason: Arc::new(Mutex::new(None)),
            cancel_tx: Arc::new(cancel_tx),
            now_tx: Arc::new(now_tx),
            cancel,
            now,
        }
    }

    /// Asks the run to stop: the first request at the next safe point (resumable), a second
    /// one at once. Returns the level now in force (1 or 2).
    pub fn request(&self, why: &str) -> u8 {
        let before = self.level.fetch_add(1, Ordering::SeqCst);
        if before == 0 {
            if let Ok(mut r) = self.reason.lock() {
                *r = Some(why.to_string());
            }
            let _ = self.cancel_tx.send(true);
            1
        } else {
            self.level.store(2, Ordering::SeqCst);
            let _ = self.cancel_tx.send(true);
            let _ = self.now_tx.send(true);
            2
        }
    }

    /// Starts listening for SIGINT, SIGTERM and SIGHUP on `runtime`; the listener lives as
    /// long as the runtime. `warn` tells the user what a signal did.
    pub(crate) fn listen(
        &self,
        runtime: &tokio::runtime::Runtime,
        warn: impl Fn(&str) + Send + 'static,
    ) {
        // Registered here, synchronously, so no signal is missed before the task first runs.
        let mut signals = runtime.block_on(async { Signals::new() });
        let s = self.clone();
        runtime.spawn(async move {
            loop {
                let sig = signals.next().await;
                if s.request(sig) == 1 {
                    warn(&format!(
                        "{sig}: stopping at the next safe point and writing the report (again to stop at once)"
                    ));
                } else {
                    warn(&format!("{sig} again: stopping now (agents are still stopped)"));
                }
            }
        });
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.level.load(Ordering::SeqCst) > 0
    }

    /// Whether a second signal asked to stop at once.
    pub fn now(&self) -> bool {
        self.level.load(Ordering::SeqCst) > 1
    }

    /// The signal that stopped the run, in words.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    /// Turns true at the first stop request.
    pub(crate) fn cancel_rx(&self) -> watch::Receiver<bool> {
        self.cancel.clone()
    }

    /// Turns true at the second stop request.
    pub(crate) fn now_rx(&self) -> watch::Receiver<bool> {
        self.now.clone()
    }
}

/// Ctrl-C, SIGTERM and SIGHUP as one stream.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    async fn next(&mut self) -> &'static str {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => "interrupted (SIGINT)",
            _ = recv(&mut self.term) => "terminated (SIGTERM)",
            _ = recv(&mut self.hup) => "hang-up (SIGHUP)",
        }
    }
}
