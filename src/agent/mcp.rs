/*!
The `mcp` protocol: fanout as an MCP client of a Codex-like server over stdio
(`codex mcp-server` up to Codex 0.153, or our fake agent).

initialize → notifications/initialized → tools/list (`crate::mcp::handshake`) → tools/call(tool, arguments + prompt + cwd).
Follow-ups go to `codex-reply` with the thread id when the server offers it. Every notification
during a call is appended to the task's event log; `codex/event` messages also feed the
report (commands run, token usage, last agent message).
*/

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::common::{
    check_sandbox, AgentContext, AgentError, AgentInfo, TokenUsage, TurnResult, STOP_GRACE,
};
use crate::eventlog::EventLog;
use crate::jsonrpc::{AsyncIncomingHandler, Connection, Incoming, JsonRpcError};
use crate::process::AgentProcess;

pub use crate::mcp::{tool_names, PROTOCOL_VERSION};

pub struct McpSession {
    ctx: AgentContext,
    proc: AgentProcess,
    conn: Connection,
    reply_tool: Option<String>,
    pub info: AgentInfo,
    turns: u32,
}

impl McpSession {
    pub async fn start(ctx: AgentContext) -> Result<McpSession, AgentError> {
        let mut proc = AgentProcess::spawn(&ctx.spawn)
            .map_err(|e| AgentError::Spawn(crate::error_chain(&e)))?;
        let (Some(stdout), Some(stdin)) = (proc.stdout.take(), proc.stdin.take()) else {
            return Err(AgentError::Spawn("agent stdio was not piped".into()));
        };
        let conn = Connection::new(stdout, stdin, 256);
        let mut session = McpSession {
            info: AgentInfo {
                protocol: "mcp".into(),
                ..AgentInfo::default()
            },
            ctx,
            proc,
            conn,
            reply_tool: None,
            turns: 0,
        };
        let startup = Duration::from_secs_f64(session.ctx.profile.startup_timeout_sec);
        let deadline = Instant::now() + startup;
        match session.handshake(deadline).await {
            Ok(()) => {
                check_sandbox(&session.proc.status_file, &mut session.info)?;
                Ok(session)
            }
            Err(e) => Err(session.fail(e, startup.as_secs_f64(), true).await),
        }
    }

    async fn handshake(&mut self, deadline: Instant) -> Result<(), JsonRpcError> {
        let events = self.ctx.events.clone();
        let mut handler = Handler::new(events.clone(), self.ctx.meter.clone(), &mut self.info);
        let hello = crate::mcp::handshake(
            &mut self.conn,
            json!({"elicitation": {}}),
            deadline,
            &mut handler,
            |result| events.record("initialized", json!({"result": result})),
        )
        .await?;
        if let Some(server) = hello.init.get("serverInfo") {
            self.info.version = server
                .get("version")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        let wanted = &self.ctx.profile.tool;
        if !hello.offers(wanted) {
            return Err(JsonRpcError::Remote {
                method: "tools/list".into(),
                code: 0,
                message: format!(
                    "the server has no tool {wanted:?} (it offers: {})",
                    if hello.tools.is_empty() {
                        "none".to_string()
                    } else {
                        hello.tools.join(", ")
                    }
                ),
                data: None,
            });
        }
        let reply = format!("{wanted}-reply");
        if hello.offers(&reply) {
            self.reply_tool = Some(reply);
        }
        Ok(())
    }

    pub async fn turn(
        &mut self,
        prompt: &str,
        deadline: Instant,
    ) -> Result<TurnResult, AgentError> {
        self.turns += 1;
        let (tool, arguments) = match (&self.reply_tool, &self.info.thread_id, self.turns > 1) {
            (Some(reply), Some(thread), true) => {
                (reply.clone(), json!({"threadId": thread, "prompt": prompt}))
            }
            _ => {
                let mut args: Map<String, Value> = self.ctx.profile.arguments.clone();
                args.insert("prompt".into(), json!(prompt));
                args.insert("cwd".into(), json!(self.ctx.worktree.display().to_string()));
                (self.ctx.profile.tool.clone(), Value::Object(args))
            }
        };
        self.ctx
            .events
            .record("tool_call", json!({"tool": tool, "turn": self.turns}));
        let secs = deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let result = async {
            let req = self
                .conn
                .start_request("tools/call", json!({"name": tool, "arguments": arguments}))
                .await?;
            let id = req.id;
            let mut handler = Handler::new(
                self.ctx.events.clone(),
                self.ctx.meter.clone(),
                &mut self.info,
            );
            let r = self.conn.wait(req, deadline, &mut handler).await;
            if matches!(r, Err(JsonRpcError::Timeout { .. })) {
                // codex aborts the turn on cancel but never answers the call: kill it afterwards.
                let _ = self
                    .conn
                    .notify(
                        "notifications/cancelled",
                        json!({"requestId": id, "reason": "fanout: tool_timeout_sec expired"}),
                    )
                    .await;
            }
            r
        }
        .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e, secs, false).await),
        };
        let structured = result.get("structuredContent");
        if let Some(thread) = structured
            .and_then(|s| s.get("threadId").or_else(|| s.get("conversationId")))
            .and_then(Value::as_str)
        {
            self.info.thread_id = Some(thread.to_string());
        }
        let text = structured
            .and_then(|s| s.get("content"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| content_text(&result));
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            return Err(AgentError::Reported(text.unwrap_or_else(|| {
                "the tool call failed without a message".into()
            })));
        }
        if text.is_some() {
            self.info.last_message = text.clone();
        }
        Ok(TurnResult { message: text })
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

