//! Progress lines on stderr while a run goes on (the final table goes to stdout).

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::plan::Plan;
use crate::report::{table::short, SandboxSummary, TaskReport, TaskStatus};

#[derive(Clone)]
pub struct Progress {
    quiet: bool,
    out: Arc<Mutex<()>>,
    /// Told the id of every task that got a slot, so state.json can say `running`.
    started: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            out: Arc::new(Mutex::new(())),
            started: None,
        }
    }

    /// The same display, also reporting task starts on `tx`.
    pub(crate) fn with_started(mut self, tx: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        self.started = Some(tx);
        self
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(std::io::stderr(), "{}", crate::redact::redact(text));
    }

    /// Warnings are printed even when quiet.
    pub fn warn(&self, text: &str) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            std::io::stderr(),
            "fanout: warning: {}",
            crate::redact::redact(text)
        );
    }

    /// The kind of workspace tasks get, on the run's first lines.
    pub fn workspace(&self, ws: &crate::report::WorkspaceSummary) {
        self.line(&format!("fanout: workspaces: {} — {}", ws.mode, ws.reason));
    }

    pub fn run_started(&self, plan: &Plan, sandbox: &SandboxSummary) {
        let sb = match (sandbox.mode.as_str(), sandbox.kernel_abi) {
            ("off", _) => "OFF".to_string(),
            (_, Some(abi)) => format!("landlock (kernel ABI {abi})"),
            (_, None) => {
                "landlock (not supported by this kernel: agents will not start)".to_string()
            }
        };
        // Root is said on the first line: what agents may do depends on it.
        let root = match &sandbox.agent_user {
            Some(who) => format!("; fanout runs as root: agents run as {who}, no capabilities"),
            None => String::new(),
        };
        self.line(&format!(
            "fanout: run {} — {} task(s) from {} ({}), {} at a time, sandbox {sb}{root}",
            plan.run_id,
            plan.tasks.len(),
            plan.base_rev,
            short(&plan.base.to_string()),
            plan.options.jobs
        ));
    }

    pub fn task_started(&self, id: &str) {
        if let Some(tx) = &self.started {
            let _ = tx.send(id.to_string());
        }
        self.line(&format!("  start  {id}"));
    }

    pub fn task_finished(&self, done: usize, total: usize, r: &TaskReport, ready: bool) {
        let status = match r.status {
            _ if ready => "verified".to_string(),
            TaskStatus::NoChanges => "no changes".to_string(),
            TaskStatus::Failed
            | TaskStatus::TimedOut
            | TaskStatus::VerifyFailed
            | TaskStatus::Skipped => r.status.as_str().to_string(),
            _ => r.status.as_str().to_string(),
        };
        let width = total.to_string().len();
        let mut line = format!(
            "  [{done:>width$}/{total}] {} {status}: {} file(s) +{} -{} in {:.1} s",
            r.id,
            r.files.len(),
            r.insertions,
            r.deletions,
            r.duration_ms as f64 / 1000.0
        );
        if r.queued_ms >= 100 {
            line.push_str(&format!(" (queued {:.1} s)", r.queued_ms as f64 / 1000.0));
        }
        if let Some(e) = &r.error {
            line.push_str(&format!(" — {}", e.lines().next().unwrap_or("")));
        }
        self.line(&line);
    }

    pub fn integrating(&self, ready: usize) {
        self.line(&format!(
            "fanout: integrating {ready} verified commit(s) onto the merged branch"
        ));
    }

    pub fn merged(&self, id: &str, status: TaskStatus) {
        if status != TaskStatus::Merged {
            self.line(&format!("  {id}: {}", status.as_str()));
        }
    }

    pub fn integrated(&self, commits: usize, elapsed: std::time::Duration) {
        self.line(&format!(
            "  integrated {commits} task commit(s) in {:.2} s",
            elapsed.as_secs_f64()
        ));
    }
}
