/*!
`fanout mcp`: fanout itself as an MCP server over stdio ([`stdio`]) or streamable HTTP
([`http`]), so an orchestrating agent (Claude
Code, Codex) can start runs, wait for them, look at their diffs, cancel and merge them.

Newline-delimited JSON-RPC 2.0. Protocol versions `2025-06-18` (preferred), `2025-03-26` and
`2024-11-05`; a client asking for another one gets `2025-06-18`. Batches are taken after
negotiating `2025-03-26`, the one revision that has them. JSON-RPC errors are kept for
protocol problems (malformed JSON -32700, not a request -32600, unknown method -32601, unknown
tool or arguments that do not fit the tool's schema -32602); everything else a tool can fail at
is a result with `isError: true`, so the model sees it.

Every `tools/call` runs on its own thread (`fanout_wait` blocks for minutes); runs run on
threads of their own ([`runs`]). When stdin closes — the client is gone — or a signal arrives,
every run is asked to stop at its next safe point, the server waits for them (they end
`interrupted`, resumable with `fanout resume`) and returns.
*/

mod dispatch;
pub mod http;
mod options;
mod protocol;
mod runs;
mod session;
mod signals;
mod stdio;
mod tool_list;
mod tools;
mod wire;

pub use options::ServerOptions;
pub use protocol::*;
pub use runs::Registry;
pub use stdio::serve;
pub use wire::{BadParams, Out};
