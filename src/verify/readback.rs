/*!
Read-back through a verifier MCP server (by default Claude Code's `claude mcp serve`, tool `Read`).

One verifier process serves the whole run (one connection, calls serialized). For every added,
modified, renamed-to or copied-to file of a task's diff fanout calls `Read` with the file's
absolute path in the worktree and compares what the verifier sees with the committed blob;
deleted (and renamed-from) paths must not be readable. See docs/verify.md for what exactly is
compared.

Measured on `claude mcp serve` 2.1.332:
- the answer is one text block holding JSON
  `{"type":"text","file":{"filePath","content","numLines","startLine","totalLines"}}`; older
  versions answered `cat -n`-style lines (`     1\tline` or `     1→line`): both are accepted;
- `content` is the file with a UTF-8 BOM removed, CRLF turned into LF, invalid UTF-8 replaced
  by U+FFFD; a lone CR and NUL bytes are kept; the trailing newline is kept;
- lines are the pieces between `\n` (`"a\n"` has 2 lines, the last one empty); `offset` is
  1-based (0 behaves like 1), a page is its lines joined with `\n`;
- a read without `offset`/`limit` fails for files over 256 KiB ("exceeds maximum allowed
  size"); below that it has no 2000-line cut but silently stops after about 85 000
  characters, setting `file.truncatedByTokenCap: true` (even in the middle of a line);
- a read with `offset`/`limit` is never cut: it fails when the range exceeds 25 000 "tokens"
  (characters / 4, i.e. 100 000 characters), so a line longer than that cannot be read at all;
- some extensions are refused as binary (`.dat`, …), image extensions must hold images;
- errors (missing file, directory, too large) are results with `isError: true`.
*/

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::git::collect::Collected;
use crate::jsonrpc::{AsyncIncomingHandler, Connection, Incoming, JsonRpcError};
use crate::plan::{Plan, ReadbackMode};
use crate::process::{AgentProcess, SpawnSpec};
use crate::report::{GateResult, ReadbackReport, VerifierSummary};
use crate::runner::Progress;
use crate::sandbox::{NetPolicy, Policy, ReadAccess};
use crate::taskfile::{AgentProfile, Protocol};

/// Files up to this size are read in one call without `offset`/`limit` (whole reads are cut
/// at about 85 000 characters).
pub const WHOLE_READ_MAX_BYTES: usize = 64 * 1024;
/// Pages stay under this many bytes (UTF-8 bytes ≥ the characters the verifier counts; a page
/// may hold 100 000).
pub const PAGE_MAX_BYTES: usize = 80_000;
/// Pages stay under this many lines (older verifiers cut any read at 2000 lines).
pub const PAGE_MAX_LINES: usize = 2000;
/// Restarts of a dead or hung verifier per run; after that read-back fails closed.
const MAX_RESTARTS: u32 = 3;
/// Upper bound of one `Read` call (the profile's `tool_timeout_sec` when it is lower).
const READ_TIMEOUT_CAP_SECS: f64 = 60.0;
const STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("verifier program {0:?} not found")]
    NotFound(String),
    #[error("cannot create {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the verifier: {0}")]
    Spawn(String),
    #[error("the verifier offers no tool {tool:?} (it offers: {offered})")]
    NoTool { tool: String, offered: String },
    #[error("the verifier failed: {0}")]
    Rpc(#[from] JsonRpcError),
    #[error("the verifier is unavailable: {0}")]
    Broken(String),
}

struct Live {
    proc: AgentProcess,
    conn: Connection,
}

/// One verifier connection shared by all tasks of a run.
pub struct Verifier {
    profile: AgentProfile,
    spec: SpawnSpec,
    live: Option<Live>,
    broken: Option<String>,
    summary: VerifierSummary,
}

