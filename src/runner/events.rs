//! The runner's side of the event stream: [`Events`], the sink every part of a run sends its
//! [`EventKind`]s to, and the dispatch task — the only place that turns them into [`Event`]s and
//! hands them to the outputs. Also the two outputs every run has: `state.json` (with its
//! journal) and `report.json` plus the run's own event file `run-events.jsonl`, from which
//! `fanout report` renders HTML and JUnit again later.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::event::{Event, EventKind, Output, OutputError, Reporter};
use crate::state::{RunState, StateFile};

use super::stop::Stop;
use crate::phase::TaskPhase;

/// How often live outputs may redraw and the state snapshot may catch up.
const TICK: Duration = Duration::from_millis(200);

/// Where a run's parts send their events (cheap to clone; sending never blocks).
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<EventKind>,
}

impl Events {
    /// A sink and the receiving end the dispatcher drains.
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<EventKind>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Events { tx }, rx)
    }

    pub fn emit(&self, kind: EventKind) {
        let _ = self.tx.send(kind);
    }

    /// A sender that does not keep the dispatcher running (for long-lived helpers such as the
    /// egress proxy, which outlive no run but would otherwise hold its end open).
    pub fn weak(&self) -> WeakEvents {
        WeakEvents {
            tx: self.tx.downgrade(),
        }
    }

    pub fn warn(&self, task: Option<&str>, message: &str) {
        self.emit(EventKind::Warning {
            task: task.map(str::to_string),
            message: message.to_string(),
        });
    }
}

/// See [`Events::weak`]: events sent once the run's dispatcher is gone are dropped.
#[derive(Clone)]
pub struct WeakEvents {
    tx: mpsc::WeakUnboundedSender<EventKind>,
}

impl WeakEvents {
    pub fn warn(&self, task: Option<&str>, message: &str) {
        if let Some(tx) = self.tx.upgrade() {
            Events { tx }.warn(task, message);
        }
    }

    pub fn emit(&self, kind: EventKind) {
        if let Some(tx) = self.tx.upgrade() {
            let _ = tx.send(kind);
        }
    }
}

/// Drains `rx` until every sender is gone, handing each event to every output; an output that
/// fails stops the run (at its next safe point) while the others keep reporting.
pub(crate) async fn dispatch(
    run: String,
    mut rx: mpsc::UnboundedReceiver<EventKind>,
    mut reporter: Reporter,
    stop: Stop,
) -> Vec<OutputError> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            kind = rx.recv() => {
                let Some(kind) = kind else { break };
                let last = matches!(kind, EventKind::RunEnded { .. });
                let event = Event::new(&run, kind);
                for failed in reporter.emit(&event) {
                    stop.request(&format!("output {failed} failed"));
                    let warning = Event::new(&run, EventKind::Warning {
                        task: None,
                        message: format!("output {failed}; stopping the run"),
                    });
                    reporter.emit(&warning);
                }
                if last {
                    // The signal listener keeps a sender for ever: the last event ends the loop.
                    break;
                }
            }
            _ = tick.tick() => {
                for failed in reporter.tick() {
                    stop.request(&format!("output {failed} failed"));
                }
            }
        }
    }
    reporter
        .failures()
        .iter()
        .map(|f| OutputError::new(&f.output, &f.message))
        .collect()
}

/// `state.json` and its journal, from the events: `running` when a task starts, its resumable
/// state when it ends, the final statuses when the run ends.
pub(crate) struct StateOutput {
    file: StateFile,
    state: RunState,
}

impl StateOutput {
    pub(crate) fn new(file: StateFile, state: RunState) -> StateOutput {
        StateOutput { file, state }
    }
}

impl Output for StateOutput {
    fn name(&self) -> String {
        "state.json".into()
    }

