//! The tools of `fanout mcp`: their schemas, argument checks and handlers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::runs::{view, Registry};
use super::wire::{BadParams, Out};

/// Longest `fanout_wait`: clients time tool calls out (Codex's `tool_timeout_sec`).
pub const MAX_WAIT_SECS: u64 = 300;
/// Default `fanout_wait`: well inside the 60 s request timeout of the TypeScript SDK and
/// Claude Code, even on a loaded machine.
pub const DEFAULT_WAIT_SECS: u64 = 45;
/// Longest silence of a `fanout_wait` that asked for progress (clients that reset their
/// timeout on progress need a sign of life; the issue asks for at most 10 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Default diff size handed back; the rest is cut with a note.
const DEFAULT_DIFF_BYTES: u64 = 64 * 1024;
pub(super) const MAX_DIFF_BYTES: u64 = 1024 * 1024;

/// Arguments as the client sent them, checked against the tool's schema.
struct Args<'a> {
    map: &'a Map<String, Value>,
    tool: &'a str,
}

impl<'a> Args<'a> {
    fn new(
        tool: &'a str,
        v: &'a Value,
        allowed: &[&str],
        required: &[&str],
    ) -> Result<Args<'a>, BadParams> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let map = match v {
            Value::Null => EMPTY.get_or_init(Map::new),
            Value::Object(m) => m,
            _ => return Err(BadParams(format!("{tool}: arguments must be an object"))),
        };
        let unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(BadParams(format!(
                "{tool}: unknown argument(s) {}; known: {}",
                unknown.join(", "),
                allowed.join(", ")
            )));
        }
        let missing: Vec<&&str> = required.iter().filter(|k| !map.contains_key(**k)).collect();
        if !missing.is_empty() {
            return Err(BadParams(format!(
                "{tool}: missing required argument(s) {}",
                missing.iter().map(|s| **s).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Args { map, tool })
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, BadParams> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(BadParams(format!(
                "{}: `{key}` must be a string",
                self.tool
            ))),
        }
    }

    fn u64(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, BadParams> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(BadParams(format!(
                    "{}: `{key}` must be an integer from {min} to {max}",
                    self.tool
                ))),
            },
        }
    }

    fn f64(&self, key: &str, max: f64) -> Result<Option<f64>, BadParams> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) if (0.0..=max).contains(&n) => Ok(Some(n)),
                _ => Err(BadParams(format!(
                    "{}: `{key}` must be a number from 0 to {max}",
                    self.tool
                ))),
            },
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, BadParams> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(BadParams(format!(
                "{}: `{key}` must be a boolean",
                self.tool
            ))),
        }
    }

    fn of_type(
        &self,
        key: &str,
        want: &str,
        ok: fn(&Value) -> bool,
    ) -> Result<Option<&'a Value>, BadParams> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) if ok(v) => Ok(Some(v)),
            Some(_) => Err(BadParams(format!("{}: `{key}` must be {want}", self.tool))),
        }
    }
}

/// A tool result: `structuredContent` plus the same as text.
fn result(structured: Value, is_error: bool) -> Value {
    let text = serde_json::to_string_pretty(&structured).unwrap_or_default();
    json!({
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
        "isError": is_error,
    })
}

fn tool_error(message: impl Into<String>) -> Value {
    result(json!({"error": message.into()}), true)
}

/// Handles `tools/call`.
pub fn call(
    params: &Value,
    registry: &Registry,
    out: &Out,
    cancelled: &AtomicBool,
) -> Result<Value, BadParams> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(BadParams("tools/call needs a string `name`".into()));
    };
    let args = params.get("arguments").unwrap_or(&Value::Null);
    let progress_token = params
        .get("_meta")
        .and_then(|m| m.get("progressToken"))
        .filter(|t| t.is_string() || t.is_i64() || t.is_u64())
        .cloned();
    match name {
        "fanout_start" => start(args, registry),
        "fanout_wait" => wait(args, registry, out, progress_token, cancelled),
        "fanout_status" => status(args, registry),
        "fanout_diff" => diff(args, registry),
        "fanout_cancel" => cancel(args, registry),
        "fanout_merge" => merge(args, registry),
        other => Err(BadParams(format!(
            "unknown tool {other:?}; tools: fanout_start, fanout_wait, fanout_status, fanout_diff, fanout_cancel, fanout_merge"
        ))),
    }
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn repo_arg(args: &Args, registry: &Registry) -> Result<Option<PathBuf>, BadParams> {
    Ok(args
        .str("repo")?
        .map(|r| resolve_path(&registry.options.cwd, r)))
}

