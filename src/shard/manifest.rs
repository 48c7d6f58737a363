//! The manifest of a shard's hand-over: which run, which shard, on which base and host, and
//! every task of the shard with its outcome.

use serde::{Deserialize, Serialize};

use super::engine::Shard;
use crate::report::{TaskReport, TaskStatus};

pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format (1).
    pub format: u32,
    pub run_id: String,
    pub shard: Shard,
    /// The base commit every task of the shard started from (a full SHA).
    pub base: String,
    pub host: String,
    /// When the hand-over was written (ms since the Unix epoch).
    pub created_ms: u64,
    /// The engine's attempt of this shard (`FANOUT_SHARD_ATTEMPT`, `GITHUB_RUN_ATTEMPT`,
    /// `SLURM_RESTART_COUNT`; 0 when none): a later attempt supersedes an earlier one.
    pub attempt: u64,
    pub tasks: Vec<ManifestTask>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestTask {
    pub id: String,
    pub status: TaskStatus,
    /// The verified task commit (under `refs/fanout/<run>/shard-<K>/task/<id>`), when the
    /// task passed its gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Manifest {
    /// Which of two hand-overs of one shard wins: the higher attempt, then the later one.
    pub fn order_key(&self) -> (u64, u64, String) {
        (self.attempt, self.created_ms, self.host.clone())
    }
}

/// The task's verified commit, when its shard verified it: it passed its gates, whatever the
/// shard's own integration made of it (the combine integrates again).
pub fn verified_commit(t: &TaskReport) -> Option<String> {
    let verified = matches!(
        t.status,
        TaskStatus::Merged | TaskStatus::Conflict | TaskStatus::IntegrationFailed
    );
    t.commit.clone().filter(|_| verified)
}

/// This machine's name as the report shows it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The engine's attempt number of this shard (0 when the environment names none).
pub fn attempt_from_env(env: &dyn Fn(&str) -> Option<String>) -> u64 {
    [
        "FANOUT_SHARD_ATTEMPT",
        "GITHUB_RUN_ATTEMPT",
        "SLURM_RESTART_COUNT",
    ]
    .iter()
    .find_map(|n| env(n).and_then(|v| v.trim().parse().ok()))
    .unwrap_or(0)
}
