//! How talking to the verifier can fail.

use crate::jsonrpc::JsonRpcError;

#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("verifier program {0:?} not found")]
    NotFound(String),
    #[error("cannot create {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the verifier: {0}")]
    Spawn(String),
    #[error("the verifier offers no tool {tool:?} (it offers: {offered})")]
    NoTool { tool: String, offered: String },
    #[error("the verifier failed: {0}")]
    Rpc(#[from] JsonRpcError),
    #[error("the verifier is unavailable: {0}")]
    Broken(String),
}
