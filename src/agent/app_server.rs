/*!
The `codex-app-server` protocol (Codex 0.154+): JSON-RPC 2.0 over stdio, lines without the
`"jsonrpc"` member, notifications carrying `emittedAtMs`.

initialize → initialized → thread/start {cwd, approvalPolicy "never", sandbox} → per turn:
turn/start {threadId, input, sandboxPolicy} → notifications until `turn/completed` for the turn
id that turn/start returned. Follow-ups are new turns on the same thread; turns are serialised
(a turn/start during a running turn would steer into it instead). Every server→client request
is answered at once so nothing ever waits for a human. On deadline: turn/interrupt, then the
process group is killed.

Method and field names come from `codex app-server generate-json-schema` of 0.169.0 (0.171.0
answers the same). The version in `initialize`'s `userAgent` must be one fanout knows
([`knows`]); another one is refused with the supported range.
*/

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::codex::Version;
use super::common::{
    check_sandbox, AgentContext, AgentError, AgentInfo, TokenUsage, TurnResult, STOP_GRACE,
};
use crate::eventlog::EventLog;
use crate::jsonrpc::{AsyncIncomingHandler, Connection, Incoming, JsonRpcError};
use crate::process::AgentProcess;
use crate::sandbox::NetPolicy;

/// How long to wait for `turn/completed` after `turn/interrupt` before killing the process.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// The newest Codex whose app-server protocol fanout knows (any patch release of it); the
/// oldest is [`APP_SERVER_SINCE`](super::codex::APP_SERVER_SINCE). Tested: 0.169.0, 0.171.0.
pub const NEWEST_KNOWN: Version = Version {
    major: 0,
    minor: 171,
    patch: 0,
};

/// The supported Codex versions in words, for messages and `fanout doctor`.
pub fn supported_range() -> String {
    format!(
        "{}.{}.x to {}.{}.x",
        super::codex::APP_SERVER_SINCE.major,
        super::codex::APP_SERVER_SINCE.minor,
        NEWEST_KNOWN.major,
        NEWEST_KNOWN.minor
    )
}

/// Whether fanout knows the app-server protocol of Codex `v`.
pub fn knows(v: Version) -> bool {
    let newest = Version {
        patch: u64::MAX,
        ..NEWEST_KNOWN
    };
    (super::codex::APP_SERVER_SINCE..=newest).contains(&v)
}

/// The version the app-server reports at `initialize`: its `userAgent` starts with
/// `<client name>/<codex version> ` (0.169.0 and 0.171.0 alike; there is no serverInfo).
fn reported_version(result: &Value) -> Option<Version> {
    let ua = result.get("userAgent").and_then(Value::as_str)?;
    let first = ua.split_whitespace().next()?;
    Version::parse(first.split('/').nth(1)?)
}

/// Why the handshake did not get to a thread.
enum HandshakeError {
    Rpc(JsonRpcError),
    /// The app-server speaks a protocol fanout does not know.
    Unknown(String),
}

impl From<JsonRpcError> for HandshakeError {
    fn from(e: JsonRpcError) -> Self {
        HandshakeError::Rpc(e)
    }
}

pub struct AppServerSession {
    ctx: AgentContext,
    proc: AgentProcess,
    conn: Connection,
    pub info: AgentInfo,
    turns: u32,
}

impl AppServerSession {
    /// Spawns `codex app-server`, initializes and starts the task's thread.
    pub async fn start(
        ctx: AgentContext,
        version: Option<String>,
    ) -> Result<AppServerSession, AgentError> {
        let mut proc =
            AgentProcess::spawn(&ctx.spawn).map_err(|e| AgentError::Spawn(format!("{e:#}")))?;
        let (Some(stdout), Some(stdin)) = (proc.stdout.take(), proc.stdin.take()) else {
            return Err(AgentError::Spawn("agent stdio was not piped".into()));
        };
        let mut conn = Connection::new(stdout, stdin, 256);
        // app-server itself never sends "jsonrpc"; mirror it.
        conn.set_tag_version(false);
        let mut session = AppServerSession {
            info: AgentInfo {
                protocol: "codex-app-server".into(),
                version,
                ..AgentInfo::default()
            },
            ctx,
            proc,
            conn,
            turns: 0,
        };
        let startup = session.ctx.profile.startup_timeout_sec;
        let deadline = Instant::now() + Duration::from_secs_f64(startup);
        match session.handshake(deadline).await {
            Ok(()) => {
                check_sandbox(&session.proc.status_file, &mut session.info)?;
                Ok(session)
            }
            Err(HandshakeError::Rpc(e)) => Err(session.fail(e, startup, true).await),
            Err(HandshakeError::Unknown(message)) => {
                super::common::rpc_shutdown(&session.conn, &mut session.proc).await;
                Err(AgentError::Protocol(message))
            }
        }
    }

