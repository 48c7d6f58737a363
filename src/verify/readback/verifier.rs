//! The verifier process: one `claude mcp serve` (or the profile's command) per run, started,
//! restarted when it dies or hangs, and shut down when the run ends.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::answer::{parse_answer, Answer};
use super::compare::ReadTool;
use crate::jsonrpc::{truncate, AsyncIncomingHandler, Connection, Incoming, JsonRpcError};
use crate::plan::{Plan, ReadbackMode};
use crate::process::{AgentProcess, SpawnSpec};
use crate::report::VerifierSummary;
use crate::sandbox::NetPolicy;
use crate::taskfile::{AgentProfile, Protocol};
use crate::verify::judges::{Judge, Judges, PrivateDir};

/// Restarts of a dead or hung verifier per run; after that read-back fails closed.
const MAX_RESTARTS: u32 = 3;
/// Upper bound of one `Read` call (the profile's `tool_timeout_sec` when it is lower).
const READ_TIMEOUT_CAP_SECS: f64 = 60.0;
const STOP_GRACE: Duration = Duration::from_secs(2);

pub use super::error::VerifierError;

/// `--readback require` and no verifier: the run must not start.
#[derive(Debug, thiserror::Error)]
#[error("--readback require: read-back is not possible: {0}")]
pub struct ReadbackRequired(pub String);

struct Live {
    proc: AgentProcess,
    conn: Connection,
}

/// One verifier connection shared by all tasks of a run.
pub struct Verifier {
    profile: AgentProfile,
    spec: SpawnSpec,
    /// Its private home (config, temp files): the only place it may write.
    _home: PrivateDir,
    live: Option<Live>,
    broken: Option<String>,
    summary: VerifierSummary,
}

impl Verifier {
    async fn start(
        profile: AgentProfile,
        spec: SpawnSpec,
        home: PrivateDir,
    ) -> Result<Verifier, VerifierError> {
        let mut v = Verifier {
            _home: home,
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
                            truncate(&tail, 500)
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
    async fn call(&mut self, args: Value) -> Result<Answer, VerifierError> {
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
                    &mut ServerRequests,
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

/// Tasks share the verifier; each call takes the lock, so pages of one file may interleave
/// with other tasks' calls.
impl ReadTool for tokio::sync::Mutex<Verifier> {
    async fn read(&self, args: Value) -> Result<Answer, VerifierError> {
        self.lock().await.call(args).await
    }
}

/// The MCP handshake; the server's name and version, or why the tool cannot be used.
async fn handshake(
    conn: &mut Connection,
    tool: &str,
    deadline: Instant,
) -> Result<(Option<String>, Option<String>), VerifierError> {
    let hello =
        crate::mcp::handshake(conn, json!({}), deadline, &mut ServerRequests, |_| {}).await?;
    if !hello.offers(tool) {
        return Err(VerifierError::NoTool {
            tool: tool.to_string(),
            offered: if hello.tools.is_empty() {
                "none".into()
            } else {
                truncate(&hello.tools.join(", "), 500)
            },
        });
    }
    Ok((hello.server_info("name"), hello.server_info("version")))
}

/// Answers the verifier's own requests so a call never waits on us; drops everything else.
struct ServerRequests;

impl AsyncIncomingHandler for &mut ServerRequests {
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

/// Starts the verifier for a run, or says why read-back is skipped (and tells `warn` once,
/// unless read-back is off). `Err` only with `--readback require`, and then the run folder
/// (and anything this created) is gone again.
pub async fn start_for_run(
    plan: &Plan,
    judges: &Judges,
    warn: impl FnOnce(&str),
) -> Result<(Option<Verifier>, Option<String>), ReadbackRequired> {
    let mode = plan.options.readback;
    if mode == ReadbackMode::Off {
        return Ok((None, Some("turned off with --no-readback".into())));
    }
    let profile = plan.verifier.clone().unwrap_or_else(default_profile);
    let started = if !profile.enabled {
        Err("the verifier profile is disabled (enabled: false)".to_string())
    } else {
        start_process(plan, judges, profile)
            .await
            .map_err(|e| e.to_string())
    };
    match started {
        Ok(v) => Ok((Some(v), None)),
        Err(why) if mode == ReadbackMode::Require => Err(ReadbackRequired(why)),
        Err(why) => {
            warn(&format!(
                "read-back skipped: {why} (install it or set `verifier.command` in the task file; --no-readback silences this)"
            ));
            Ok((None, Some(why)))
        }
    }
}

async fn start_process(
    plan: &Plan,
    judges: &Judges,
    profile: AgentProfile,
) -> Result<Verifier, VerifierError> {
    // An explicit path must be executable too: otherwise it is "not found", not a failed start.
    let program = crate::which::find_program(&profile.command)
        .ok()
        .filter(|p| crate::which::is_executable(p))
        .ok_or_else(|| VerifierError::NotFound(profile.command.clone()))?;
    // The first folder this creates, removed again if the verifier cannot start.
    let created = plan
        .run_dir
        .ancestors()
        .take_while(|a| !a.exists())
        .last()
        .map(Path::to_path_buf);
    let result = async {
        let layout = crate::run_dir::RunDir::new(&plan.run_dir);
        let (logs, status) = (layout.logs(), layout.status());
        for d in [&logs, &status] {
            std::fs::create_dir_all(d).map_err(|source| VerifierError::Io {
                path: d.display().to_string(),
                source,
            })?;
        }
        let home = judges
            .private_dir("verifier")
            .map_err(|e| VerifierError::Spawn(crate::error_chain(&e)))?;
        // A judge: confined, reads only the snapshots (and its own folders), no network (in a
        // namespace of its own with no way out when the run isolates the network), never
        // root, and nothing of the task in its environment or settings.
        let mut env = profile.env.clone();
        env.insert(
            "CLAUDE_CONFIG_DIR".into(),
            home.path().display().to_string(),
        );
        for (k, v) in crate::agent::mcp_servers::CLAUDE_ENV {
            env.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
        let spec = judges.spawn_spec(Judge {
            program: program.display().to_string(),
            args: profile.args.clone(),
            cwd: home.path().to_path_buf(),
            home: home.path(),
            readable: vec![judges.snapshots()],
            net: NetPolicy::None,
            isolate_net: judges.isolates_net(),
            egress: None,
            env,
            stderr_log: logs.join("verifier.stderr.log"),
            status_file: status.join("verifier.json"),
        });
        Verifier::start(profile, spec, home).await
    }
    .await;
    if result.is_err() {
        if let Some(dir) = created {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    result
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