fn start(v: &Value, registry: &Registry) -> Result<Value, BadParams> {
    let args = Args::new(
        "fanout_start",
        v,
        &[
            "repo",
            "tasks",
            "agents",
            "defaults",
            "base",
            "verifier",
            "tasks_file",
            "jobs",
            "workspace",
            "readback",
        ],
        &[],
    )?;
    let repo = repo_arg(&args, registry)?.unwrap_or_else(|| registry.options.cwd.clone());
    let tasks = args.of_type("tasks", "an array", Value::is_array)?;
    let agents = args.of_type("agents", "an object", Value::is_object)?;
    let defaults = args.of_type("defaults", "an object", Value::is_object)?;
    let verifier = args.of_type("verifier", "an object", Value::is_object)?;
    let base = args.str("base")?;
    let tasks_file = args.str("tasks_file")?;
    let jobs = args.u64("jobs", 1, 256)?;
    let readback = match args.str("readback")? {
        None | Some("auto") => crate::plan::ReadbackMode::Auto,
        Some("require") => crate::plan::ReadbackMode::Require,
        Some("off") => crate::plan::ReadbackMode::Off,
        Some(other) => {
            return Err(BadParams(format!(
                "fanout_start: `readback` must be auto, require or off, not {other:?}"
            )))
        }
    };
    let workspace = match args.str("workspace")? {
        None => None,
        Some(w) => Some(crate::plan::WorkspaceChoice::parse(w).ok_or_else(|| {
            BadParams(format!(
                "fanout_start: `workspace` must be auto, overlay or worktree, not {w:?}"
            ))
        })?),
    };
    let inline = tasks.is_some() || agents.is_some() || defaults.is_some() || verifier.is_some();
    // The plan reads a file: inline fields become one, which the run saves as its own input
    // (`inputs/tasks.json`), so `fanout resume` continues it like any other run.
    let mut _temp = None;
    let (file, label) = match (tasks_file, inline) {
        (Some(_), true) => return Ok(tool_error(
            "give either tasks_file or inline tasks (tasks, agents, defaults, verifier), not both",
        )),
        (None, false) => return Ok(tool_error("give `tasks` (inline) or `tasks_file`")),
        (Some(f), false) => {
            let p = resolve_path(&registry.options.cwd, f);
            let label = p.display().to_string();
            (p, label)
        }
        (None, true) => {
            let mut doc = Map::new();
            doc.insert("version".into(), json!(1));
            for (k, v) in [
                ("base", base.map(|b| json!(b))),
                ("defaults", defaults.cloned()),
                ("agents", agents.cloned()),
                ("verifier", verifier.cloned()),
                ("tasks", tasks.cloned()),
            ] {
                if let Some(v) = v {
                    doc.insert(k.into(), v);
                }
            }
            let text = match serde_json::to_string_pretty(&Value::Object(doc)) {
                Ok(t) => t,
                Err(e) => return Ok(tool_error(format!("cannot encode the task list: {e}"))),
            };
            let temp = match tempfile::Builder::new()
                .prefix("fanout-mcp-tasks-")
                .suffix(".json")
                .tempfile()
            {
                Ok(t) => t,
                Err(e) => {
                    return Ok(tool_error(format!(
                        "cannot write the task list to a temporary file: {e}"
                    )))
                }
            };
            if let Err(e) = std::fs::write(temp.path(), text) {
                return Ok(tool_error(format!(
                    "cannot write the task list to a temporary file: {e}"
                )));
            }
            let p = temp.path().to_path_buf();
            _temp = Some(temp);
            (p, "the task list".to_string())
        }
    };
    let run_as = match crate::sandbox::user::resolve(None) {
        Ok(r) => r,
        Err(e) => return Ok(tool_error(e.to_string())),
    };
    let options = crate::plan::RunOptions {
        repo: repo.clone(),
        tasks_file: file,
        jobs: jobs.map(|j| j as usize).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
        // With a task file, `base` overrides its base like `fanout run --base`.
        base: if inline {
            None
        } else {
            base.map(str::to_string)
        },
        agent: None,
        keep_worktrees: false,
        report: None,
        sandbox: crate::plan::SandboxOptions {
            run_as,
            ..Default::default()
        },
        readback,
        self_exe: registry.options.self_exe.clone(),
        max_file_bytes: None,
        max_change_bytes: None,
        allow_unfiltered: false,
        min_free_mb: crate::preflight::DEFAULT_MIN_FREE_MB,
        on_conflict: None,
        overlap: None,
        squash: false,
        workspace: workspace.unwrap_or_default(),
        workspace_source: workspace.map(|_| "fanout_start's workspace".into()),
    };
    let mut plan = match crate::plan::Plan::build(options) {
        Ok(p) => p,
        Err(crate::plan::PlanError::TaskFile(crate::taskfile::TaskFileError::Invalid {
            problems,
            ..
        })) => {
            let list: Vec<Value> = problems
                .iter()
                .map(|p| json!({"location": p.location, "message": p.message}))
                .collect();
            let text = std::iter::once(format!(
                "{label}: {} problem(s); nothing was run",
                problems.len()
            ))
            .chain(problems.iter().map(|p| format!("  {p}")))
            .collect::<Vec<_>>()
            .join("\n");
            return Ok(json!({
                "content": [{"type": "text", "text": text}],
                "structuredContent": {"error": format!("{label}: {} problem(s); nothing was run", problems.len()), "problems": list},
                "isError": true,
            }));
        }
        // Only the path: the file may be anything (a credentials file given by mistake).
        Err(crate::plan::PlanError::TaskFile(crate::taskfile::TaskFileError::NotATaskFile {
            ..
        })) => return Ok(tool_error(format!("{label} is not a fanout task file"))),
        Err(e) => {
            return Ok(tool_error(format!(
                "nothing was run: {}",
                crate::error_chain(&e)
            )))
        }
    };
    // Run ids tell the second and a 16-bit suffix; two starts in one second must not meet.
    while plan.run_dir.exists() {
        plan.run_id = crate::ids::RunId::new();
        plan.run_dir = plan.repo.runs_dir().join(plan.run_id.as_str());
    }
    let run_id = plan.run_id.to_string();
    let summary = json!({
        "run_id": run_id,
        "repo": plan.repo.workdir.display().to_string(),
        "run_dir": plan.run_dir.display().to_string(),
        "integration_branch": crate::ids::merged_branch(&plan.run_id),
        "tasks": plan.tasks.len(),
        "jobs": plan.options.jobs,
        "next": "call fanout_wait with this run_id",
    });
    if let Err(e) = registry.start(plan) {
        return Ok(tool_error(format!("cannot start the run's thread: {e}")));
    }
    Ok(result(summary, false))
}