    async fn handshake(&mut self, deadline: Instant) -> Result<(), HandshakeError> {
        let events = self.ctx.events.clone();
        let confined = self.ctx.spawn.policy.enforce;
        let init = self
            .conn
            .start_request(
                "initialize",
                json!({"clientInfo": {"name": "fanout", "title": "fanout", "version": env!("CARGO_PKG_VERSION")}}),
            )
            .await?;
        let mut handler = Handler::new(
            events.clone(),
            self.ctx.meter.clone(),
            &mut self.info,
            confined,
        );
        let result = self.conn.wait(init, deadline, &mut handler).await?;
        events.record("initialized", json!({"result": result}));
        // The version that answers is the one that counts (`--version` may be another binary's).
        match reported_version(&result) {
            Some(v) if knows(v) => self.info.version = Some(v.to_string()),
            Some(v) => {
                return Err(HandshakeError::Unknown(format!(
                    "Codex {v} speaks an app-server protocol fanout does not know (supported: Codex {}); \
                     install a supported one (`npm install -g @openai/codex@0.171.0`) or a fanout that knows {v}",
                    supported_range()
                )))
            }
            None => {
                return Err(HandshakeError::Unknown(format!(
                    "the app-server's answer to initialize names no Codex version (no `userAgent`): \
                     not a Codex app-server fanout knows (supported: Codex {})",
                    supported_range()
                )))
            }
        }
        self.conn.notify("initialized", json!({})).await?;

        let mut params = Map::new();
        params.insert("cwd".into(), json!(self.ctx.worktree.display().to_string()));
        params.insert("approvalPolicy".into(), json!("never"));
        // Codex's bubblewrap sandbox cannot start inside Landlock; fanout's domain confines it.
        let sandbox = if confined {
            "danger-full-access"
        } else {
            "workspace-write"
        };
        params.insert("sandbox".into(), json!(sandbox));
        // Profile `arguments` are thread/start parameters for this protocol (model, baseInstructions, …).
        for (k, v) in &self.ctx.profile.arguments {
            params.insert(k.clone(), v.clone());
        }
        if let Some(thread) = self.ctx.resume_thread.clone() {
            if self.resume(&thread, &params, deadline).await? {
                return Ok(());
            }
        }
        let req = self
            .conn
            .start_request("thread/start", Value::Object(params))
            .await?;
        let mut handler = Handler::new(
            events.clone(),
            self.ctx.meter.clone(),
            &mut self.info,
            confined,
        );
        let result = self.conn.wait(req, deadline, &mut handler).await?;
        let thread = result
            .get("thread")
            .and_then(|t| t.get("id"))
            .and_then(Value::as_str)
            .ok_or_else(|| JsonRpcError::Remote {
                method: "thread/start".into(),
                code: 0,
                message: "the reply has no thread.id".into(),
                data: None,
            })?;
        self.info.thread_id = Some(thread.to_string());
        self.info.model = result
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string);
        events.record("thread_started", json!({"threadId": thread}));
        Ok(())
    }

    /// `thread/resume` of an earlier round's thread, from the rollout in the task's private
    /// CODEX_HOME (kept for the run): `false` when Codex cannot (the caller starts a new thread
    /// and the prompt carries what the agent would have remembered).
    async fn resume(
        &mut self,
        thread: &str,
        start: &Map<String, Value>,
        deadline: Instant,
    ) -> Result<bool, HandshakeError> {
        let events = self.ctx.events.clone();
        let confined = self.ctx.spawn.policy.enforce;
        let mut params = Map::new();
        params.insert("threadId".into(), json!(thread));
        // The same settings as a new thread; thread/resume knows no other keys.
        for key in [
            "cwd",
            "approvalPolicy",
            "sandbox",
            "model",
            "baseInstructions",
            "developerInstructions",
            "config",
        ] {
            if let Some(v) = start.get(key) {
                params.insert(key.into(), v.clone());
            }
        }
        params.insert("excludeTurns".into(), json!(true));
        let req = self
            .conn
            .start_request("thread/resume", Value::Object(params))
            .await?;
        let mut handler = Handler::new(
            events.clone(),
            self.ctx.meter.clone(),
            &mut self.info,
            confined,
        );
        let answer = self.conn.wait(req, deadline, &mut handler).await;
        let resumed = match answer {
            Ok(result) => result
                .get("thread")
                .and_then(|t| t.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            Err(JsonRpcError::Remote { message, .. }) => {
                events.record(
                    "thread_resume_failed",
                    json!({"threadId": thread, "error": message}),
                );
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        let Some(id) = resumed else {
            events.record(
                "thread_resume_failed",
                json!({"threadId": thread, "error": "the reply has no thread.id"}),
            );
            return Ok(false);
        };
        self.info.thread_id = Some(id.clone());
        self.info.resumed = true;
        events.record("thread_resumed", json!({"threadId": id}));
        Ok(true)
    }

    fn sandbox_policy(&self) -> Value {
        if self.ctx.spawn.policy.enforce {
            let network = match self.ctx.spawn.policy.net {
                NetPolicy::Any => "enabled",
                _ => "restricted",
            };
            json!({"type": "externalSandbox", "networkAccess": network})
        } else {
            json!({"type": "workspaceWrite", "writableRoots": [], "networkAccess": false})
        }
    }

    /// One turn on the thread: the first prompt or a follow-up.
    pub async fn turn(
        &mut self,
        prompt: &str,
        deadline: Instant,
    ) -> Result<TurnResult, AgentError> {
        self.turns += 1;
        let secs = deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let Some(thread) = self.info.thread_id.clone() else {
            return Err(AgentError::Protocol("no thread was started".into()));
        };
        let confined = self.ctx.spawn.policy.enforce;
        self.ctx.events.record(
            "turn_start",
            json!({"turn": self.turns, "threadId": thread}),
        );
        let params = json!({
            "threadId": thread,
            "input": [{"type": "text", "text": prompt, "text_elements": []}],
            "sandboxPolicy": self.sandbox_policy(),
        });
        let mut state = TurnState::default();
        let started = async {
            let req = self.conn.start_request("turn/start", params).await?;
            let mut handler = Handler::new(
                self.ctx.events.clone(),
                self.ctx.meter.clone(),
                &mut self.info,
                confined,
            );
            handler.state = Some(&mut state);
            self.conn.wait(req, deadline, &mut handler).await
        }
        .await;
        let result = match started {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e, secs, false).await),
        };
        let Some(turn_id) = result
            .get("turn")
            .and_then(|t| t.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(self
                .fail(
                    JsonRpcError::Remote {
                        method: "turn/start".into(),
                        code: 0,
                        message: "the reply has no turn.id".into(),
                        data: None,
                    },
                    secs,
                    false,
                )
                .await);
        };
        state.turn_id = Some(turn_id.clone());
        loop {
            if let Some(done) = state.completed_for(&turn_id) {
                return self.finish_turn(done, &state);
            }
            match self.conn.next_incoming(deadline).await {
                Ok(msg) => {
                    let mut handler = Handler::new(
                        self.ctx.events.clone(),
                        self.ctx.meter.clone(),
                        &mut self.info,
                        confined,
                    );
                    handler.state = Some(&mut state);
                    (&mut handler).handle(&self.conn, msg).await;
                }
                Err(JsonRpcError::Timeout { .. }) => {
                    self.interrupt(&thread, &turn_id, &mut state).await;
                    self.proc.terminate(STOP_GRACE).await;
                    return Err(AgentError::Timeout(secs));
                }
                Err(e) => return Err(self.fail(e, secs, false).await),
            }
        }
    }

    /// Asks Codex to stop the turn and waits briefly for it to say so (then the caller kills it).
    async fn interrupt(&mut self, thread: &str, turn: &str, state: &mut TurnState) {
        self.ctx.events.record(
            "turn_interrupt",
            json!({"threadId": thread, "turnId": turn, "reason": "deadline"}),
        );
        let grace = Instant::now() + INTERRUPT_GRACE;
        let Ok(req) = self
            .conn
            .start_request(
                "turn/interrupt",
                json!({"threadId": thread, "turnId": turn}),
            )
            .await
        else {
            return;
        };
        let confined = self.ctx.spawn.policy.enforce;
        let mut handler = Handler::new(
            self.ctx.events.clone(),
            self.ctx.meter.clone(),
            &mut self.info,
            confined,
        );
        handler.state = Some(state);
        let _ = self.conn.wait(req, grace, &mut handler).await;
        while state.completed_for(turn).is_none() {
            let Ok(msg) = self.conn.next_incoming(grace).await else {
                break;
            };
            let mut handler = Handler::new(
                self.ctx.events.clone(),
                self.ctx.meter.clone(),
                &mut self.info,
                confined,
            );
            handler.state = Some(state);
            (&mut handler).handle(&self.conn, msg).await;
        }
    }

    fn finish_turn(&mut self, turn: Value, state: &TurnState) -> Result<TurnResult, AgentError> {
        let status = turn
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        if state.message.is_some() {
            self.info.last_message = state.message.clone();
        }
        match status {
            "completed" => Ok(TurnResult {
                message: state.message.clone(),
            }),
            "interrupted" => Err(AgentError::Reported(
                "Codex reports the turn was interrupted".into(),
            )),
            _ => {
                let error = turn
                    .get("error")
                    .filter(|e| !e.is_null())
                    .or(state.error.as_ref());
                Err(AgentError::Reported(describe_turn_error(status, error)))
            }
        }
    }

    /// Turns a connection error into an agent error, stopping the process where needed.
    async fn fail(&mut self, e: JsonRpcError, secs: f64, startup: bool) -> AgentError {
        super::common::rpc_failure(&mut self.proc, &mut self.info, e, secs, startup).await
    }

    /// Stops the agent's tree at once, without the polite close: a budget ran out, and every
    /// further model call would be spent past it.
    pub async fn stop_now(mut self) {
        self.proc.terminate(STOP_GRACE).await;
    }

    /// Closes stdin (the stdio shutdown of MCP and app-server), then stops what is left of the tree.
    pub async fn shutdown(mut self) {
        super::common::rpc_shutdown(&self.conn, &mut self.proc).await
    }
}