    fn event(&mut self, e: &Event) -> Result<(), OutputError> {
        match &e.kind {
            // Only a task still pending: its end may have been recorded already.
            EventKind::TaskStarted { task, .. }
                if self
                    .state
                    .tasks
                    .get(task)
                    .is_some_and(|t| t.status == "pending") =>
            {
                self.state.set_task(task, "running", None, None);
                self.file.record(&self.state, task);
            }
            EventKind::Phase { task, phase } => {
                self.state.set_phase(task, *phase);
                self.file.note();
            }
            EventKind::Merged { task, .. } => {
                self.state.set_phase(task, TaskPhase::Integrated);
                self.file.note();
            }
            EventKind::Conflict { task, .. } => {
                self.state.set_phase(task, TaskPhase::Conflicted);
                self.file.note();
            }
            EventKind::Ejected { task, .. } => {
                self.state.set_phase(task, TaskPhase::Ejected);
                self.file.note();
            }
            // Accounting (issue 23): what a task spent, for `fanout status` during the run.
            EventKind::AttemptEnded {
                task,
                usage: Some(usage),
                ..
            } => {
                self.state.set_usage(task, usage, false);
                self.file.note();
            }
            EventKind::Repaired { task, .. } => {
                self.state.set_phase(task, TaskPhase::Integrated);
                self.file.note();
            }
            EventKind::TaskEnded {
                task,
                report,
                resume_state,
            } => {
                let commit = report.commit.clone();
                self.state
                    .set_task(task, resume_state, commit, report.error.clone());
                if let Some(u) = &report.usage {
                    self.state.set_usage(task, u, true);
                }
                self.file.record(&self.state, task);
            }
            EventKind::RunEnded { report } => {
                let verified: Vec<bool> = report
                    .tasks
                    .iter()
                    .map(|t| {
                        self.state
                            .tasks
                            .get(&t.id)
                            .is_some_and(|s| s.status == "verified")
                    })
                    .collect();
                self.state.finish(report, &verified);
                self.file.write(&self.state);
            }
            _ => {}
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), OutputError> {
        self.file.flush_if_due(&self.state);
        Ok(())
    }
}

/// `report.json` (and `--report PATH`) when the run ends, and every event in
/// `run-events.jsonl` as it happens.
pub(crate) struct RunFilesOutput {
    report_paths: Vec<PathBuf>,
    events: Option<std::io::BufWriter<std::fs::File>>,
}

impl RunFilesOutput {
    pub(crate) fn new(run_dir: &std::path::Path, extra_report: Option<PathBuf>) -> RunFilesOutput {
        let events = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join(RUN_EVENTS))
            .ok()
            .map(std::io::BufWriter::new);
        let mut report_paths = vec![crate::run_dir::RunDir::new(run_dir).report()];
        report_paths.extend(extra_report);
        RunFilesOutput {
            report_paths,
            events,
        }
    }
}

/// The run's own event stream, beside its report.
pub const RUN_EVENTS: &str = "run-events.jsonl";

impl Output for RunFilesOutput {
    fn name(&self) -> String {
        "report.json".into()
    }

    fn event(&mut self, e: &Event) -> Result<(), OutputError> {
        if let Some(f) = &mut self.events {
            // Best effort: the run's report does not depend on this copy of the stream.
            // Streamed, not made into one string first: the run's last event holds every
            // task's report (15 MB of JSON at 10 000 tasks).
            {
                let mut line = std::io::BufWriter::with_capacity(
                    8 * 1024,
                    crate::redact::RedactingWriter::new(&mut *f),
                );
                if serde_json::to_writer(&mut line, e).is_ok() {
                    if let Ok(w) = line.into_inner() {
                        let _ = w.finish();
                    }
                }
            }
            // Whatever was written ends its line: one bad line at most, never two joined.
            let _ = f.write_all(b"\n");
        }
        if let EventKind::RunEnded { report } = &e.kind {
            if let Some(f) = &mut self.events {
                let _ = f.flush();
            }
            for path in &self.report_paths {
                crate::report::write_json_atomic(path, report)
                    .map_err(|err| OutputError::new(&path.display().to_string(), err))?;
            }
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), OutputError> {
        if let Some(f) = &mut self.events {
            let _ = f.flush();
        }
        Ok(())
    }
}