fn wait(
    v: &Value,
    registry: &Registry,
    out: &Out,
    token: Option<Value>,
    cancelled: &AtomicBool,
) -> Result<Value, BadParams> {
    let args = Args::new(
        "fanout_wait",
        v,
        &["run_id", "repo", "timeout_secs"],
        &["run_id"],
    )?;
    let run_id = args.str("run_id")?.unwrap_or_default();
    let repo = repo_arg(&args, registry)?;
    let timeout = args
        .f64("timeout_secs", MAX_WAIT_SECS as f64)?
        .unwrap_or(DEFAULT_WAIT_SECS as f64);
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let mut progress = token.map(|t| Progress::new(t, out.clone()));
    let mut seen = 0;
    loop {
        let located = match locate_run(registry, repo.as_deref(), run_id) {
            Ok(l) => l,
            Err(e) => return Ok(tool_error(e)),
        };
        let mut view = view(&located);
        let ended = view["ended"] == true;
        if let Some(p) = &mut progress {
            p.report(&view, registry.latest_event(&located.run_id));
        }
        let now = Instant::now();
        // A cancelled call is not answered; returning ends its thread.
        if ended || now >= deadline || cancelled.load(Ordering::SeqCst) {
            if !ended {
                view["next"] = json!(format!(
                    "the run goes on: call fanout_wait again (timeout_secs up to {MAX_WAIT_SECS}; default {DEFAULT_WAIT_SECS})"
                ));
            }
            return Ok(result(view, false));
        }
        // Woken by the run's event stream (a task ended, the run ended); the bound keeps a
        // late state write, a cancel and the next progress beat from being missed.
        seen = registry.wait_change(
            &located.run_id,
            seen,
            (deadline - now).min(Duration::from_secs(1)),
        );
    }
}