/// A failed turn in words; connection failures name the model endpoint as the likely cause.
fn describe_turn_error(status: &str, error: Option<&Value>) -> String {
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("no error message");
    let info = error.and_then(|e| e.get("codexErrorInfo"));
    let cause = match info {
        Some(Value::Object(m)) if m.contains_key("httpConnectionFailed") => {
            " (Codex could not reach the model provider: is its base_url up?)"
        }
        Some(Value::Object(m)) if m.contains_key("responseStreamConnectionFailed") => {
            " (the model provider's stream broke off)"
        }
        Some(Value::String(s)) if s == "unauthorized" => {
            " (the model provider refused the credentials)"
        }
        _ => "",
    };
    format!("Codex turn {status}: {message}{cause}")
}

/// What one turn has produced so far.
#[derive(Default)]
struct TurnState {
    turn_id: Option<String>,
    /// `turn/completed` payloads seen (turn id → turn), in case one arrives before we know our id.
    completed: Vec<(String, Value)>,
    message: Option<String>,
    /// The last final (`willRetry: false`) error notification.
    error: Option<Value>,
}

impl TurnState {
    fn completed_for(&self, turn: &str) -> Option<Value> {
        self.completed
            .iter()
            .find(|(id, _)| id == turn)
            .map(|(_, t)| t.clone())
    }

