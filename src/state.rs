/*!
The run's state: which run, which process, and how far each task got.

It is kept as a snapshot, `state.json` (written by temp file + fsync + rename), plus a journal,
`state.jsonl`, of the task transitions since that snapshot (one JSON line each, appended).
Rewriting the whole snapshot at every transition would cost O(n) per task and O(n²) for a run;
appending a line is O(1), and the snapshot is rewritten only now and then (at most about once a
second, and less often when it is big) and at the end. Readers fold the journal into the
snapshot, so a run killed at any moment (even with kill -9) leaves a state that `fanout status`,
`fanout clean` and `fanout resume` read as it was at the last transition. Each snapshot names a
journal generation and each journal line carries its generation: lines of an older generation
(a crash between writing a snapshot and emptying the journal) are ignored.
*/

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::report::RunReport;
use crate::report::TaskStatus;

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
    /// The phase it reached last (a task cut off by kill -9 says where).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::phase::TaskPhase>,
    // Accounting (issue 23):
    /// What it spent so far (its attempts as they end; its whole report's figure once it ended),
    /// for `fanout status` while the run goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::usage::Usage>,
}

impl RunState {
    /// The state of a run that starts now: `tasks` in task-file order, with the outcomes a
    /// resume carries over.
    pub fn start(
        run_id: &crate::ids::RunId,
        base: git2::Oid,
        tasks: &[String],
        priors: &BTreeMap<String, Prior>,
    ) -> RunState {
        RunState {
            run_id: run_id.to_string(),
            pid: std::process::id(),
            status: "running".into(),
            base: base.to_string(),
            integration_branch: crate::ids::merged_branch(run_id),
            started_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            tasks: tasks
                .iter()
                .map(|id| {
                    let (status, commit) = match priors.get(id) {
                        Some(Prior::Verified(oid)) => ("verified", Some(oid.to_string())),
                        Some(Prior::Ended { status, commit, .. }) => {
                            (status.as_str(), commit.clone())
                        }
                        None => ("pending", None),
                    };
                    (
                        id.clone(),
                        TaskState {
                            status: status.into(),
                            commit,
                            error: None,
                            phase: None,
                            usage: None,
                        },
                    )
                })
                .collect(),
            order: tasks.to_vec(),
        }
    }

    pub fn set_task(
        &mut self,
        id: &str,
        status: &str,
        commit: Option<String>,
        error: Option<String>,
    ) {
        let (phase, usage) = match self.tasks.get(id) {
            Some(t) => (t.phase, t.usage.clone()),
            None => (None, None),
        };
        self.tasks.insert(
            id.to_string(),
            TaskState {
                status: status.into(),
                commit,
                error,
                phase,
                usage,
            },
        );
    }

    /// Records what a task spent: `add` to its figure so far, or (`replace`) its whole figure.
    pub fn set_usage(&mut self, id: &str, usage: &crate::usage::Usage, replace: bool) {
        if let Some(t) = self.tasks.get_mut(id) {
            match replace {
                true => t.usage = Some(usage.clone()),
                false => crate::usage::Usage::add_to(&mut t.usage, Some(usage)),
            }
        }
    }

    /// Records the phase a task entered.
    pub fn set_phase(&mut self, id: &str, phase: crate::phase::TaskPhase) {
        if let Some(t) = self.tasks.get_mut(id) {
            t.phase = Some(phase);
        }
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
            let status = state_status(t.status, was_verified, report.interrupted);
            self.set_task(&t.id, status, t.commit.clone(), t.error.clone());
        }
    }

    /// Whether the process that ran this is gone while the state still says running.
    pub fn is_orphaned(&self) -> bool {
        self.status == "running" && !PathBuf::from(format!("/proc/{}", self.pid)).exists()
    }
}

/// A task's result carried over from before the interruption.
#[derive(Clone, Debug, PartialEq)]
pub enum Prior {
    /// Verified; its commit waits for integration.
    Verified(git2::Oid),
    /// Ended without a commit to integrate.
    Ended {
        status: TaskStatus,
        commit: Option<String>,
        error: Option<String>,
    },
}

/// The state-file status of a finished task (`verified` while it waits for integration).
pub fn state_status(status: TaskStatus, verified: bool, interrupted: bool) -> &'static str {
    if verified {
        "verified"
    } else if status == TaskStatus::Interrupted
        || interrupted && matches!(status, TaskStatus::Failed | TaskStatus::Skipped)
    {
        "interrupted"
    } else {
        status.as_str()
    }
}

/// Writes a run's state: the snapshot and its journal.
pub struct StateFile {
    path: PathBuf,
    journal: Option<std::fs::File>,
    generation: u64,
    /// Transitions journaled since the last snapshot.
    dirty: bool,
    last_snapshot: std::time::Instant,
    /// How long the last snapshot took; snapshots are spaced to cost a small share of the run.
    snapshot_cost: std::time::Duration,
}

