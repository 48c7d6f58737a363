//! A task's egress proxy under `--net isolated`: one Unix socket per phase the task has (agent,
//! setup, verify) in the run's owner-only `egress/` folder, each served with that phase's allow-list
//! from the task file's `network`; refusals become `egress_refused` events (the first of each
//! phase and destination) and lines of the task's report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::shared::Shared;
use crate::egress::{serve_routes, AllowList, ModelRoute};
use crate::plan::PlannedTask;
use crate::sandbox::EgressLink;

use crate::egress::FORWARDER_PORT as PROXY_PORT;
/// A Unix socket's path must fit in `sun_path` (108 bytes, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A task's proxies: stopped, and their sockets removed, when dropped (with the task's
/// paths) — else every task's three listeners would stay open until the run ends, and a run
/// of thousands of tasks runs out of file descriptors.
pub(crate) struct Proxies {
    serving: Vec<tokio::task::AbortHandle>,
    sockets: Vec<PathBuf>,
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for h in &self.serving {
            h.abort();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Starts the task's proxies; `None` (with a warning) when they cannot listen: the task then
/// has no way out of its namespace at all.
pub(super) fn start(
    shared: &Arc<Shared>,
    task: &PlannedTask,
    index: usize,
) -> Option<(EgressLink, Proxies)> {
    let dir = crate::run_dir::RunDir::new(&shared.run_dir).egress();
    let id = task.id().to_string();
    let net = &task.network;
    let mut agent = None;
    let mut proxies = Proxies {
        serving: Vec::new(),
        sockets: Vec::new(),
    };
    let model = match net.agent {
        crate::taskfile::network::PhaseNet::Model => model_route(task)
            .map_err(|why| {
                shared
                    .events
                    .warn(Some(&id), &format!("no model route: {why}"))
            })
            .ok()
            .flatten()
            .map(Arc::new),
        _ => None,
    };
    // Pattern 2's `claude-code` server reaches its model through the agent's proxy (issue 19).
    let anthropic = match net.agent {
        crate::taskfile::network::PhaseNet::Model => claude_code_route(shared, task),
        _ => None,
    };
    // A phase the task does not have gets no socket: two inodes and a listener less per task,
    // which count at thousands of tasks (docs/workspaces.md).
    for (phase, hosts, _) in [
        ("agent", net.agent.hosts(), true),
        ("setup", net.setup.hosts(), task.setup.is_some()),
        ("verify", net.verify.hosts(), task.verify.is_some()),
    ]
    .into_iter()
    .filter(|(_, _, runs)| *runs)
    {
        let socket = dir.join(format!("{index}.{phase}.sock"));
        match listen(&dir, &socket) {
            Ok(listener) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let route = (phase == "agent").then(|| model.clone()).flatten();
                let claude = (phase == "agent").then(|| anthropic.clone()).flatten();
                let allow = Arc::new(AllowList(hosts));
                let serving = tokio::spawn(serve_routes(listener, allow, route, claude, tx));
                proxies.serving.push(serving.abort_handle());
                proxies.sockets.push(socket.clone());
                let (events, id) = (shared.events.weak(), id.clone());
                let refusals = shared.egress_refused.clone();
                tokio::spawn(async move {
                    while let Some(r) = rx.recv().await {
                        if let Some(first) = refusals.record(&id, phase, &r) {
                            events.emit(crate::event::EventKind::EgressRefused {
                                task: id.clone(),
                                phase: phase.to_string(),
                                host: first.host,
                                port: first.port,
                                reason: first.reason,
                            });
                        }
                    }
                });
            }
            Err(why) => {
                shared
                    .events
                    .warn(Some(&id), &format!("no egress proxy: {why}"));
                return None;
            }
        }
        if phase == "agent" {
            agent = Some(EgressLink {
                socket,
                port: PROXY_PORT,
            });
        }
    }
    agent.map(|a| (a, proxies))
}

/// The model route of a Codex agent: to the model API its user configuration names, with the
/// key fanout holds (from the environment, else an API key in the user's `auth.json`), or to
/// the ChatGPT backend with the user's ChatGPT login; `None` for other agents (Claude Code
/// agents: not built yet).
fn model_route(task: &PlannedTask) -> Result<Option<ModelRoute>, String> {
    use crate::agent::codex::config;
    use crate::taskfile::Protocol;
    if !matches!(
        task.launch.protocol,
        Protocol::Mcp | Protocol::CodexAppServer
    ) {
        return Ok(None);
    }
    let env = &task.launch.env;
    let lookup = |n: &str| env.get(n).cloned().or_else(|| std::env::var(n).ok());
    let home = config::user_codex_home(env.get("CODEX_HOME").map(String::as_str));
    let cfg = match &home {
        Some(h) => config::read_config(&h.join("config.toml")).map_err(|e| e.to_string())?,
        None => toml::Table::new(),
    };
    let (url, key_var) = config::model_upstream(&cfg, &lookup);
    let key = lookup(&key_var).filter(|k| !k.is_empty());
    let auth_path = home.map(|h| h.join("auth.json"));
    let auth: Option<serde_json::Value> = auth_path
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    if config::uses_chatgpt_login(&cfg, key.is_some(), auth.as_ref()) {
        let base = config::chatgpt_base_url(&cfg);
        let mut route = ModelRoute::to(crate::egress::MODEL_PREFIX, &base, None)?;
        route.login = auth_path
            .as_deref()
            .and_then(crate::egress::chatgpt::Login::shared);
        return Ok(Some(route));
    }
    let key = key.or_else(|| {
        auth.as_ref()?
            .get("OPENAI_API_KEY")?
            .as_str()
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    });
    if let Some(k) = &key {
        crate::redact::register(k);
    }
    ModelRoute::to(
        crate::egress::MODEL_PREFIX,
        &url,
        key.map(|k| format!("Bearer {k}")),
    )
    .map(Some)
}

/// The Anthropic route of the agent's `claude-code` MCP server, if it has one (a warning
/// when it cannot be made: the server's model calls then fail; its file tools still work).
fn claude_code_route(
    shared: &Arc<Shared>,
    task: &PlannedTask,
) -> Option<Arc<crate::egress::AnthropicRoute>> {
    let env = &task.launch.env;
    let lookup = |n: &str| env.get(n).cloned().or_else(|| std::env::var(n).ok());
    match crate::agent::mcp_servers::claude_code_route(&task.profile.mcp_servers, &lookup)? {
        Ok(route) => Some(Arc::new(route)),
        Err(why) => {
            let id = task.id().to_string();
            let why = format!("no Anthropic route for the claude-code server: {why}");
            shared.events.warn(Some(&id), &why);
            None
        }
    }
}

fn listen(dir: &Path, socket: &Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::DirBuilderExt;
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "{}: path too long for a Unix socket",
            socket.display()
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(socket);
    tokio::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))
}

/// The variables that send a task's HTTP(S) clients to the proxy.
pub(super) fn proxy_env(env: &mut std::collections::BTreeMap<String, String>) {
    let url = format!("http://127.0.0.1:{PROXY_PORT}");
    for k in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ] {
        env.insert(k.into(), url.clone());
    }
    // The namespace's loopback is the task's own (the proxy's model route among it): clients
    // reach it directly. Through the proxy, a websocket to the model route would be a
    // `CONNECT 127.0.0.1:3128`, refused.
    for k in ["NO_PROXY", "no_proxy"] {
        env.insert(k.into(), "127.0.0.1,localhost,::1".into());
    }
}