/// Progress of one `fanout_wait`: sent when a task ended, and every few seconds anyway.
/// `progress` must grow with every notification: it is the tasks ended, plus a fraction that
/// grows (and stays below the next task) while nothing ends.
struct Progress {
    token: Value,
    out: Out,
    done: Option<u64>,
    beats: i32,
    last: Instant,
}

impl Progress {
    fn new(token: Value, out: Out) -> Progress {
        Progress {
            token,
            out,
            done: None,
            beats: 0,
            last: Instant::now(),
        }
    }

    fn report(&mut self, view: &Value, latest: Option<String>) {
        let done = view["tasks_ended"].as_u64().unwrap_or(0);
        let total = view["tasks_total"].as_u64().unwrap_or(0);
        let value = if self.done.is_none_or(|d| done > d) {
            self.beats = 0;
            json!(done)
        } else if self.last.elapsed() >= PROGRESS_EVERY {
            self.beats += 1;
            json!(done as f64 + 1.0 - 0.5f64.powi(self.beats))
        } else {
            return;
        };
        self.done = Some(self.done.unwrap_or(0).max(done));
        self.last = Instant::now();
        let mut message = format!("{done}/{total} task(s) ended");
        for (status, n) in view["counts"].as_object().into_iter().flatten() {
            message.push_str(&format!(", {n} {status}"));
        }
        if let Some(latest) = latest {
            message.push_str(&format!("; latest: {latest}"));
        }
        self.out.progress(&self.token, value, total, &message);
    }
}

/// `last` → the newest run of the repository; anything else as given.
/// The run `run` (or the newest, for `last`) of `repo`, or of this server.
fn locate_run(
    registry: &Registry,
    repo: Option<&Path>,
    run: &str,
) -> Result<super::runs::Located, String> {
    registry.locate(repo, &resolve_last(repo, registry, run))
}

fn resolve_last(repo: Option<&Path>, registry: &Registry, run: &str) -> String {
    if run != crate::lookup::LAST_RUN {
        return run.to_string();
    }
    let repo = repo.unwrap_or(&registry.options.cwd);
    crate::lookup::resolve_run(repo, run)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| run.to_string())
}