/// What one `Read` call answered.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// File text; `total_lines` only in the JSON shape; `truncated` when the verifier says it
    /// cut the answer.
    Text {
        content: String,
        total_lines: Option<usize>,
        numbered: bool,
        truncated: bool,
    },
    /// A JSON answer of another type (image, notebook, pdf, …).
    Other(String),
    /// `isError` (or a JSON-RPC error): not readable, with the verifier's message.
    Error(String),
    /// Text in neither known shape.
    Unrecognized(String),
}

impl Verifier {
    async fn start(profile: AgentProfile, spec: SpawnSpec) -> Result<Verifier, VerifierError> {
        let mut v = Verifier {
            summary: VerifierSummary {
                command: spec.program.clone(),
                args: spec.args.clone(),
                tool: profile.tool.clone(),
                stderr_log: spec.stderr_log.display().to_string(),
                ..VerifierSummary::default()
            },
            profile,
            spec,
            live: None,
            broken: None,
        };
        v.connect().await?;
        Ok(v)
    }

    /// Facts for the report.
    pub fn summary(&self) -> VerifierSummary {
        self.summary.clone()
    }

    async fn connect(&mut self) -> Result<(), VerifierError> {
        let mut proc = AgentProcess::spawn(&self.spec)
            .map_err(|e| VerifierError::Spawn(crate::error_chain(&e)))?;
        let (Some(stdout), Some(stdin)) = (proc.stdout.take(), proc.stdin.take()) else {
            proc.terminate(STOP_GRACE).await;
            return Err(VerifierError::Spawn("stdio was not piped".into()));
        };
        let mut conn = Connection::new(stdout, stdin, 64);
        let deadline =
            Instant::now() + Duration::from_secs_f64(self.profile.startup_timeout_sec.max(1.0));
        match handshake(&mut conn, &self.profile.tool, deadline).await {
            Ok((name, version)) => {
                self.summary.server = name;
                self.summary.version = version;
                self.summary.pid = Some(proc.pid);
                self.live = Some(Live { proc, conn });
                Ok(())
            }
            Err(e) => {
                conn.close_input().await;
                proc.terminate(STOP_GRACE).await;
                let tail = proc.stderr_tail().await;
                Err(match e {
                    VerifierError::Rpc(JsonRpcError::Closed(why)) if !tail.is_empty() => {
                        VerifierError::Spawn(format!(
                            "it exited during startup ({why}): {}",
                            crate::jsonrpc::truncate(&tail, 500)
                        ))
                    }
                    other => other,
                })
            }
        }
    }

    fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.profile.tool_timeout_sec.min(READ_TIMEOUT_CAP_SECS))
    }

    /// One `Read` call; restarts a dead or hung verifier and retries the call once.
    async fn read(&mut self, args: Value) -> Result<Answer, VerifierError> {
        let mut retried = false;
        loop {
            if let Some(why) = &self.broken {
                return Err(VerifierError::Broken(why.clone()));
            }
            if self.live.is_none() {
                if self.summary.restarts >= MAX_RESTARTS {
                    let why = format!("it stopped working {} times", MAX_RESTARTS + 1);
                    self.broken = Some(why.clone());
                    return Err(VerifierError::Broken(why));
                }
                self.summary.restarts += 1;
                if let Err(e) = self.connect().await {
                    let why = format!("restart failed: {e}");
                    self.broken = Some(why.clone());
                    return Err(VerifierError::Broken(why));
                }
            }
            let timeout = self.read_timeout();
            let tool = self.profile.tool.clone();
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            self.summary.calls += 1;
            let result = live
                .conn
                .request(
                    "tools/call",
                    json!({"name": tool, "arguments": args}),
                    timeout,
                    ServerRequests,
                )
                .await;
            match result {
                Ok(v) => return Ok(parse_answer(&v)),
                Err(JsonRpcError::Remote { message, code, .. }) => {
                    return Ok(Answer::Error(format!("{message} (JSON-RPC error {code})")))
                }
                Err(e) => {
                    // Dead, closed or hung: stop it; the next call starts a fresh one.
                    if let Some(mut live) = self.live.take() {
                        live.proc.terminate(STOP_GRACE).await;
                    }
                    if retried {
                        return Err(VerifierError::Rpc(e));
                    }
                    retried = true;
                }
            }
        }
    }

    /// MCP stdio shutdown: close stdin, wait a little, then stop the process tree.
    pub async fn shutdown(&mut self) {
        if let Some(mut live) = self.live.take() {
            live.conn.close_input().await;
            if live
                .proc
                .wait_until(Instant::now() + Duration::from_millis(1500))
                .await
                .is_none()
            {
                live.proc.terminate(STOP_GRACE).await;
            } else {
                live.proc.terminate(Duration::ZERO).await;
            }
        }
        self.broken = Some("the run is over".into());
    }
}

