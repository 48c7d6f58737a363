//! `fanout mcp` (serve fanout over MCP on stdio) and `fanout mcp-config` (a client's snippet).

use super::args::{McpArgs, McpClient, McpConfigArgs};
use anyhow::Context;

use super::common::EXIT_OK;

/// How long Codex may wait for one fanout tool call: `fanout_wait` blocks up to 300 s.
pub const CODEX_TOOL_TIMEOUT_SEC: u64 = 600;

pub fn serve(a: McpArgs) -> anyhow::Result<i32> {
    let self_exe = std::env::current_exe().context("cannot find fanout's own executable")?;
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let options = crate::mcp_server::ServerOptions { cwd, self_exe };
    match a.http {
        None => crate::mcp_server::serve(
            std::io::BufReader::new(std::io::stdin()),
            std::io::stdout(),
            options,
        )?,
        Some(addr) => {
            let token = token(a.token_file.as_deref())?;
            let http = crate::mcp_server::http::HttpOptions {
                addr,
                token,
                allow_remote: a.allow_remote,
            };
            crate::mcp_server::http::serve(http, options)?
        }
    }
    Ok(EXIT_OK)
}

/// The bearer token of `--http`: from `--token-file`, else the environment.
fn token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let env = crate::mcp_server::http::TOKEN_ENV;
    let token = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the token file {}", f.display()))?,
        None => std::env::var(env).unwrap_or_default(),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        anyhow::bail!(
            "fanout mcp --http needs a bearer token: put one in a file for --token-file, or set {env}"
        );
    }
    if token.len() < 16 {
        anyhow::bail!("the bearer token is too short (at least 16 characters)");
    }
    Ok(token)
}

pub fn config(a: McpConfigArgs) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot find fanout's own executable")?;
    // The snippet outlives this shell: name the binary by its real, absolute path.
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let exe = exe.to_string_lossy().into_owned();
    let text = match &a.http {
        Some(url) => http_snippet(a.client, url),
        None => snippet(a.client, &exe),
    };
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

/// The client side of a `fanout mcp --http` at `url`: the token is read from the client's own
/// environment (FANOUT_MCP_TOKEN), never written into its configuration.
pub fn http_snippet(client: McpClient, url: &str) -> String {
    let env = crate::mcp_server::http::TOKEN_ENV;
    match client {
        McpClient::Claude => {
            let v = serde_json::json!({"mcpServers": {"fanout": {
                "type": "http", "url": url,
                "headers": {"Authorization": format!("Bearer ${{{env}}}")}
            }}});
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            s
        }
        McpClient::Codex => {
            let quoted = toml::Value::String(url.to_string()).to_string();
            format!(
                "[mcp_servers.fanout]\nurl = {quoted}\nbearer_token_env_var = \"{env}\"\nstartup_timeout_sec = 30\n\
                 # fanout_wait blocks up to 300 s per call\ntool_timeout_sec = {CODEX_TOOL_TIMEOUT_SEC}\n"
            )
        }
    }
}
