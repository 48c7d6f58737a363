//! fanout's egress proxy: the only way out of a task's network namespace. It listens on a Unix
//! socket outside the sandbox (a forwarder inside the namespace, `sandbox/netns.rs`, relays
//! 127.0.0.1:<port> to it) and answers HTTP `CONNECT host:port` for the destinations the phase
//! allows by name; everything else gets `403` and is reported as a [`Refusal`].
//!
//! The model route ([`ModelRoute`]) forwards the agent's model requests to the real upstream
//! with fanout's credential injected, over TLS to https upstreams ([`upstream`]).

mod allow;
mod anthropic;
pub mod chatgpt;
mod connect;
mod http1;
mod model;
mod upstream;

pub use allow::{AllowList, HostPort};
pub use connect::{serve, serve_routes, serve_with, Refusal};
pub use model::ModelRoute;
// Claude Code's Messages API route (issue 19).
pub use anthropic::{
    anthropic_url, AnthropicRoute, ANTHROPIC_DEFAULT_URL, ANTHROPIC_KEY_PLACEHOLDER,
    ANTHROPIC_PREFIX,
};

/// The port the forwarder takes inside each task's namespace (`HTTPS_PROXY` points there).
pub const FORWARDER_PORT: u16 = 3128;
/// The model route's path prefix: agents' model base URL is `http://127.0.0.1:3128/model`.
pub const MODEL_PREFIX: &str = "/model";

/// The model base URL a sandboxed agent is given.
pub fn model_url() -> String {
    format!("http://127.0.0.1:{FORWARDER_PORT}{MODEL_PREFIX}")
}
