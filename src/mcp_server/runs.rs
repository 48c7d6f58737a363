//! The runs a `fanout mcp` server started: each on its own thread (which builds the run's own
//! tokio runtime inside the library's `execute`), with a stop handle kept for cancel and
//! shutdown. Views of any run — this server's or not — are read from its folder on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::options::ServerOptions;
use super::wire::Out;
use crate::report::RunReport;
use crate::runner::Stop;
use crate::state::StateFile;

/// How a run of this server ended: its report, or why it could not go on.
type Outcome = Result<RunReport, String>;

pub(super) struct RunEntry {
    pub repo: PathBuf,
    pub run_dir: PathBuf,
    pub total: usize,
    pub stop: Stop,
    outcome: Arc<Mutex<Option<Outcome>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Bumped at every task end and at the run's end (from the run's event stream), so
    /// `fanout_wait` answers the moment something changed.
    changes: Arc<Changes>,
}

/// A counter of the run's event-stream transitions and a condition variable to wait on it,
/// and the latest event in words (for progress messages).
#[derive(Default)]
pub(super) struct Changes {
    count: Mutex<u64>,
    bumped: std::sync::Condvar,
    latest: Mutex<Option<String>>,
}

impl Changes {
    fn saw(&self, e: &crate::event::Event) {
        let text = match e.task() {
            Some(t) => format!("{} {t}", e.name()),
            None => e.name().to_string(),
        };
        *lock(&self.latest) = Some(text);
    }

    fn bump(&self) {
        *lock(&self.count) += 1;
        self.bumped.notify_all();
    }

