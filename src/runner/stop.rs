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

use super::Progress;

/// A way to ask a run to stop without a signal (`fanout mcp`'s `fanout_cancel`, a client that
/// went away): kept by the caller, given to [`super::execute_with`]. `request` acts like a
/// first signal: stop at the next safe point, leave a resumable run.
#[derive(Clone, Debug)]
pub struct StopHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for StopHandle {
    fn default() -> Self {
        StopHandle::new()
    }
}

impl StopHandle {
    pub fn new() -> StopHandle {
        StopHandle {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Asks the run to stop at its next safe point (before the run started: as soon as it does).
    pub fn request(&self) {
        self.tx.send_replace(true);
    }

    /// Whether a stop was requested through this handle.
    pub fn requested(&self) -> bool {
        *self.tx.borrow()
    }
}

/// Shared view of the stop requests.
#[derive(Clone)]
pub(crate) struct Stop {
    /// 0 = none, 1 = stop at the next safe point, 2 = stop now.
    level: Arc<AtomicU8>,
    reason: Arc<Mutex<Option<&'static str>>>,
    cancel: watch::Receiver<bool>,
    now: watch::Receiver<bool>,
}

impl Stop {
    /// Starts listening on `runtime`; the listener lives as long as the runtime.
    pub(crate) fn install(
        runtime: &tokio::runtime::Runtime,
        progress: Progress,
        handle: Option<StopHandle>,
    ) -> Stop {
        let (cancel_tx, cancel) = watch::channel(false);
        let (now_tx, now) = watch::channel(false);
        let stop = Stop {
            level: Arc::new(AtomicU8::new(0)),
            reason: Arc::new(Mutex::new(None)),
            cancel,
            now,
        };
        // Registered here, synchronously, so no signal is missed before the task first runs.
        let mut signals = runtime.block_on(async { Signals::new() });
        let mut asked = handle.map(|h| h.tx.subscribe());
        let s = stop.clone();
        runtime.spawn(async move {
            loop {
                let sig = tokio::select! {
                    sig = signals.next() => sig,
                    Some(()) = requested(&mut asked) => "cancelled (stop requested)",
                };
                let before = s.level.fetch_add(1, Ordering::SeqCst);
                if before == 0 {
                    if let Ok(mut r) = s.reason.lock() {
                        *r = Some(sig);
                    }
                    progress.warn(&format!(
                        "{sig}: stopping at the next safe point and writing the report (again to stop at once)"
                    ));
                    let _ = cancel_tx.send(true);
                } else {
                    s.level.store(2, Ordering::SeqCst);
                    progress.warn(&format!(
                        "{sig} again: stopping now (agents are still stopped)"
                    ));
                    let _ = cancel_tx.send(true);
                    let _ = now_tx.send(true);
                }
            }
        });
        stop
    }

    /// Whether a stop was asked for.
    pub(crate) fn requested(&self) -> bool {
        self.level.load(Ordering::SeqCst) > 0
    }

    /// Whether a second signal asked to stop at once.
    pub(crate) fn now(&self) -> bool {
        self.level.load(Ordering::SeqCst) > 1
    }

    /// The signal that stopped the run, in words.
    pub(crate) fn reason(&self) -> Option<&'static str> {
        self.reason.lock().ok().and_then(|r| *r)
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

/// Resolves once a [`StopHandle`] asked to stop (once only: after that, only signals count).
async fn requested(rx: &mut Option<watch::Receiver<bool>>) -> Option<()> {
    let r = rx.as_mut()?;
    let asked = r.wait_for(|v| *v).await.is_ok();
    *rx = None;
    asked.then_some(())
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