fn status(v: &Value, registry: &Registry) -> Result<Value, BadParams> {
    let args = Args::new("fanout_status", v, &["repo", "run_id"], &[])?;
    let repo = repo_arg(&args, registry)?;
    if let Some(run_id) = args.str("run_id")? {
        return Ok(match locate_run(registry, repo.as_deref(), run_id) {
            Ok(l) => result(view(&l), false),
            Err(e) => tool_error(e),
        });
    }
    let repo_path = repo.unwrap_or_else(|| registry.options.cwd.clone());
    let user_repo = match crate::git::repo::UserRepo::open(&repo_path) {
        Ok(r) => r,
        Err(e) => return Ok(tool_error(crate::error_chain(&e))),
    };
    let mut runs = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(user_repo.runs_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in names {
        if let Ok(l) = registry.locate(Some(&user_repo.workdir), &name) {
            let v = view(&l);
            runs.push(json!({"run_id": name, "status": v["status"], "ended": v["ended"], "counts": v["counts"]}));
        }
    }
    Ok(result(
        json!({"repo": user_repo.workdir.display().to_string(), "runs": runs}),
        false,
    ))
}

fn diff(v: &Value, registry: &Registry) -> Result<Value, BadParams> {
    let args = Args::new(
        "fanout_diff",
        v,
        &["repo", "run_id", "task", "stat", "max_bytes"],
        &["run_id", "task"],
    )?;
    let repo = repo_arg(&args, registry)?;
    let run_id = args.str("run_id")?.unwrap_or_default();
    let task = args.str("task")?.unwrap_or_default();
    let stat = args.bool("stat")?.unwrap_or(false);
    let max = args
        .u64("max_bytes", 1, MAX_DIFF_BYTES)?
        .unwrap_or(DEFAULT_DIFF_BYTES) as usize;
    // A run of this server may live in another repository than the server's directory.
    let repo = match (&repo, registry.locate(None, run_id)) {
        (None, Ok(l)) => l.repo,
        (Some(r), _) => r.clone(),
        (None, Err(_)) => registry.options.cwd.clone(),
    };
    let (text, task_status) = match crate::patch_view::task_diff_text(&repo, run_id, task, stat) {
        Ok(t) => t,
        Err(e) => return Ok(tool_error(format!("{e:#}"))),
    };
    let bytes = text.len();
    let truncated = bytes > max;
    let mut shown = text;
    if truncated {
        let mut cut = max;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push_str(&format!(
            "\n[fanout: diff cut after {cut} of {bytes} bytes; ask with a larger max_bytes or stat: true]\n"
        ));
    }
    let note = if bytes == 0 {
        Some(match task_status.as_deref() {
            Some("no_changes") => "the task changed nothing".to_string(),
            Some(s) => format!("no change to show (status {s})"),
            None => "no change to show".to_string(),
        })
    } else {
        None
    };
    Ok(result(
        json!({"run_id": run_id, "task": task, "status": task_status, "diff": shown,
               "bytes": bytes, "truncated": truncated, "note": note}),
        false,
    ))
}

fn cancel(v: &Value, registry: &Registry) -> Result<Value, BadParams> {
    let args = Args::new("fanout_cancel", v, &["repo", "run_id"], &["run_id"])?;
    let repo = repo_arg(&args, registry)?;
    let run_id = args.str("run_id")?.unwrap_or_default();
    let run_id = &resolve_last(repo.as_deref(), registry, run_id);
    Ok(match registry.cancel(run_id) {
        Some(true) => result(json!({"run_id": run_id, "cancel_requested": true, "ended": false,
            "next": "call fanout_wait: the run ends `interrupted` and `fanout resume` continues it"}), false),
        Some(false) => result(json!({"run_id": run_id, "cancel_requested": false, "ended": true}), false),
        None => tool_error(format!(
            "run {run_id} was not started by this server; stop it where it runs (Ctrl-C or SIGTERM to its fanout process)"
        )),
    })
}

fn merge(v: &Value, registry: &Registry) -> Result<Value, BadParams> {
    let args = Args::new(
        "fanout_merge",
        v,
        &["repo", "run_id", "into"],
        &["run_id", "into"],
    )?;
    let repo = repo_arg(&args, registry)?;
    let run_id = args.str("run_id")?.unwrap_or_default();
    let into = args.str("into")?.unwrap_or_default();
    let located = match locate_run(registry, repo.as_deref(), run_id) {
        Ok(l) => l,
        Err(e) => return Ok(tool_error(e)),
    };
    let view = view(&located);
    if view["ended"] != true {
        return Ok(tool_error(format!(
            "run {} has not ended yet; fanout_wait first",
            located.run_id
        )));
    }
    let Some(from) = view["integration_branch"].as_str() else {
        return Ok(tool_error(format!(
            "run {} ({}) has nothing to merge: no task reached its integration branch{}",
            located.run_id,
            view["status"].as_str().unwrap_or("ended"),
            if view["resumable"] == true {
                "; `fanout resume` continues it"
            } else {
                ""
            }
        )));
    };
    match crate::git::merge_into::merge_into(&located.repo, from, into) {
        Ok(m) => Ok(result(
            json!({"run_id": located.run_id, "from": from, "into": into, "outcome": m.outcome, "commit": m.commit}),
            false,
        )),
        // The error's own words; git's text underneath says nothing more to a model.
        Err(e) => Ok(tool_error(e.to_string())),
    }
}
