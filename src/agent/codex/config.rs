//! Codex's configuration: the user's CODEX_HOME and config.toml, fanout's overrides, the
//! model provider's ports.

use super::error::CodexError;
use crate::agent::url::url_port;
use std::path::{Path, PathBuf};

/// The user's Codex home: `$CODEX_HOME`, else `~/.codex`.
pub fn user_codex_home(env_override: Option<&str>) -> Option<PathBuf> {
    if let Some(h) = env_override.filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    if let Some(h) = std::env::var_os("CODEX_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".codex"))
}

/// Reads a `config.toml`; a missing file is an empty table.
pub fn read_config(path: &Path) -> Result<toml::Table, CodexError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map_err(|e| CodexError::BadConfig {
                path: path.display().to_string(),
                message: e.message().to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(CodexError::BadConfig {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// The settings fanout needs in every task's `config.toml`.
pub fn fanout_overrides(confined: bool) -> toml::Table {
    let mut text = String::from(
        r#"
# Fail in bounded time when the model endpoint is down (the default retries for ever).
[features]
unbounded_connection_retries = false
# Codex 0.169 syncs plugins over the network at startup.
plugins = false

# Commands Codex runs must not inherit API keys.
[shell_environment_policy]
inherit = "core"
"#,
    );
    if confined {
        // Nobody answers approvals, and Codex's own sandbox cannot start inside Landlock.
        text.insert_str(
            0,
            "approval_policy = \"never\"\nsandbox_mode = \"danger-full-access\"\n",
        );
    }
    text.parse::<toml::Table>().unwrap_or_default()
}

/// Merges `over` into `base`, table by table; `over` wins on every other value.
pub fn merge_toml(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_toml(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// TCP ports of the model providers a config names (the sandbox must let Codex reach them).
pub fn provider_ports(config: &toml::Table) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut urls: Vec<&str> = Vec::new();
    if let Some(toml::Value::Table(providers)) = config.get("model_providers") {
        for p in providers.values() {
            if let Some(url) = p.get("base_url").and_then(toml::Value::as_str) {
                urls.push(url);
            }
        }
    }
    if let Some(url) = config.get("openai_base_url").and_then(toml::Value::as_str) {
        urls.push(url);
    }
    for url in urls {
        if let Some(port) = url_port(url) {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    ports
}
