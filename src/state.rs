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
                    (
                        t.id().to_string(),
                        TaskState {
                            status: "pending".into(),
                            commit: None,
                        },
                    )
                })
                .collect(),
            order: plan.tasks.iter().map(|t| t.id().to_string()).collect(),
        }
    }

    pub fn set_task(&mut self, id: &str, status: &str, commit: Option<String>) {
        self.tasks.insert(
            id.to_string(),
            TaskState {
                status: status.into(),
                commit,
            },
        );
    }

    pub fn finish(&mut self, report: &RunReport) {
        self.status = if report.interrupted {
            "interrupted"
        } else {
            "finished"
        }
        .into();
        for t in &report.tasks {
            self.set_task(&t.id, t.status.as_str(), t.commit.clone());
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