fn content_text(result: &Value) -> Option<String> {
    let parts: Vec<&str> = result
        .get("content")?
        .as_array()?
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// Logs traffic during a call and answers the server's own requests so nothing blocks.
struct Handler<'a> {
    events: EventLog,
    /// The session's running total, for budgets watched while the call runs.
    meter: crate::usage::meter::Meter,
    info: &'a mut AgentInfo,
}

impl<'a> Handler<'a> {
    fn new(events: EventLog, meter: crate::usage::meter::Meter, info: &'a mut AgentInfo) -> Self {
        Handler {
            events,
            meter,
            info,
        }
    }
}

impl AsyncIncomingHandler for &mut Handler<'_> {
    async fn handle(&mut self, conn: &Connection, msg: Incoming) {
        match msg {
            Incoming::Notification { method, params } => {
                self.info.notifications += 1;
                if method == "codex/event" {
                    absorb_codex_event(self.info, &params);
                    if let Some(u) = &self.info.usage {
                        self.meter.set((**u).clone());
                    }
                }
                self.events
                    .record("notification", json!({"method": method, "params": params}));
            }
            Incoming::Request { id, method, params } => {
                // fanout runs agents unattended: approvals are denied (the profile should use
                // approval-policy "never"), pings answered, anything else refused.
                self.events.record(
                    "server_request",
                    json!({"id": id, "method": method, "params": params}),
                );
                let _ = match method.as_str() {
                    "ping" => conn.respond(id, json!({})).await,
                    "elicitation/create" => {
                        conn.respond(id, json!({"action": "decline", "decision": "denied"}))
                            .await
                    }
                    _ => {
                        conn.respond_error(id, -32601, "method not supported by fanout")
                            .await
                    }
                };
            }
            Incoming::Garbage(line) => self.info.note_garbage(&self.events, line),
        }
    }
}

/// Picks report facts out of a `codex/event` notification.
pub fn absorb_codex_event(info: &mut AgentInfo, params: &Value) {
    let Some(msg) = params.get("msg") else { return };
    match msg.get("type").and_then(Value::as_str) {
        Some("exec_command_begin") => info.commands_run += 1,
        Some("agent_message") => {
            if let Some(m) = msg.get("message").and_then(Value::as_str) {
                info.last_message = Some(m.to_string());
            }
        }
        Some("token_count") => {
            let usage = msg.get("info").and_then(|i| i.get("total_token_usage"));
            if let Some(usage) = usage.and_then(crate::usage::read::codex_snake_case) {
                info.tokens = Some(Box::new(TokenUsage {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    total_tokens: usage.total_tokens,
                }));
                info.usage = Some(Box::new(usage));
            }
        }
        Some("session_configured") => {
            if let Some(m) = msg.get("model").and_then(Value::as_str) {
                info.model = Some(m.to_string());
            }
            if let Some(t) = msg.get("session_id").and_then(Value::as_str) {
                info.thread_id.get_or_insert_with(|| t.to_string());
            }
        }
        _ => {}
    }
}