async fn handshake(
    conn: &mut Connection,
    tool: &str,
    deadline: Instant,
) -> Result<(Option<String>, Option<String>), VerifierError> {
    let init = conn
        .start_request(
            "initialize",
            json!({
                "protocolVersion": crate::agent::mcp::PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "fanout", "version": env!("CARGO_PKG_VERSION")},
            }),
        )
        .await?;
    let result = conn.wait(init, deadline, ServerRequests).await?;
    let info = result.get("serverInfo");
    let field = |k: &str| {
        info.and_then(|i| i.get(k))
            .and_then(Value::as_str)
            .map(|s| crate::jsonrpc::truncate(s, 200))
    };
    let (name, version) = (field("name"), field("version"));
    conn.notify("notifications/initialized", json!({})).await?;
    let list = conn.start_request("tools/list", json!({})).await?;
    let tools = conn.wait(list, deadline, ServerRequests).await?;
    let names = crate::agent::mcp::tool_names(&tools);
    if !names.iter().any(|n| n == tool) {
        return Err(VerifierError::NoTool {
            tool: tool.to_string(),
            offered: if names.is_empty() {
                "none".into()
            } else {
                crate::jsonrpc::truncate(&names.join(", "), 500)
            },
        });
    }
    Ok((name, version))
}

/// Answers the verifier's own requests so a call never waits on us; drops everything else.
struct ServerRequests;

impl AsyncIncomingHandler for ServerRequests {
    async fn handle(&mut self, conn: &Connection, msg: Incoming) {
        if let Incoming::Request { id, method, .. } = msg {
            let _ = match method.as_str() {
                "ping" => conn.respond(id, json!({})).await,
                "roots/list" => conn.respond(id, json!({"roots": []})).await,
                _ => {
                    conn.respond_error(id, -32601, "method not supported by fanout")
                        .await
                }
            };
        }
    }
}

/// The verifier profile used when the task file has none.
pub fn default_profile() -> AgentProfile {
    let mut p = AgentProfile::new(Protocol::Mcp, "claude");
    p.args = vec!["mcp".into(), "serve".into()];
    p.tool = "Read".into();
    p
}

/// Where `command` is: a path as given, else the first match on `PATH`.
fn find_program(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(command))
        .find(|p| executable(p))
}

/// Starts the verifier for a run, or says why read-back is skipped. `Err` only with
/// `--readback require`, and then the run folder (and anything this created) is gone again.
pub async fn start_for_run(
    plan: &Plan,
    progress: &Progress,
) -> Result<(Option<Verifier>, Option<String>), String> {
    let mode = plan.options.readback;
    if mode == ReadbackMode::Off {
        return Ok((None, Some("turned off with --no-readback".into())));
    }
    let profile = plan.verifier.clone().unwrap_or_else(default_profile);
    let started = if !profile.enabled {
        Err("the verifier profile is disabled (enabled: false)".to_string())
    } else {
        start_process(plan, profile)
            .await
            .map_err(|e| e.to_string())
    };
    match started {
        Ok(v) => Ok((Some(v), None)),
        Err(why) if mode == ReadbackMode::Require => Err(format!(
            "--readback require: read-back is not possible: {why}"
        )),
        Err(why) => {
            progress.warn(&format!(
                "read-back skipped: {why} (install it or set `verifier.command` in the task file; --no-readback silences this)"
            ));
            Ok((None, Some(why)))
        }
    }
}

