/*!
The network of a Claude Code question (review, diagnosis) when the run isolates the network:
a namespace of its own whose only way out is the Anthropic route of an egress proxy fanout
starts for that question. Claude Code gets `ANTHROPIC_BASE_URL` at the proxy and a placeholder
key; the proxy adds the real credential towards the Messages API; anything else it asks for is
refused and written to the question's stderr log.

Where no namespace can be made here (probed once per run, the first time a question needs
one), or the route cannot carry the upstream, the question goes out as before — the real key
in its environment, the endpoint's port by Landlock — and its stderr log says why.
*/

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::judges::{Judge, Judges};
use crate::egress::{
    anthropic_url, serve_routes, AllowList, AnthropicRoute, Refusal, ANTHROPIC_KEY_PLACEHOLDER,
    FORWARDER_PORT,
};
use crate::sandbox::{EgressLink, NetPolicy, NetworkConfinement};

/// How one question reaches the model.
pub struct QuestionNet {
    pub net: NetPolicy,
    pub isolate_net: bool,
    pub egress: Option<EgressLink>,
    /// Why the question is not confined to the proxy although the run isolates the network.
    pub warning: Option<String>,
    proxy: Option<Proxy>,
}

/// A question's egress proxy: stopped, its socket removed, when dropped.
struct Proxy {
    serving: tokio::task::JoinHandle<()>,
    socket: PathBuf,
    refused: tokio::sync::mpsc::UnboundedReceiver<Refusal>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.serving.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl QuestionNet {
    /// What the proxy refused so far, one line each, `purpose` naming the question.
    pub fn refusals(&mut self, purpose: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = self.proxy.as_mut() {
            while let Ok(r) = p.refused.try_recv() {
                out.push(format!(
                    "fanout: egress refused ({purpose}): {}: {}",
                    r.destination, r.reason
                ));
            }
        }
        out
    }
}

/// Decides the question's network and, behind the proxy, puts the placeholder endpoint and key
/// into `env` (which holds today's real ones from fanout's environment).
pub async fn for_question(judges: &Judges, env: &mut BTreeMap<String, String>) -> QuestionNet {
    let direct = |env: &BTreeMap<String, String>, isolate_net, warning| QuestionNet {
        net: NetPolicy::ConnectPorts(vec![endpoint_port(env)]),
        isolate_net,
        egress: None,
        warning,
        proxy: None,
    };
    if !judges.isolates_net() {
        return direct(env, false, None);
    }
    if !namespace_works(judges).await {
        // The supervisor tries again and says so in the log; the port rule applies.
        return direct(env, true, None);
    }
    let route = AnthropicRoute::from_env(&|n| std::env::var(n).ok());
    let proxy = route.and_then(|r| start_proxy(judges, r));
    let proxy = match proxy {
        Ok(p) => p,
        Err(why) => {
            let why = format!("fanout: warning: Claude Code talks to its model directly, with the key in its environment: no Anthropic route ({why})");
            return direct(env, false, Some(why));
        }
    };
    env.remove("ANTHROPIC_AUTH_TOKEN");
    env.insert("ANTHROPIC_BASE_URL".into(), anthropic_url());
    env.insert("ANTHROPIC_API_KEY".into(), ANTHROPIC_KEY_PLACEHOLDER.into());
    // Other https goes to the proxy too, which refuses it (and says so); the route is direct.
    let proxy_url = format!("http://127.0.0.1:{FORWARDER_PORT}");
    for k in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        env.insert(k.into(), proxy_url.clone());
    }
    for k in ["NO_PROXY", "no_proxy"] {
        env.insert(k.into(), "127.0.0.1,localhost".into());
    }
    QuestionNet {
        net: NetPolicy::ConnectPorts(vec![FORWARDER_PORT]),
        isolate_net: true,
        egress: Some(EgressLink {
            socket: proxy.socket.clone(),
            port: FORWARDER_PORT,
        }),
        warning: None,
        proxy: Some(proxy),
    }
}

/// Listens on a fresh socket of the judges' egress folder and serves the Anthropic route only.
fn start_proxy(judges: &Judges, route: AnthropicRoute) -> Result<Proxy, String> {
    let socket = judges.egress_socket();
    if socket.as_os_str().len() > 107 {
        return Err(format!("{}: too long for a Unix socket", socket.display()));
    }
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    let (tx, refused) = tokio::sync::mpsc::unbounded_channel();
    let serving = tokio::spawn(serve_routes(
        listener,
        Arc::new(AllowList::default()),
        None,
        Some(Arc::new(route)),
        tx,
    ));
    Ok(Proxy {
        serving,
        socket,
        refused,
    })
}

/// The one TCP port Claude Code may connect to directly: the endpoint's (443 without one).
fn endpoint_port(env: &BTreeMap<String, String>) -> u16 {
    env.get("ANTHROPIC_BASE_URL")
        .and_then(|u| crate::agent::url::url_port(u))
        .unwrap_or(443)
}

/// Whether a judge gets a network namespace here: `true` started in one, asked once per run.
async fn namespace_works(judges: &Judges) -> bool {
    if let Some(known) = judges.netns_works.get() {
        return *known;
    }
    let works = probe(judges).await;
    *judges.netns_works.get_or_init(|| works)
}

async fn probe(judges: &Judges) -> bool {
    let Ok(program) = crate::which::find_program("true") else {
        return false;
    };
    let Ok(home) = judges.private_dir("netns-probe") else {
        return false;
    };
    // In the probe's own folder: two questions may probe at once.
    let (stderr_log, status_file) = (
        home.path().join("probe.log"),
        home.path().join("probe.json"),
    );
    let spec = judges.spawn_spec(Judge {
        program: program.display().to_string(),
        args: Vec::new(),
        cwd: home.path().to_path_buf(),
        home: home.path(),
        readable: Vec::new(),
        net: NetPolicy::None,
        isolate_net: true,
        egress: None,
        env: BTreeMap::new(),
        stderr_log,
        status_file: status_file.clone(),
    });
    let Ok(mut proc) = crate::process::AgentProcess::spawn(&spec) else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    if proc.wait_until(deadline).await.is_none() {
        proc.terminate(std::time::Duration::ZERO).await;
        return false;
    }
    crate::sandbox::read_report(&status_file)
        .is_ok_and(|r| r.network == Some(NetworkConfinement::Namespace))
}
