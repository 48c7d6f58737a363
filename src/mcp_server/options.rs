//! Where the MCP server starts from.

use std::path::PathBuf;

/// Where the server starts from.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Default repository and base of relative paths: the server's working directory.
    pub cwd: PathBuf,
    /// fanout's own executable (runs need it for the sandbox supervisor).
    pub self_exe: PathBuf,
}
