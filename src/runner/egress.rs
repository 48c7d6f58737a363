//! A task's egress proxy under `--net isolated`: one Unix socket per phase (agent, setup,
//! verify) in the run's owner-only `egress/` folder, each served with that phase's allow-list
//! from the task file's `network`; refusals become warnings of the task (report and terminal).

use std::path::Path;
use std::sync::Arc;

use super::shared::Shared;
use crate::egress::{serve_routes, AllowList, ModelRoute};
use crate::plan::PlannedTask;
use crate::sandbox::EgressLink;

use crate::egress::FORWARDER_PORT as PROXY_PORT;
/// A Unix socket's path must fit in `sun_path` (108 bytes, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Starts the task's proxies; `None` (with a warning) when they cannot listen: the task then
/// has no way out of its namespace at all.
pub(super) fn start(shared: &Arc<Shared>, task: &PlannedTask, index: usize) -> Option<EgressLink> {
    let dir = crate::run_dir::RunDir::new(&shared.run_dir).egress();
    let id = task.id().to_string();
    let net = &task.network;
    let mut agent = None;
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
    for (phase, hosts) in [
        ("agent", net.agent.hosts()),
        ("setup", net.setup.hosts()),
        ("verify", net.verify.hosts()),
    ] {
        let socket = dir.join(format!("{index}.{phase}.sock"));
        match listen(&dir, &socket) {
            Ok(listener) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let route = (phase == "agent").then(|| model.clone()).flatten();
                let claude = (phase == "agent").then(|| anthropic.clone()).flatten();
                let allow = Arc::new(AllowList(hosts));
                tokio::spawn(serve_routes(listener, allow, route, claude, tx));
                let (events, id) = (shared.events.weak(), id.clone());
                tokio::spawn(async move {
                    while let Some(r) = rx.recv().await {
                        events.warn(
                            Some(&id),
                            &format!(
                                "egress refused ({phase}): {}: {}; allow it in the task file's network.{phase}",
                                r.destination, r.reason
                            ),
                        );
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
    agent
}

/// The model route of a Codex agent: to the model API its user configuration names, with the
/// key fanout holds; `None` for other agents (Claude Code agents: not built yet).
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
    let cfg = match home {
        Some(h) => config::read_config(&h.join("config.toml")).map_err(|e| e.to_string())?,
        None => toml::Table::new(),
    };
    let (url, key_var) = config::model_upstream(&cfg, &lookup);
    let key = lookup(&key_var).filter(|k| !k.is_empty());
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
    for k in ["NO_PROXY", "no_proxy"] {
        env.insert(k.into(), String::new());
    }
}