async fn start_process(plan: &Plan, profile: AgentProfile) -> Result<Verifier, VerifierError> {
    let program = find_program(&profile.command)
        .ok_or_else(|| VerifierError::NotFound(profile.command.clone()))?;
    // The first folder this creates, removed again if the verifier cannot start.
    let created = plan
        .run_dir
        .ancestors()
        .take_while(|a| !a.exists())
        .last()
        .map(Path::to_path_buf);
    let result = async {
        let logs = plan.run_dir.join("logs");
        let status = plan.run_dir.join("status");
        for d in [&logs, &status] {
            std::fs::create_dir_all(d).map_err(|source| VerifierError::Io {
                path: d.display().to_string(),
                source,
            })?;
        }
        let spec = SpawnSpec {
            self_exe: plan.options.self_exe.clone(),
            // The verifier only reads; fanout does not confine it.
            policy: Policy {
                enforce: false,
                writable: Vec::new(),
                read: ReadAccess::All,
                net: NetPolicy::Any,
                min_abi: plan.options.sandbox.min_abi,
                // Not an agent: no model drives it, fanout only calls its Read tool on the
                // task's files; it keeps the invoker's uid (and its own login and config).
                run_as: None,
            },
            program: program.display().to_string(),
            args: profile.args.clone(),
            cwd: plan.run_dir.clone(),
            env: profile.env.clone(),
            env_remove: Vec::new(),
            stderr_log: logs.join("verifier.stderr.log"),
            status_file: status.join("verifier.json"),
        };
        Verifier::start(profile, spec).await
    }
    .await;
    if result.is_err() {
        if let Some(dir) = created {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    result
}

/// What read-back of one task produced.
pub struct ReadbackOutcome {
    pub gate: Option<GateResult>,
    pub report: ReadbackReport,
}

/// One path of a task's diff and what read-back does with it.
enum Job {
    Compare { path: String, content: String },
    Binary(String),
    Skip { path: String, why: String },
    MustBeGone(String),
}

/// The committed side of every changed path, from the task's tree.
fn jobs_for(repo_path: &Path, collected: &Collected) -> Result<Vec<Job>, String> {
    let repo = git2::Repository::open(repo_path)
        .map_err(|e| format!("cannot open the repository: {e}"))?;
    let tree = repo
        .find_tree(collected.tree)
        .map_err(|e| format!("cannot find the task's tree: {e}"))?;
    let mut jobs = Vec::new();
    let mut gone = std::collections::BTreeSet::new();
    for change in &collected.summary.changes {
        match change.kind.as_str() {
            "deleted" => {
                gone.insert(change.path.clone());
                continue;
            }
            "renamed" => {
                if let Some(old) = &change.old_path {
                    gone.insert(old.clone());
                }
            }
            _ => {}
        }
        let path = change.path.clone();
        let Ok(entry) = tree.get_path(Path::new(&path)) else {
            jobs.push(Job::Skip {
                path,
                why: "not in the committed tree".into(),
            });
            continue;
        };
        match entry.filemode() {
            0o120000 => {
                jobs.push(Job::Skip {
                    path,
                    why: "symbolic link (reading it would follow the link)".into(),
                });
                continue;
            }
            0o160000 => {
                jobs.push(Job::Skip {
                    path,
                    why: "submodule".into(),
                });
                continue;
            }
            _ => {}
        }
        let blob = repo
            .find_blob(entry.id())
            .map_err(|e| format!("cannot read the committed {path}: {e}"))?;
        let bytes = blob.content();
        if change.binary || bytes.contains(&0) {
            jobs.push(Job::Binary(path));
            continue;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => jobs.push(Job::Compare {
                path,
                content: text.to_string(),
            }),
            // The verifier shows invalid UTF-8 as U+FFFD: nothing exact to compare.
            Err(_) => jobs.push(Job::Binary(path)),
        }
    }
    // A path deleted and re-added (or renamed onto) is in the tree: compared, not "gone".
    for path in gone {
        if tree.get_path(Path::new(&path)).is_err() {
            jobs.push(Job::MustBeGone(path));
        }
    }
    Ok(jobs)
}

pub(crate) async fn check_task(
    shared: &crate::runner::Shared,
    worktree: &Path,
    collected: &Collected,
) -> ReadbackOutcome {
    let Some(verifier) = shared.verifier.clone() else {
        return ReadbackOutcome {
            gate: None,
            report: ReadbackReport {
                result: format!(
                    "skipped ({})",
                    shared
                        .readback_skip
                        .clone()
                        .unwrap_or_else(|| "no verifier".into())
                ),
                ..ReadbackReport::default()
            },
        };
    };
    let repo_path = shared.repo_path.clone();
    let collected_view = Collected {
        commit: collected.commit,
        tree: collected.tree,
        summary: collected.summary.clone(),
        patch: Vec::new(),
    };
    let jobs = tokio::task::spawn_blocking(move || jobs_for(&repo_path, &collected_view))
        .await
        .unwrap_or_else(|e| Err(format!("internal error: {e}")));
    let jobs = match jobs {
        Ok(j) => j,
        Err(e) => return failed_outcome(ReadbackReport::default(), &e),
    };
    let mut report = ReadbackReport::default();
    let mut problems: Vec<String> = Vec::new();
    for job in jobs {
        let checked = match job {
            Job::Binary(path) => {
                report.skipped_binary.push(path);
                continue;
            }
            Job::Skip { path, why } => {
                report.skipped.push(format!("{path}: {why}"));
                continue;
            }
            Job::MustBeGone(path) => {
                let abs = worktree.join(&path);
                let answer = verifier
                    .lock()
                    .await
                    .read(json!({"file_path": abs.display().to_string()}))
                    .await;
                match answer {
                    Ok(Answer::Error(_)) => {
                        report.deleted_checked += 1;
                        Ok(None)
                    }
                    Ok(_) => Ok(Some((
                        path.clone(),
                        "deleted in the commit but still readable".to_string(),
                    ))),
                    Err(e) => Err(e),
                }
            }
            Job::Compare { path, content } => {
                let abs = worktree.join(&path);
                match compare_file(&verifier, &abs, &content).await {
                    Ok(Compared::Same { bytes }) => {
                        report.files_read += 1;
                        report.bytes += bytes;
                        Ok(None)
                    }
                    Ok(Compared::SkippedBinary) => {
                        report.skipped_binary.push(path);
                        Ok(None)
                    }
                    Ok(Compared::Skipped(why)) => {
                        report.skipped.push(format!("{path}: {why}"));
                        Ok(None)
                    }
                    Ok(Compared::Differs(why)) => Ok(Some((path, why))),
                    Err(e) => Err(e),
                }
            }
        };
        match checked {
            Ok(None) => {}
            Ok(Some((path, why))) => {
                problems.push(format!("{path}: {why}"));
                report.mismatches.push(path);
            }
            Err(e) => {
                return failed_outcome(report, &e.to_string());
            }
        }
    }
    if problems.is_empty() {
        report.result = "passed".into();
        ReadbackOutcome {
            gate: Some(GateResult {
                gate: "readback".into(),
                passed: true,
                detail: None,
                paths: Vec::new(),
                output: None,
            }),
            report,
        }
    } else {
        report.result = "failed".into();
        ReadbackOutcome {
            gate: Some(GateResult {
                gate: "readback".into(),
                passed: false,
                detail: Some(format!(
                    "the verifier does not see the committed content of: {}",
                    crate::jsonrpc::truncate(&problems.join("; "), 4000)
                )),
                paths: report.mismatches.clone(),
                output: None,
            }),
            report,
        }
    }
}

/// Read-back could not be done (verifier gone, repository error): the gate fails closed.
fn failed_outcome(mut report: ReadbackReport, why: &str) -> ReadbackOutcome {
    report.result = "failed".into();
    ReadbackOutcome {
        gate: Some(GateResult {
            gate: "readback".into(),
            passed: false,
            detail: Some(format!("read-back could not be completed: {why}")),
            paths: Vec::new(),
            output: None,
        }),
        report,
    }
}

enum Compared {
    Same { bytes: u64 },
    Differs(String),
    SkippedBinary,
    Skipped(String),
}

/// What the verifier is expected to show for committed text: BOM removed, CRLF → LF.
pub fn normalize(text: &str) -> String {
    text.strip_prefix('\u{feff}')
        .unwrap_or(text)
        .replace("\r\n", "\n")
}

fn first_sentence(msg: &str) -> String {
    let s = msg.split(". ").next().unwrap_or(msg);
    crate::jsonrpc::truncate(s, 200)
}

fn too_large(msg: &str) -> bool {
    msg.contains("exceeds maximum allowed")
}

fn refused_type(msg: &str) -> bool {
    msg.contains("cannot read binary files") || msg.contains("image extension")
}

async fn compare_file(
    verifier: &tokio::sync::Mutex<Verifier>,
    abs: &Path,
    committed: &str,
) -> Result<Compared, VerifierError> {
    let expected = normalize(committed);
    let lines: Vec<&str> = expected.split('\n').collect();
    let file_path = abs.display().to_string();
    if committed.len() <= WHOLE_READ_MAX_BYTES {
        let answer = verifier
            .lock()
            .await
            .read(json!({"file_path": file_path}))
            .await?;
        match answer {
            Answer::Text {
                content,
                numbered,
                truncated,
                ..
            } => {
                let partial = truncated
                    || (content.len() < expected.len()
                        && expected.starts_with(&content)
                        && lines.len() > PAGE_MAX_LINES);
                if !partial {
                    return Ok(match diff_text(&content, &expected, numbered, 1) {
                        None => Compared::Same {
                            bytes: content.len() as u64,
                        },
                        Some(why) => Compared::Differs(why),
                    });
                }
                // A verifier that cuts whole reads (older ones stop at 2000 lines): page it.
            }
            Answer::Error(m) if too_large(&m) => {} // page it below
            other => return Ok(judge_other(other)),
        }
    }
    // Paged: pages cut from the committed lines; each page must equal the verifier's.
    let mut bytes = 0u64;
    let mut start = 0usize;
    let mut saw_total = false;
    while start < lines.len() {
        let mut n = page_len(&lines[start..]);
        let answer = loop {
            let a = verifier
                .lock()
                .await
                .read(json!({"file_path": file_path, "offset": start + 1, "limit": n}))
                .await?;
            match a {
                Answer::Error(m) if too_large(&m) && n > 1 => n = n.div_ceil(2),
                Answer::Text {
                    truncated: true, ..
                } if n > 1 => n = n.div_ceil(2),
                Answer::Error(m) if too_large(&m) => {
                    return Ok(Compared::Skipped(format!(
                        "line {} is longer than the verifier can show ({})",
                        start + 1,
                        first_sentence(&m)
                    )))
                }
                Answer::Text {
                    truncated: true, ..
                } => {
                    return Ok(Compared::Skipped(format!(
                        "line {} is longer than the verifier can show",
                        start + 1
                    )))
                }
                other => break other,
            }
        };
        match answer {
            Answer::Text {
                content,
                total_lines,
                numbered,
                ..
            } => {
                if let Some(total) = total_lines {
                    saw_total = true;
                    if total != lines.len() {
                        return Ok(Compared::Differs(format!(
                            "the verifier sees {total} line(s), the commit has {}",
                            lines.len()
                        )));
                    }
                }
                let want = lines[start..start + n].join("\n");
                if let Some(why) = diff_text(&content, &want, numbered, start + 1) {
                    return Ok(Compared::Differs(why));
                }
                bytes += content.len() as u64;
            }
            other => return Ok(judge_other(other)),
        }
        start += n;
    }
    if !saw_total {
        // Numbered answers carry no line count: nothing may follow the last committed line.
        let tail = verifier
            .lock()
            .await
            .read(json!({"file_path": file_path, "offset": lines.len() + 1, "limit": 1}))
            .await?;
        if let Answer::Text { content, .. } = tail {
            if !content.is_empty() {
                return Ok(Compared::Differs(format!(
                    "the verifier sees more than the commit's {} line(s)",
                    lines.len()
                )));
            }
        }
    }
    Ok(Compared::Same { bytes })
}

fn judge_other(answer: Answer) -> Compared {
    match answer {
        Answer::Error(m) if refused_type(&m) => Compared::SkippedBinary,
        Answer::Error(m) => Compared::Differs(format!(
            "the verifier cannot read it: {}",
            first_sentence(&m)
        )),
        Answer::Other(kind) => {
            Compared::Skipped(format!("the verifier shows it as {kind}, not as text"))
        }
        Answer::Unrecognized(t) => Compared::Differs(format!(
            "unrecognised answer from the verifier: {}",
            crate::jsonrpc::truncate(&t, 200)
        )),
        Answer::Text { .. } => Compared::Differs("unexpected answer".into()),
    }
}

/// How many lines (≥ 1) of `rest` fit in one page.
fn page_len(rest: &[&str]) -> usize {
    let mut bytes = 0usize;
    let mut n = 0usize;
    for l in rest.iter().take(PAGE_MAX_LINES) {
        bytes += l.len() + 1;
        if n > 0 && bytes > PAGE_MAX_BYTES {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// `None` when `got` shows `want`; else where they first differ. `first_line` numbers the
/// lines of `want` in the file. Numbered answers carry no trailing-newline information.
fn diff_text(got: &str, want: &str, numbered: bool, first_line: usize) -> Option<String> {
    if got == want {
        return None;
    }
    if numbered {
        let trimmed = want.strip_suffix('\n').unwrap_or(want);
        if got == trimmed || got.strip_suffix('\n') == Some(trimmed) {
            return None;
        }
    }
    let (g, w): (Vec<&str>, Vec<&str>) = (got.split('\n').collect(), want.split('\n').collect());
    for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
        if a != b {
            return Some(format!(
                "line {} differs (verifier: {:?}, commit: {:?})",
                first_line + i,
                crate::jsonrpc::truncate(a, 80),
                crate::jsonrpc::truncate(b, 80)
            ));
        }
    }
    Some(format!(
        "the verifier sees {} line(s) ({} bytes) from line {first_line}, the commit has {} ({} bytes)",
        g.len(),
        got.len(),
        w.len(),
        want.len()
    ))
}

/// Reads either answer shape of a `Read` result.
fn parse_answer(result: &Value) -> Answer {
    let blocks = result
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text: Vec<&str> = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let text = text.join("\n");
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return Answer::Error(if text.is_empty() {
            "error without a message".into()
        } else {
            text
        });
    }
    if text.is_empty() {
        let kind = blocks
            .first()
            .and_then(|b| b.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("nothing");
        return Answer::Other(crate::jsonrpc::truncate(kind, 40));
    }
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text.trim()) {
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("unknown");
        let file = obj.get("file");
        let content = file.and_then(|f| f.get("content")).and_then(Value::as_str);
        return match (kind, content) {
            ("text", Some(c)) => Answer::Text {
                content: c.to_string(),
                total_lines: file
                    .and_then(|f| f.get("totalLines"))
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok()),
                numbered: false,
                truncated: file
                    .and_then(|f| f.get("truncatedByTokenCap"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            _ => Answer::Other(crate::jsonrpc::truncate(kind, 40)),
        };
    }
    parse_numbered(&text)
}

/// `cat -n` style: `     1\tline` (or `     1→line`), reminders in `<system-reminder>` dropped.
fn parse_numbered(text: &str) -> Answer {
    let mut body = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<system-reminder>") {
        body.push_str(&rest[..start]);
        rest = match rest[start..].find("</system-reminder>") {
            Some(end) => &rest[start + end + "</system-reminder>".len()..],
            None => "",
        };
    }
    body.push_str(rest);
    let body = body.trim_end_matches(['\n', ' ']);
    if body.trim().is_empty() {
        return Answer::Text {
            content: String::new(),
            total_lines: None,
            numbered: true,
            truncated: false,
        };
    }
    let mut out = Vec::new();
    for line in body.split('\n') {
        let l = line.trim_start_matches(' ');
        let digits = l.len() - l.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = &l[digits..];
        let content = after.strip_prefix('\t').or_else(|| after.strip_prefix('→'));
        match content {
            Some(c) if digits > 0 => out.push(c),
            _ => return Answer::Unrecognized(crate::jsonrpc::truncate(line, 200)),
        }
    }
    Answer::Text {
        content: out.join("\n"),
        total_lines: None,
        numbered: true,
        truncated: false,
    }
}

/// One line for `fanout doctor` about the verifier binary.
pub fn doctor_line(command: &str) -> String {
    match std::process::Command::new(command).arg("--version").output() {
        Ok(out) if out.status.success() => format!(
            "ok    verifier: {command} {} (read-back through `mcp serve` / Read)",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        _ => format!(
            "warn  verifier: {command} not found; read-back will be skipped (install @anthropic-ai/claude-code)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_block(t: &str) -> Value {
        json!({"content": [{"type": "text", "text": t}]})
    }

    #[test]
    fn json_shape() {
        let inner = json!({"type":"text","file":{"filePath":"/x","content":"a\nb\n","numLines":3,"startLine":1,"totalLines":3}});
        assert_eq!(
            parse_answer(&text_block(&inner.to_string())),
            Answer::Text {
                content: "a\nb\n".into(),
                total_lines: Some(3),
                numbered: false,
                truncated: false
            }
        );
        let cut = json!({"type":"text","file":{"content":"ab","numLines":1,"startLine":1,"totalLines":9,"truncatedByTokenCap":true}});
        assert!(matches!(
            parse_answer(&text_block(&cut.to_string())),
            Answer::Text {
                truncated: true,
                ..
            }
        ));
        let nb = json!({"type":"notebook","file":{"cells":[]}});
        assert_eq!(
            parse_answer(&text_block(&nb.to_string())),
            Answer::Other("notebook".into())
        );
    }

    #[test]
    fn numbered_shape_and_errors() {
        let a = parse_answer(&text_block(
            "     1\tfn main() {}\n     2\t\n     3→  x\n<system-reminder>note</system-reminder>\n",
        ));
        assert_eq!(
            a,
            Answer::Text {
                content: "fn main() {}\n\n  x".into(),
                total_lines: None,
                numbered: true,
                truncated: false
            }
        );
        assert!(diff_text("fn main() {}\n\n  x", "fn main() {}\n\n  x\n", true, 1).is_none());
        assert!(matches!(
            parse_answer(&text_block("hello there")),
            Answer::Unrecognized(_)
        ));
        let err = json!({"content":[{"type":"text","text":"File does not exist."}],"isError":true});
        assert_eq!(
            parse_answer(&err),
            Answer::Error("File does not exist.".into())
        );
    }

    #[test]
    fn normalization_and_paging() {
        assert_eq!(normalize("\u{feff}a\r\nb\rc\n"), "a\nb\rc\n");
        let long = "x".repeat(50_000);
        let lines = vec![long.as_str(), long.as_str(), "y"];
        assert_eq!(page_len(&lines), 1);
        let short: Vec<&str> = std::iter::repeat_n("abc", 5000).collect();
        assert_eq!(page_len(&short), PAGE_MAX_LINES);
        assert_eq!(page_len(&[]), 1);
    }

    #[test]
    fn differences_name_the_line() {
        let why = diff_text("a\nB\n", "a\nb\n", false, 10).unwrap();
        assert!(why.contains("line 11"), "{why}");
        let why = diff_text("a\nb\nc", "a\nb", false, 1).unwrap();
        assert!(why.contains("3 line(s)"), "{why}");
    }
}
