//! What every transport of `fanout mcp` shares: the protocol versions, JSON-RPC error codes
//! and the server's own errors.

/// Protocol versions this server speaks, preferred first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP's "resource not found".
pub const RESOURCE_NOT_FOUND: i64 = -32002;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read the client's messages")]
    Read(#[source] std::io::Error),
    #[error("cannot start the server's threads")]
    Thread(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}