    /// Waits until the count passes `seen` or `timeout` elapses; returns the count.
    fn wait_past(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let guard = lock(&self.count);
        let (guard, _) = self
            .bumped
            .wait_timeout_while(guard, timeout, |c| *c <= seen)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// The server's output of a run's event stream: it wakes waiting `fanout_wait` calls.
struct WakeWaiters(Arc<Changes>);

impl crate::event::Output for WakeWaiters {
    fn name(&self) -> String {
        "fanout_wait".into()
    }

    fn event(&mut self, e: &crate::event::Event) -> Result<(), crate::event::OutputError> {
        use crate::event::EventKind;
        // An agent's own events are many and say little on their own.
        if !matches!(e.kind, EventKind::AgentEvent { .. }) {
            self.0.saw(e);
        }
        if matches!(
            e.kind,
            EventKind::TaskEnded { .. }
                | EventKind::Merged { .. }
                | EventKind::Conflict { .. }
                | EventKind::RunEnded { .. }
        ) {
            self.0.bump();
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Registry {
    pub(super) options: ServerOptions,
    runs: Arc<Mutex<BTreeMap<String, RunEntry>>>,
    /// Told when the list of resources (one per run) changed.
    out: Out,
}

const LIST_CHANGED: &str = "notifications/resources/list_changed";

/// At most this many runs of the repository are listed as resources (newest first).
const MAX_LISTED_RUNS: usize = 50;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a run lives and what this server knows of it.
pub(super) struct Located {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub repo: PathBuf,
    /// Some for runs of this server: the in-memory outcome once the run thread returned.
    pub outcome: Option<Option<Outcome>>,
    pub total: Option<usize>,
}

impl Registry {
    pub fn new(options: ServerOptions, out: Out) -> Registry {
        Registry {
            options,
            runs: Arc::new(Mutex::new(BTreeMap::new())),
            out,
        }
    }

    /// Starts `plan` on a thread of its own; returns once the thread runs.
    pub(super) fn start(&self, plan: crate::plan::Plan) -> Result<(), std::io::Error> {
        let run_id = plan.run_id.to_string();
        let entry_outcome = Arc::new(Mutex::new(None));
        let stop = Stop::new();
        let repo = plan.repo.workdir.clone();
        let run_dir = plan.run_dir.clone();
        let total = plan.tasks.len();
        let changes = Arc::new(Changes::default());
        let thread = {
            let (outcome, stop) = (entry_outcome.clone(), stop.clone());
            let (wake, on_exit) = (changes.clone(), changes.clone());
            let out = self.out.clone();
            std::thread::Builder::new()
                .name(format!("run-{run_id}"))
                .spawn(move || {
                    // Quiet: stdout is the protocol; warnings go to stderr, which clients log.
                    // No terminal, no signal handling of its own: the server owns both.
                    let io = crate::runner::RunIo {
                        outputs: vec![Box::new(WakeWaiters(wake))],
                        stop,
                        signals: false,
                        mode: "run",
                    };
                    let r = crate::runner::execute(plan, io);
                    *lock(&outcome) = Some(r.map_err(|e| crate::error_chain(&e)));
                    on_exit.bump();
                    // The resource now reads report.json: clients that cache the list re-read it.
                    out.notify(LIST_CHANGED);
                })?
        };
        lock(&self.runs).insert(
            run_id,
            RunEntry {
                repo,
                run_dir,
                total,
                stop,
                outcome: entry_outcome,
                thread: Some(thread),
                changes,
            },
        );
        self.out.notify(LIST_CHANGED);
        Ok(())
    }

    /// The latest event of one of this server's runs, in words (`task_ended t3`).
    pub(super) fn latest_event(&self, run_id: &str) -> Option<String> {
        let changes = lock(&self.runs).get(run_id).map(|e| e.changes.clone())?;
        let latest = lock(&changes.latest).clone();
        latest
    }

    /// Waits (at most `timeout`) for the next transition of one of this server's runs after
    /// `seen`; for other runs it just sleeps a little (their state is read from disk). Returns
    /// the transitions seen so far.
    pub(super) fn wait_change(&self, run_id: &str, seen: u64, timeout: std::time::Duration) -> u64 {
        let changes = lock(&self.runs).get(run_id).map(|e| e.changes.clone());
        match changes {
            Some(c) => c.wait_past(seen, timeout),
            None => {
                std::thread::sleep(timeout.min(std::time::Duration::from_millis(250)));
                seen
            }
        }
    }

    /// Asks a run of this server to stop; `None` when it is not one of them, `Some(false)`
    /// when it had ended already.
    pub(super) fn cancel(&self, run_id: &str) -> Option<bool> {
        let runs = lock(&self.runs);
        let e = runs.get(run_id)?;
        if lock(&e.outcome).is_some() {
            return Some(false);
        }
        e.stop.request("cancelled (stop requested)");
        Some(true)
    }

    /// Finds a run: one of this server's, else `run_id` in `repo`'s run folder.
    pub(super) fn locate(&self, repo: Option<&Path>, run_id: &str) -> Result<Located, String> {
        let run = crate::ids::RunId::parse(run_id)?;
        if let Some(e) = lock(&self.runs).get(run.as_str()) {
            return Ok(Located {
                run_id: run.to_string(),
                run_dir: e.run_dir.clone(),
                repo: e.repo.clone(),
                outcome: Some(lock(&e.outcome).clone()),
                total: Some(e.total),
            });
        }
        let repo_path = repo.unwrap_or(&self.options.cwd);
        let user_repo =
            crate::git::repo::UserRepo::open(repo_path).map_err(|e| crate::error_chain(&e))?;
        let run_dir = user_repo.runs_dir().join(run.as_str());
        if !crate::run_dir::RunDir::new(&run_dir).state().is_file() {
            return Err(format!(
                "no run {run} in {} (fanout_status lists the runs)",
                user_repo.runs_dir().display()
            ));
        }
        Ok(Located {
            run_id: run.to_string(),
            run_dir,
            repo: user_repo.workdir.clone(),
            outcome: None,
            total: None,
        })
    }

    /// Resources: the report of every run this server started, then the newest runs of the
    /// server's repository (a client that lists once, when it connects, sees earlier runs).
    pub(super) fn resources(&self) -> Vec<Value> {
        let mut ids: Vec<String> = lock(&self.runs).keys().rev().cloned().collect();
        for id in self.runs_on_disk() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.into_iter()
            .map(|id| {
                json!({
                    "uri": format!("fanout://runs/{id}/report"),
                    "name": format!("run {id} report"),
                    "mimeType": "application/json",
                })
            })
            .collect()
    }

    /// The newest runs in the run folder of the server's repository, newest first.
    fn runs_on_disk(&self) -> Vec<String> {
        let Ok(repo) = crate::git::repo::UserRepo::open(&self.options.cwd) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = std::fs::read_dir(repo.runs_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| crate::ids::RunId::parse(n).is_ok())
                    .filter(|n| {
                        crate::run_dir::RunDir::new(repo.runs_dir().join(n))
                            .state()
                            .is_file()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(MAX_LISTED_RUNS);
        ids
    }

    /// `fanout://runs/<run_id>/report`: report.json once the run ended, else its view now.
    pub(super) fn read_resource(&self, uri: &str) -> Option<String> {
        let id = uri
            .strip_prefix("fanout://runs/")?
            .strip_suffix("/report")?;
        let located = self.locate(None, id).ok()?;
        let view = view(&located);
        if view["ended"] == true {
            let report = std::fs::read(crate::run_dir::RunDir::new(&located.run_dir).report())
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            if let Some(mut report) = report {
                in_view_words(&mut report, &view);
                return serde_json::to_string_pretty(&report).ok();
            }
        }
        serde_json::to_string_pretty(&view).ok()
    }

    /// Stops every run still going and waits until each ended (they stay resumable).
    pub(super) fn shutdown(&self) {
        let threads: Vec<std::thread::JoinHandle<()>> = {
            let mut runs = lock(&self.runs);
            for e in runs.values() {
                if lock(&e.outcome).is_none() {
                    e.stop.request("cancelled (stop requested)");
                }
            }
            runs.values_mut().filter_map(|e| e.thread.take()).collect()
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Task statuses that mean the task is still to come or going on.
fn task_going(status: &str) -> bool {
    matches!(status, "pending" | "running")
}

/// The run as it stands: `ended`, `status`, the integration branch and commit, and per task
/// `id`, `status`, `files`, `insertions`, `deletions`, `error`; plus `tasks_total`/`tasks_ended`.
pub(super) fn view(run: &Located) -> Value {
    let state = StateFile::read(&crate::run_dir::RunDir::new(&run.run_dir).state());
    // This server's runs have ended when their thread returned; others when their state says
    // so, or their process is gone.
    let (ended, report, error) = match &run.outcome {
        Some(Some(Ok(r))) => (true, Some(r.clone()), None),
        Some(Some(Err(e))) => (true, None, Some(e.clone())),
        Some(None) => (false, None, None),
        None => {
            let ended = state
                .as_ref()
                .is_some_and(|s| s.status != "running" || s.is_orphaned());
            let report = if ended {
                std::fs::read(crate::run_dir::RunDir::new(&run.run_dir).report())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<RunReport>(&b).ok())
            } else {
                None
            };
            (ended, report, None)
        }
    };
    let status = match (&report, &state, &error) {
        (_, _, Some(_)) => "failed".to_string(),
        (Some(r), _, _) if r.interrupted => "interrupted".into(),
        (Some(_), _, _) => "finished".into(),
        (None, Some(s), _) if s.is_orphaned() => "interrupted".into(),
        (None, Some(s), _) => s.status.clone(),
        (None, None, _) => "starting".into(),
    };
    let mut tasks = Vec::new();
    let mut ended_count = 0u64;
    if let Some(r) = &report {
        for t in &r.tasks {
            ended_count += 1;
            // The words of the state file and `fanout status`: a task cut off is `interrupted`.
            let status = crate::state::state_status(t.status, false, r.interrupted);
            tasks.push(json!({
                "id": t.id, "status": status, "files": t.files,
                "insertions": t.insertions, "deletions": t.deletions, "error": t.error,
            }));
        }
    } else if let Some(s) = &state {
        let order = if s.order.is_empty() {
            s.tasks.keys().cloned().collect()
        } else {
            s.order.clone()
        };
        for id in order {
            if let Some(t) = s.tasks.get(&id) {
                if !task_going(&t.status) {
                    ended_count += 1;
                }
                tasks.push(json!({
                    "id": id, "status": t.status, "files": [], "insertions": 0,
                    "deletions": 0, "error": t.error,
                }));
            }
        }
    }
    let total = run
        .total
        .map(|t| t as u64)
        .unwrap_or(tasks.len() as u64)
        .max(tasks.len() as u64);
    let mut counts = BTreeMap::<String, u64>::new();
    for t in &tasks {
        *counts
            .entry(t["status"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    json!({
        "run_id": run.run_id,
        "repo": run.repo.display().to_string(),
        "status": status,
        "ended": ended,
        "integration_branch": integration_branch(run),
        "integration_commit": report.as_ref()
            .map(|r| r.integration_commit.clone())
            .filter(|c| !c.is_empty()),
        "tasks_total": total,
        "tasks_ended": ended_count,
        "counts": counts,
        "tasks": tasks,
        "error": error,
        "resumable": ended && status == "interrupted",
    })
}

/// The run's integration branch when it exists: a run stopped before anything merged has none.
fn integration_branch(run: &Located) -> Option<String> {
    let id = crate::ids::RunId::parse(&run.run_id).ok()?;
    let name = crate::ids::merged_branch(&id);
    let repo = git2::Repository::open(&run.repo).ok()?;
    repo.find_branch(&name, git2::BranchType::Local).ok()?;
    Some(name)
}

/// report.json in the words of the view (and of `fanout status`): tasks a stop cut off are
/// `interrupted`, and no integration branch is named that does not exist.
fn in_view_words(report: &mut Value, view: &Value) {
    if report["interrupted"] == true {
        let mut counts = BTreeMap::<String, u64>::new();
        for t in report["tasks"].as_array_mut().into_iter().flatten() {
            if matches!(t["status"].as_str(), Some("failed" | "skipped")) {
                t["status"] = json!("interrupted");
            }
            *counts
                .entry(t["status"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        report["counts"] = json!(counts);
    }
    if view["integration_branch"].is_null() {
        report["integration_branch"] = Value::Null;
    }
}