/// One journal line: a task's new state, tagged with the snapshot generation it follows.
#[derive(Serialize, Deserialize)]
struct JournalLine {
    #[serde(rename = "gen")]
    generation: u64,
    id: String,
    #[serde(flatten)]
    task: TaskState,
}

/// The generation a snapshot names (absent in snapshots written before the journal existed).
#[derive(Deserialize)]
struct SnapshotGeneration {
    #[serde(default)]
    journal_gen: Option<u64>,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(flatten)]
    state: &'a RunState,
    journal_gen: u64,
}

/// Snapshots are at least this far apart while transitions keep coming.
const MIN_SNAPSHOT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// ...and at least this many times the time the last one took (≤ 5 % of the run's time).
const SNAPSHOT_COST_FACTOR: u32 = 20;

/// The journal beside a snapshot path (`state.json` → `state.jsonl`).
pub fn journal_path(snapshot: &std::path::Path) -> PathBuf {
    snapshot.with_extension("jsonl")
}

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile {
            path,
            journal: None,
            generation: 0,
            dirty: false,
            last_snapshot: std::time::Instant::now(),
            snapshot_cost: std::time::Duration::ZERO,
        }
    }

    /// Writes a full snapshot and starts a new, empty journal generation.
    pub fn write(&mut self, state: &RunState) {
        let started = std::time::Instant::now();
        // Unique across processes, so a resumed run never mistakes the old journal for its own.
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            .max(self.generation + 1);
        let snapshot = Snapshot {
            state,
            journal_gen: generation,
        };
        // Best effort: a full disk must not turn finished work into a crash. If the snapshot
        // could not be written, the journal keeps the old generation and goes on growing.
        if crate::report::write_json_atomic(&self.path, &snapshot).is_err() {
            return;
        }
        self.generation = generation;
        self.journal = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(journal_path(&self.path))
            .ok();
        self.dirty = false;
        self.last_snapshot = std::time::Instant::now();
        self.snapshot_cost = started.elapsed();
    }

    /// Records one task's transition: appends it to the journal, and rewrites the snapshot
    /// when one is due. `state` must already hold the new task state.
    pub fn record(&mut self, state: &RunState, id: &str) {
        let Some(task) = state.tasks.get(id) else {
            return;
        };
        let line = JournalLine {
            generation: self.generation,
            id: id.to_string(),
            task: task.clone(),
        };
        let appended = match (&mut self.journal, serde_json::to_string(&line)) {
            (Some(f), Ok(text)) => {
                use std::io::Write;
                let mut text = crate::redact::redact(&text).into_owned();
                text.push('\n');
                // One write per line: a kill -9 cannot leave half of it (a torn line from a
                // full disk is skipped on read).
                f.write_all(text.as_bytes()).is_ok()
            }
            _ => false,
        };
        self.dirty = true;
        if !appended || self.snapshot_due() {
            self.write(state);
        }
    }

    /// A change that the next snapshot carries but that is not worth a journal line (a task's
    /// phase: several per task; after kill -9 the snapshot, at most about a second old, says
    /// where a task was).
    pub fn note(&mut self) {
        self.dirty = true;
    }

    fn snapshot_due(&self) -> bool {
        let gap = MIN_SNAPSHOT_INTERVAL.max(self.snapshot_cost * SNAPSHOT_COST_FACTOR);
        self.last_snapshot.elapsed() >= gap
    }

    /// Rewrites the snapshot if transitions were journaled since the last one and it is due
    /// (call it now and then, so that `state.json` alone is never far behind).
    pub fn flush_if_due(&mut self, state: &RunState) {
        if self.dirty && self.snapshot_due() {
            self.write(state);
        }
    }

    /// Reads the snapshot at `path` with its journal folded in.
    pub fn read(path: &std::path::Path) -> Option<RunState> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut state: RunState = serde_json::from_str(&text).ok()?;
        let generation = serde_json::from_str::<SnapshotGeneration>(&text)
            .ok()
            .and_then(|g| g.journal_gen);
        let Some(generation) = generation else {
            return Some(state);
        };
        let Ok(journal) = std::fs::read_to_string(journal_path(path)) else {
            return Some(state);
        };
        for line in journal.lines() {
            // Torn or foreign lines are skipped: the snapshot and the lines before stay valid.
            let Ok(entry) = serde_json::from_str::<JournalLine>(line) else {
                continue;
            };
            if entry.generation == generation {
                state.tasks.insert(entry.id, entry.task);
            }
        }
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumable_states_of_every_outcome() {
        // Verified work is kept whatever happened after it.
        assert_eq!(state_status(TaskStatus::Failed, true, true), "verified");
        assert_eq!(state_status(TaskStatus::Merged, true, false), "verified");
        // Cut off by a stop: run again on resume.
        assert_eq!(state_status(TaskStatus::Failed, false, true), "interrupted");
        assert_eq!(
            state_status(TaskStatus::Skipped, false, true),
            "interrupted"
        );
        // Real outcomes stay what they are.
        assert_eq!(
            state_status(TaskStatus::VerifyFailed, false, true),
            "verify_failed"
        );
        assert_eq!(state_status(TaskStatus::Failed, false, false), "failed");
        assert_eq!(
            state_status(TaskStatus::NoChanges, false, false),
            "no_changes"
        );
    }

    #[test]
    fn a_resumed_run_starts_from_its_priors_and_finishes_with_the_report() {
        let run = crate::ids::RunId::parse("20261202-070000-abcd").unwrap();
        let oid = git2::Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let mut priors = BTreeMap::new();
        priors.insert("a".to_string(), Prior::Verified(oid));
        priors.insert(
            "b".to_string(),
            Prior::Ended {
                status: TaskStatus::VerifyFailed,
                commit: None,
                error: None,
            },
        );
        let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut st = RunState::start(&run, oid, &ids, &priors);
        assert_eq!(st.tasks["a"].status, "verified");
        assert_eq!(st.tasks["b"].status, "verify_failed");
        assert_eq!(st.tasks["c"].status, "pending");
        assert_eq!(st.order, ids);
        let mut report = crate::report::RunReport {
            interrupted: true,
            ..Default::default()
        };
        for (id, status) in [
            ("a", TaskStatus::Merged),
            ("b", TaskStatus::VerifyFailed),
            ("c", TaskStatus::Failed),
        ] {
            let mut t = crate::report::TaskReport::new(id, "x");
            t.status = status;
            report.tasks.push(t);
        }
        st.finish(&report, &[true, false, false]);
        assert_eq!(st.status, "interrupted");
        assert_eq!(st.tasks["a"].status, "verified");
        assert_eq!(st.tasks["c"].status, "interrupted");
    }

    fn state(ids: &[&str]) -> RunState {
        RunState {
            run_id: "r".into(),
            pid: std::process::id(),
            status: "running".into(),
            base: "b".into(),
            integration_branch: "fanout/r/merged".into(),
            started_at_ms: 0,
            tasks: ids
                .iter()
                .map(|i| {
                    (
                        i.to_string(),
                        TaskState {
                            status: "pending".into(),
                            commit: None,
                            error: None,
                            phase: None,
                            usage: None,
                        },
                    )
                })
                .collect(),
            order: ids.iter().map(|i| i.to_string()).collect(),
        }
    }

    fn set(st: &mut RunState, id: &str, status: &str) {
        st.set_task(id, status, Some(format!("c-{id}")), None);
    }

    #[test]
    fn transitions_are_journaled_and_folded_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut file = StateFile::new(path.clone());
        let mut st = state(&["a", "b", "c"]);
        file.write(&st);
        set(&mut st, "a", "verified");
        file.record(&st, "a");
        set(&mut st, "b", "failed");
        file.record(&st, "b");
        // The snapshot alone is behind (no snapshot is due yet); the fold is not.
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["tasks"]["a"]["status"], "pending");
        let read = StateFile::read(&path).unwrap();
        assert_eq!(read.tasks["a"].status, "verified");
        assert_eq!(read.tasks["a"].commit.as_deref(), Some("c-a"));
        assert_eq!(read.tasks["b"].status, "failed");
        assert_eq!(read.tasks["c"].status, "pending");
        // A torn last line (the process died in the middle of it) is skipped.
        use std::io::Write;
        let mut j = std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(&path))
            .unwrap();
        j.write_all(b"{\"gen\":1,\"id\":\"c\",\"sta").unwrap();
        assert_eq!(StateFile::read(&path).unwrap().tasks["c"].status, "pending");
        // A snapshot folds everything in and empties the journal.
        file.write(&st);
        assert_eq!(std::fs::read(journal_path(&path)).unwrap(), b"");
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["tasks"]["a"]["status"], "verified");
    }

    #[test]
    fn lines_of_an_older_generation_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut file = StateFile::new(path.clone());
        let mut st = state(&["a"]);
        file.write(&st);
        set(&mut st, "a", "verified");
        file.record(&st, "a");
        let old_journal = std::fs::read(journal_path(&path)).unwrap();
        // The end of the run: a snapshot with the final status...
        set(&mut st, "a", "merged");
        file.write(&st);
        // ...and a crash before the journal was emptied: the old line must not win.
        std::fs::write(journal_path(&path), old_journal).unwrap();
        assert_eq!(StateFile::read(&path).unwrap().tasks["a"].status, "merged");
    }

    #[test]
    fn a_snapshot_without_journal_is_read_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let st = state(&["a"]);
        crate::report::write_json_atomic(&path, &st).unwrap();
        assert_eq!(StateFile::read(&path).unwrap().tasks["a"].status, "pending");
    }
}
