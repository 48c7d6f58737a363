/*!
The run's `state.json`: which run, which process, and how far each task got. Written by temp
file + fsync + rename at every task transition, so a run killed at any moment (even with
kill -9) leaves a consistent file that `fanout status` and `fanout clean` can read.
*/

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::report::RunReport;
use crate::resume::Prior;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    pub pid: u32,
    /// `running`, `finished` or `interrupted`.
    pub status: String,
    pub base: String,
    pub integration_branch: String,
    pub started_at_ms: u64,
    pub tasks: BTreeMap<String, TaskState>,
    #[serde(default)]
    pub order: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskState {
    pub status: String,
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunState {
    pub fn start(plan: &Plan) -> RunState {
        RunState {
            run_id: plan.run_id.to_string(),
            pid: std::process::id(),
            status: "running".into(),
            base: plan.base.to_string(),
            integration_branch: crate::ids::merged_branch(&plan.run_id),
            started_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            tasks: plan
                .tasks
                .iter()
                .map(|t| {
                    let (status, commit) = match plan.priors.get(t.id().as_str()) {
                        Some(Prior::Verified(oid)) => ("verified", Some(oid.to_string())),
                        Some(Prior::Ended { status, commit, .. }) => {
                            (status.as_str(), commit.clone())
                        }
                        None => ("pending", None),
                    };
                    (
                        t.id().to_string(),
                        TaskState {
                            status: status.into(),
                            commit,
                            error: None,
                        },
                    )
                })
                .collect(),
            order: plan.tasks.iter().map(|t| t.id().to_string()).collect(),
        }
    }

    pub fn set_task(
        &mut self,
        id: &str,
        status: &str,
        commit: Option<String>,
        error: Option<String>,
    ) {
        self.tasks.insert(
            id.to_string(),
            TaskState {
                status: status.into(),
                commit,
                error,
            },
        );
    }

    /// Records the end of the run. After an interruption, verified tasks stay `verified` and
    /// cut-off ones `interrupted`, so that `fanout resume` knows what to keep and what to redo.
    pub fn finish(&mut self, report: &RunReport, verified: &[bool]) {
        self.status = if report.interrupted {
            "interrupted"
        } else {
            "finished"
        }
        .into();
        for (i, t) in report.tasks.iter().enumerate() {
            let was_verified = report.interrupted && verified.get(i).copied().unwrap_or(false);
            let status = crate::resume::state_status(t.status, was_verified, report.interrupted);
            self.set_task(&t.id, status, t.commit.clone(), t.error.clone());
        }
    }

    /// Whether the process that ran this is gone while the state still says running.
    pub fn is_orphaned(&self) -> bool {
        self.status == "running" && !PathBuf::from(format!("/proc/{}", self.pid)).exists()
    }
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile { path }
    }

    pub fn write(&self, state: &RunState) {
        // Best effort: a full disk must not turn finished work into a crash.
        let _ = crate::report::write_json_atomic(&self.path, state);
    }

    pub fn read(path: &std::path::Path) -> Option<RunState> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }
}