    fn mine(&self, params: &Value) -> bool {
        match (&self.turn_id, params.get("turnId").and_then(Value::as_str)) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => true,
        }
    }
}

/// Logs traffic, keeps report facts, and answers server requests so nothing blocks.
struct Handler<'a> {
    events: EventLog,
    /// The session's running total, for budgets watched while the turn runs.
    meter: crate::usage::meter::Meter,
    info: &'a mut AgentInfo,
    state: Option<&'a mut TurnState>,
    /// Whether fanout's sandbox confines the agent (then commands and edits may be approved).
    confined: bool,
}

impl<'a> Handler<'a> {
    fn new(
        events: EventLog,
        meter: crate::usage::meter::Meter,
        info: &'a mut AgentInfo,
        confined: bool,
    ) -> Self {
        Handler {
            events,
            meter,
            info,
            state: None,
            confined,
        }
    }

    fn absorb(&mut self, method: &str, params: &Value) {
        match method {
            "item/started" if item_type(params) == Some("commandExecution") => {
                self.info.commands_run += 1;
            }
            "item/completed" if item_type(params) == Some("agentMessage") => {
                let text = params
                    .get("item")
                    .and_then(|i| i.get("text"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let (Some(text), Some(state)) = (text.clone(), self.state.as_deref_mut()) {
                    if state.mine(params) {
                        state.message = Some(text);
                    }
                }
                if text.is_some() {
                    self.info.last_message = text;
                }
            }
            "thread/tokenUsage/updated" => {
                let total = params.get("tokenUsage").and_then(|u| u.get("total"));
                if let Some(usage) = total.and_then(crate::usage::read::codex_app_server) {
                    self.info.tokens = Some(Box::new(TokenUsage {
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                        total_tokens: usage.total_tokens,
                    }));
                    self.info.usage = Some(Box::new(usage.clone()));
                    self.meter.set(usage);
                }
            }
            "error" => {
                // willRetry: true means Codex is still trying; only a final error explains a failure.
                let final_error = params.get("willRetry").and_then(Value::as_bool) != Some(true);
                if let (true, Some(state)) = (final_error, self.state.as_deref_mut()) {
                    if state.mine(params) {
                        state.error = params.get("error").cloned();
                    }
                }
            }
            "turn/completed" => {
                if let (Some(turn), Some(state)) = (params.get("turn"), self.state.as_deref_mut()) {
                    if let Some(id) = turn.get("id").and_then(Value::as_str) {
                        state.completed.push((id.to_string(), turn.clone()));
                    }
                }
            }
            _ => {}
        }
    }

    /// The answer to a server→client request, by method (names from the 0.169 schema).
    fn answer(&self, method: &str) -> Result<Value, &'static str> {
        let allow = self.confined;
        Ok(match method {
            "item/commandExecution/requestApproval" | "item/fileChange/requestApproval" => {
                json!({"decision": if allow { "accept" } else { "decline" }})
            }
            // Legacy (v1) approval requests.
            "execCommandApproval" | "applyPatchApproval" => {
                json!({"decision": if allow { "approved" } else { "denied" }})
            }
            // Extra permissions beyond the sandbox: grant none.
            "item/permissions/requestApproval" => json!({"permissions": {}, "scope": "turn"}),
            // Nobody is there to answer questions; an empty answer lets the turn go on.
            "item/tool/requestUserInput" => json!({"answers": {}}),
            "mcpServer/elicitation/request" => json!({"action": "decline"}),
            "item/tool/call" => json!({"contentItems": [], "success": false}),
            _ => return Err("method not supported by fanout"),
        })
    }
}

fn item_type(params: &Value) -> Option<&str> {
    params
        .get("item")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
}

impl AsyncIncomingHandler for &mut Handler<'_> {
    async fn handle(&mut self, conn: &Connection, msg: Incoming) {
        match msg {
            Incoming::Notification { method, params } => {
                self.info.notifications += 1;
                self.absorb(&method, &params);
                self.events
                    .record("notification", json!({"method": method, "params": params}));
            }
            Incoming::Request { id, method, params } => {
                let answer = self.answer(&method);
                self.events.record(
                    "server_request",
                    json!({"id": id, "method": method, "params": params,
                           "answer": match &answer { Ok(v) => v.clone(), Err(e) => json!({"error": e}) }}),
                );
                let _ = match answer {
                    Ok(result) => conn.respond(id, result).await,
                    Err(e) => conn.respond_error(id, -32601, e).await,
                };
            }
            Incoming::Garbage(line) => self.info.note_garbage(&self.events, line),
        }
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_user_agent_and_must_be_known() {
        let v = |ua: &str| reported_version(&json!({"userAgent": ua}));
        let ua = "fanout/0.171.0 (Debian 12.0.0; x86_64) xterm (fanout; 0.1.0)";
        assert_eq!(v(ua).map(|v| v.to_string()), Some("0.171.0".into()));
        assert!(v(ua).is_some_and(knows));
        assert!(v("fanout/0.169.0 (Debian)").is_some_and(knows));
        assert!(v("fanout/0.171.4 (Debian)").is_some_and(knows));
        assert!(v("fanout/0.154.0-alpha.2 (x)").is_some_and(knows));
        assert!(!v("fanout/0.172.0 (x)").is_some_and(knows));
        assert!(!v("fanout/1.0.0 (x)").is_some_and(knows));
        assert!(!v("fanout/0.153.4 (x)").is_some_and(knows));
        assert_eq!(reported_version(&json!({"serverInfo": {}})), None);
        assert_eq!(supported_range(), "0.154.x to 0.171.x");
    }
}
