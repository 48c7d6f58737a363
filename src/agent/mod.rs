/*!
Agent sessions: one running agent per task, behind one interface whatever the protocol.

A session is started once, then given one or more turns: the task's prompt first, then
verification feedback on the same conversation (`codex-reply` for MCP, a new turn on the same
thread for app-server, a re-run with the feedback for `exec`).
*/

pub mod app_server;
pub mod codex;
mod common;
pub mod exec;
pub mod mcp;
pub mod mcp_servers;
pub mod url;

use tokio::time::Instant;

use crate::taskfile::{AgentProfile, Protocol};

pub use common::{
    base_env, check_sandbox, AgentContext, AgentError, AgentInfo, TokenUsage, TurnResult,
    STOP_GRACE,
};

/// A running agent.
pub enum Session {
    Mcp(Box<mcp::McpSession>),
    AppServer(Box<app_server::AppServerSession>),
    Exec(Box<exec::ExecSession>),
}

impl Session {
    /// Starts the agent (for MCP: spawn + initialize + tools/list; for app-server: spawn +
    /// initialize + thread/start). Codex profiles are resolved first: binary, version,
    /// protocol (`auto`), private CODEX_HOME (see [`codex::prepare`]).
    pub async fn start(ctx: AgentContext) -> Result<Session, AgentError> {
        // `codex --version` and the CODEX_HOME copy are blocking file/process work.
        let (ctx, codex) = tokio::task::spawn_blocking(move || codex::prepare(ctx))
            .await
            .map_err(|e| AgentError::Spawn(format!("preparing the agent failed: {e}")))?
            .map_err(|e| AgentError::Spawn(e.to_string()))?;
        let version = codex.map(|c| c.installed.version.to_string());
        match ctx.protocol {
            Protocol::Exec => Ok(Session::Exec(Box::new(exec::ExecSession::new(ctx)))),
            Protocol::Mcp => {
                let mut s = mcp::McpSession::start(ctx).await?;
                if s.info.version.is_none() {
                    s.info.version = version;
                }
                Ok(Session::Mcp(Box::new(s)))
            }
            Protocol::CodexAppServer => Ok(Session::AppServer(Box::new(
                app_server::AppServerSession::start(ctx, version).await?,
            ))),
            Protocol::Auto => Err(AgentError::Spawn(
                "protocol \"auto\" only applies to the Codex CLI (command `codex`)".into(),
            )),
        }
    }

    /// Runs one turn: the first prompt, or feedback on the same conversation.
    pub async fn turn(
        &mut self,
        prompt: &str,
        deadline: Instant,
    ) -> Result<TurnResult, AgentError> {
        match self {
            Session::Mcp(s) => s.turn(prompt, deadline).await,
            Session::AppServer(s) => s.turn(prompt, deadline).await,
            Session::Exec(s) => s.turn(prompt, None, deadline).await,
        }
    }

    /// A feedback round: conversational agents get `feedback` as the next message; an `exec`
    /// agent, which has no conversation, is run again with the task's `prompt` unchanged and
    /// the feedback apart.
    pub async fn feedback(
        &mut self,
        prompt: &str,
        feedback: &str,
        deadline: Instant,
    ) -> Result<TurnResult, AgentError> {
        match self {
            Session::Exec(s) => s.turn(prompt, Some(feedback), deadline).await,
            other => other.turn(feedback, deadline).await,
        }
    }

    pub fn info(&self) -> AgentInfo {
        match self {
            Session::Mcp(s) => s.info.clone(),
            Session::AppServer(s) => s.info.clone(),
            Session::Exec(s) => s.info.clone(),
        }
    }

    /// Stops the agent and everything it started at once (a budget ran out).
    pub async fn stop_now(self) {
        match self {
            Session::Mcp(s) => s.stop_now().await,
            Session::AppServer(s) => s.stop_now().await,
            Session::Exec(_) => {}
        }
    }

    /// Stops the agent and everything it started.
    pub async fn shutdown(self) {
        match self {
            Session::Mcp(s) => s.shutdown().await,
            Session::AppServer(s) => s.shutdown().await,
            Session::Exec(_) => {}
        }
    }
}

/// Built-in agent profiles, usable without an `agents` entry in the task file.
pub fn builtin_profile(name: &str) -> Option<AgentProfile> {
    match name {
        // Protocol `auto`: resolved from `codex --version` when the session starts.
        "codex" => Some(codex::builtin_profile()),
        _ => None,
    }
}
