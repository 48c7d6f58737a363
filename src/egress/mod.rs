//! fanout's egress proxy: the only way out of a task's network namespace. It listens on a Unix
//! socket outside the sandbox (a forwarder inside the namespace, `sandbox/netns.rs`, relays
//! 127.0.0.1:<port> to it) and answers HTTP `CONNECT host:port` for the destinations the phase
//! allows by name; everything else gets `403` and is reported as a [`Refusal`].
//!
//! Not yet: forwarding model traffic with fanout's credentials injected (docs/sandbox.md).

mod allow;
mod connect;

pub use allow::{AllowList, HostPort};
pub use connect::{serve, Refusal};
