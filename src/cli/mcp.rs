//! `fanout mcp` (serve fanout over MCP on stdio) and `fanout mcp-config` (a client's snippet).

use super::args::{McpArgs, McpClient, McpConfigArgs};
use anyhow::Context;

use super::common::EXIT_OK;

/// How long Codex may wait for one fanout tool call: `fanout_wait` blocks up to 300 s.
pub const CODEX_TOOL_TIMEOUT_SEC: u64 = 600;

pub fn serve(_a: McpArgs) -> anyhow::Result<i32> {
    let self_exe = std::env::current_exe().context("cannot find fanout's own executable")?;
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    crate::mcp_server::serve(
        std::io::BufReader::new(std::io::stdin()),
        std::io::stdout(),
        crate::mcp_server::ServerOptions { cwd, self_exe },
    )?;
    Ok(EXIT_OK)
}

pub fn config(a: McpConfigArgs) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot find fanout's own executable")?;
    // The snippet outlives this shell: name the binary by its real, absolute path.
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let exe = exe.to_string_lossy().into_owned();
    let text = snippet(a.client, &exe);
    super::out::print(text)?;
    Ok(EXIT_OK)
}

/// The configuration snippet for `client`, starting fanout at `exe`.
pub fn snippet(client: McpClient, exe: &str) -> String {
    match client {
        McpClient::Claude => {
            let v = serde_json::json!({"mcpServers": {"fanout": {
                "type": "stdio", "command": exe, "args": ["mcp"], "env": {}
            }}});
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            s
        }
        McpClient::Codex => {
            // toml quotes the path correctly whatever it holds.
            let quoted = toml::Value::String(exe.to_string()).to_string();
            format!(
                "[mcp_servers.fanout]\ncommand = {quoted}\nargs = [\"mcp\"]\nstartup_timeout_sec = 30\n\
                 # fanout_wait blocks up to 300 s per call\ntool_timeout_sec = {CODEX_TOOL_TIMEOUT_SEC}\n"
            )
        }
    }
}
