/*!
The client side of an MCP stdio handshake, shared by `mcp` agents (`agent::mcp`) and the
read-back verifier (`verify::readback`): `initialize` → `notifications/initialized` →
`tools/list`. What to do with the offered tools is the caller's business.
*/

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::jsonrpc::{AsyncIncomingHandler, Connection, JsonRpcError};

/// The MCP protocol version fanout asks for; the server's answer is accepted as it is.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// What the server said during the handshake.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The `initialize` result as the server sent it.
    pub init: Value,
    /// The tool names of the `tools/list` result.
    pub tools: Vec<String>,
}

impl Hello {
    /// A string field of `serverInfo` (`name`, `version`), cut to 200 bytes: it is the peer's.
    pub fn server_info(&self, key: &str) -> Option<String> {
        self.init
            .get("serverInfo")
            .and_then(|i| i.get(key))
            .and_then(Value::as_str)
            .map(|s| crate::jsonrpc::truncate(s, 200))
    }

    /// Whether `tools/list` offered `tool`.
    pub fn offers(&self, tool: &str) -> bool {
        self.tools.iter().any(|n| n == tool)
    }
}

/// Runs the handshake until `deadline`. `capabilities` are the client's; everything the server
/// sends meanwhile goes to `handler`; `on_initialize` sees the `initialize` result before
/// `notifications/initialized` is sent (so a log keeps the server's order).
pub async fn handshake<H>(
    conn: &mut Connection,
    capabilities: Value,
    deadline: Instant,
    handler: &mut H,
    on_initialize: impl FnOnce(&Value) + Send,
) -> Result<Hello, JsonRpcError>
where
    H: Send,
    for<'h> &'h mut H: AsyncIncomingHandler,
{
    let init = conn
        .start_request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": capabilities,
                "clientInfo": {"name": "fanout", "version": env!("CARGO_PKG_VERSION")},
            }),
        )
        .await?;
    let init = conn.wait(init, deadline, &mut *handler).await?;
    on_initialize(&init);
    conn.notify("notifications/initialized", json!({})).await?;
    let list = conn.start_request("tools/list", json!({})).await?;
    let tools = conn.wait(list, deadline, &mut *handler).await?;
    Ok(Hello {
        tools: tool_names(&tools),
        init,
    })
}

/// The tool names of a `tools/list` result.
pub fn tool_names(list: &Value) -> Vec<String> {
    list.get("tools")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_and_server_info() {
        let hello = Hello {
            init: json!({"serverInfo": {"name": "claude", "version": "2.1.332"}}),
            tools: tool_names(&json!({"tools": [{"name": "Read"}, {"name": "Edit"}, {"x": 1}]})),
        };
        assert_eq!(hello.tools, ["Read", "Edit"]);
        assert!(hello.offers("Read") && !hello.offers("Write"));
        assert_eq!(hello.server_info("version").as_deref(), Some("2.1.332"));
        assert_eq!(hello.server_info("title"), None);
        assert!(tool_names(&json!({"tools": "nope"})).is_empty());
    }
}
