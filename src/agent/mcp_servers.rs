/*!
MCP servers a Codex agent may use, written into the task's private `config.toml` as
`[mcp_servers.NAME]` tables (Codex's own field names: `command`, `args`, `env`, `env_vars`,
`startup_timeout_sec`, `tool_timeout_sec`, `enabled_tools`, `enabled`; for a server reached by
URL `url`, `bearer_token_env_var`, `http_headers`).

The built-in `claude-code` entry runs Claude Code's `claude mcp serve`, so a Codex agent can
consult Claude Code (its `Read`, `Grep`, … tools). Codex starts the server as its own child,
so it runs inside the task's sandbox like everything else the agent starts: it may write only
the worktree and the task's scratch folder (its `CLAUDE_CONFIG_DIR` lives there).

Codex gives an MCP server only a small default environment plus what its table names, so the
Anthropic endpoint and key are passed by *name* (`env_vars`): their values stay in Codex's
process environment and are never written to the config file. Commands Codex runs do not see
them (`shell_environment_policy.inherit = "core"`).

Behind fanout's egress proxy ([`behind_proxy`]) the server holds neither: its endpoint is the
proxy's Anthropic route (inside the task's network namespace) and its key a placeholder, both
written into its table; the proxy adds the real credential ([`claude_code_route`]).
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::taskfile::{McpServerSpec, CLAUDE_CODE_SERVER};

/// Environment variables of fanout passed through to the built-in `claude-code` server.
pub const CLAUDE_PASS_THROUGH: &[&str] = &["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"];

/// Settings Claude Code needs to serve tools quietly inside a sandbox.
pub const CLAUDE_ENV: &[(&str, &str)] = &[
    ("CLAUDE_CODE_FORK_SUBAGENT", "1"),
    ("CLAUDE_CODE_DISABLE_BACKGROUND_TASKS", "1"),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
];

/// Claude Code can take a while to start on a loaded machine (Node, then its own init).
const CLAUDE_STARTUP_SEC: f64 = 60.0;
const CLAUDE_TOOL_SEC: f64 = 300.0;

#[derive(Debug, thiserror::Error)]
pub enum McpServersError {
    #[error("mcp_servers.{name}: cannot find Claude Code ({why}); install it with `npm install -g @anthropic-ai/claude-code` or set the entry's `command`")]
    ClaudeNotFound { name: String, why: String },
    #[error("mcp_servers.{name}: bearer_token_env_var names {var}, which is not set in fanout's environment")]
    NoToken { name: String, var: String },
    #[error("mcp_servers.{name}: cannot create {path}")]
    Dir {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent's `config.toml` and process need for its MCP servers.
#[derive(Debug, Default)]
pub struct McpSetup {
    /// `{"mcp_servers": {NAME: {…}}}`, to merge into the config.
    pub config: toml::Table,
    /// Variables Codex's own process must carry (passed on to servers by name).
    pub env: BTreeMap<String, String>,
    /// TCP ports the sandbox must open (a non-443 Anthropic endpoint).
    pub ports: Vec<u16>,
    /// The servers written, for the event log.
    pub names: Vec<String>,
}

/// The private Claude Code configuration folder of a task.
pub fn claude_config_dir(scratch: &Path) -> PathBuf {
    scratch.join("claude-config")
}

/// Builds the `mcp_servers` tables. `lookup` reads fanout's environment (the pass-through).
pub fn build(
    servers: &BTreeMap<String, McpServerSpec>,
    scratch: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<McpSetup, McpServersError> {
    let mut setup = McpSetup::default();
    let mut tables = toml::Table::new();
    for (name, spec) in servers {
        let table = if name == CLAUDE_CODE_SERVER {
            claude_code(name, spec, scratch, lookup, &mut setup)?
        } else {
            if let Some(url) = &spec.url {
                by_url(name, url, spec, lookup, &mut setup)?;
            }
            plain(spec)
        };
        tables.insert(name.clone(), toml::Value::Table(table));
        setup.names.push(name.clone());
    }
    if !tables.is_empty() {
        setup
            .config
            .insert("mcp_servers".into(), toml::Value::Table(tables));
    }
    Ok(setup)
}

/// A server reached by URL: its port opened in the sandbox (443 always is), and its bearer
/// token handed to Codex's process by name (Codex reads `bearer_token_env_var` from its own
/// environment, which fanout keeps small).
fn by_url(
    name: &str,
    url: &str,
    spec: &McpServerSpec,
    lookup: &dyn Fn(&str) -> Option<String>,
    setup: &mut McpSetup,
) -> Result<(), McpServersError> {
    setup.ports.extend(non_https_port(url));
    if let Some(var) = &spec.bearer_token_env_var {
        let token =
            lookup(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| McpServersError::NoToken {
                    name: name.to_string(),
                    var: var.clone(),
                })?;
        crate::redact::register(&token);
        setup.env.insert(var.clone(), token);
    }
    Ok(())
}

fn plain(spec: &McpServerSpec) -> toml::Table {
    let mut t = toml::Table::new();
    if let Some(c) = &spec.command {
        t.insert("command".into(), c.clone().into());
    }
    if let Some(u) = &spec.url {
        t.insert("url".into(), u.clone().into());
    }
    if let Some(v) = &spec.bearer_token_env_var {
        t.insert("bearer_token_env_var".into(), v.clone().into());
    }
    if !spec.http_headers.is_empty() {
        t.insert("http_headers".into(), env_table(&spec.http_headers));
    }
    if let Some(a) = &spec.args {
        t.insert("args".into(), strings(a));
    }
    if !spec.env.is_empty() {
        t.insert("env".into(), env_table(&spec.env));
    }
    if let Some(s) = spec.startup_timeout_sec {
        t.insert("startup_timeout_sec".into(), s.into());
    }
    if let Some(s) = spec.tool_timeout_sec {
        t.insert("tool_timeout_sec".into(), s.into());
    }
    if let Some(tools) = &spec.enabled_tools {
        t.insert("enabled_tools".into(), strings(tools));
    }
    if let Some(e) = spec.enabled {
        t.insert("enabled".into(), e.into());
    }
    t
}

fn claude_code(
    name: &str,
    spec: &McpServerSpec,
    scratch: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    setup: &mut McpSetup,
) -> Result<toml::Table, McpServersError> {
    let command = spec.command.clone().unwrap_or_else(|| "claude".into());
    // An absolute path: Codex's server environment has a minimal PATH.
    let program =
        crate::which::find_program(&command).map_err(|e| McpServersError::ClaudeNotFound {
            name: name.to_string(),
            why: e.to_string(),
        })?;
    let program = std::fs::canonicalize(&program).unwrap_or(program);
    let config_dir = claude_config_dir(scratch);
    std::fs::create_dir_all(&config_dir).map_err(|source| McpServersError::Dir {
        name: name.to_string(),
        path: config_dir.display().to_string(),
        source,
    })?;
    let mut env: BTreeMap<String, String> = CLAUDE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("CLAUDE_CONFIG_DIR".into(), config_dir.display().to_string());
    env.extend(spec.env.clone());
    let mut pass = Vec::new();
    for var in CLAUDE_PASS_THROUGH {
        // The entry's own `env` wins over the pass-through.
        if env.contains_key(*var) {
            continue;
        }
        if let Some(v) = lookup(var).filter(|v| !v.is_empty()) {
            if var.ends_with("_KEY") {
                crate::redact::register(&v);
            }
            if *var == "ANTHROPIC_BASE_URL" {
                setup.ports.extend(non_https_port(&v));
            }
            setup.env.insert(var.to_string(), v);
            pass.push(var.to_string());
        }
    }
    if let Some(url) = env.get("ANTHROPIC_BASE_URL") {
        setup.ports.extend(non_https_port(url));
    }
    let full = McpServerSpec {
        command: Some(program.display().to_string()),
        args: Some(
            spec.args
                .clone()
                .unwrap_or_else(|| vec!["mcp".into(), "serve".into()]),
        ),
        env,
        startup_timeout_sec: spec.startup_timeout_sec.or(Some(CLAUDE_STARTUP_SEC)),
        tool_timeout_sec: spec.tool_timeout_sec.or(Some(CLAUDE_TOOL_SEC)),
        enabled_tools: spec.enabled_tools.clone(),
        enabled: spec.enabled,
        ..McpServerSpec::default()
    };
    let mut t = plain(&full);
    if !pass.is_empty() {
        t.insert("env_vars".into(), strings(&pass));
    }
    Ok(t)
}

/// Under fanout's egress proxy: the `claude-code` server's endpoint is the proxy's Anthropic
/// route and its key a placeholder; the real ones stay out of Codex's environment.
pub fn behind_proxy(setup: &mut McpSetup) {
    let table = setup
        .config
        .get_mut("mcp_servers")
        .and_then(|s| s.get_mut(CLAUDE_CODE_SERVER))
        .and_then(toml::Value::as_table_mut);
    let Some(table) = table else {
        return;
    };
    table.remove("env_vars");
    let env = table
        .entry("env")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(env) = env.as_table_mut() {
        env.remove("ANTHROPIC_AUTH_TOKEN");
        env.insert(
            "ANTHROPIC_BASE_URL".into(),
            crate::egress::anthropic_url().into(),
        );
        env.insert(
            "ANTHROPIC_API_KEY".into(),
            crate::egress::ANTHROPIC_KEY_PLACEHOLDER.into(),
        );
    }
    for var in CLAUDE_PASS_THROUGH {
        setup.env.remove(*var);
    }
}

/// The Anthropic route the proxy needs for the built-in `claude-code` server of `servers`
/// (`None`: no such server): to the endpoint and with the key its entry's `env` names, else
/// fanout's environment's (`lookup`).
pub fn claude_code_route(
    servers: &BTreeMap<String, McpServerSpec>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<Result<crate::egress::AnthropicRoute, String>> {
    let spec = servers
        .get(CLAUDE_CODE_SERVER)
        .filter(|s| s.enabled != Some(false))?;
    let env = |n: &str| spec.env.get(n).cloned().or_else(|| lookup(n));
    Some(crate::egress::AnthropicRoute::from_env(&env))
}

/// The port of a URL when it is not 443 (443 is always open).
fn non_https_port(url: &str) -> Option<u16> {
    super::url::url_port(url).filter(|p| *p != 443)
}

fn strings(v: &[String]) -> toml::Value {
    toml::Value::Array(v.iter().cloned().map(toml::Value::String).collect())
}

fn env_table(env: &BTreeMap<String, String>) -> toml::Value {
    toml::Value::Table(
        env.iter()
            .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_code_expands_and_passes_secrets_by_name() {
        let scratch = tempfile::tempdir().expect("tmp");
        let mut servers = BTreeMap::new();
        servers.insert(
            CLAUDE_CODE_SERVER.to_string(),
            McpServerSpec {
                command: Some("/bin/sh".into()),
                ..Default::default()
            },
        );
        servers.insert(
            "other".to_string(),
            McpServerSpec {
                command: Some("srv".into()),
                enabled_tools: Some(vec!["a".into()]),
                ..Default::default()
            },
        );
        let lookup = |n: &str| match n {
            "ANTHROPIC_BASE_URL" => Some("http://127.0.0.1:4567".to_string()),
            "ANTHROPIC_API_KEY" => Some("sk-ant-secret-value".to_string()),
            _ => None,
        };
        let setup = build(&servers, scratch.path(), &lookup).expect("builds");
        let text = toml::to_string(&setup.config).expect("toml");
        let cc = &setup.config["mcp_servers"]["claude-code"];
        assert_eq!(cc["args"].as_array().map(Vec::len), Some(2), "{text}");
        assert_eq!(
            cc["env"]["CLAUDE_CODE_DISABLE_BACKGROUND_TASKS"].as_str(),
            Some("1")
        );
        assert!(cc["env"]["CLAUDE_CONFIG_DIR"]
            .as_str()
            .is_some_and(|d| d.starts_with(&scratch.path().display().to_string())));
        assert!(!text.contains("sk-ant-secret-value"), "{text}");
        assert!(text.contains("env_vars"), "{text}");
        assert_eq!(
            setup.env.get("ANTHROPIC_API_KEY").map(String::as_str),
            Some("sk-ant-secret-value")
        );
        assert_eq!(setup.ports, vec![4567]);
        assert_eq!(
            setup.config["mcp_servers"]["other"]["command"].as_str(),
            Some("srv")
        );
        // Behind the proxy: a placeholder in the table, nothing real in Codex's environment,
        // and the route the proxy serves carries the real key to the real endpoint.
        let mut setup = setup;
        behind_proxy(&mut setup);
        let cc = &setup.config["mcp_servers"]["claude-code"];
        assert_eq!(
            cc["env"]["ANTHROPIC_API_KEY"].as_str(),
            Some(crate::egress::ANTHROPIC_KEY_PLACEHOLDER)
        );
        assert_eq!(
            cc["env"]["ANTHROPIC_BASE_URL"].as_str(),
            Some(crate::egress::anthropic_url().as_str())
        );
        assert!(cc.get("env_vars").is_none());
        assert!(setup.env.is_empty(), "{:?}", setup.env);
        let route = claude_code_route(&servers, &lookup)
            .expect("a claude-code server")
            .expect("an http upstream");
        assert_eq!(route.upstream().port, 4567);
        let up = route
            .rewrite("POST /anthropic/v1/messages HTTP/1.1\r\nx-api-key: fanout-placeholder")
            .expect("under the route");
        assert!(up.contains("x-api-key: sk-ant-secret-value\r\n"), "{up}");
        assert!(claude_code_route(&BTreeMap::new(), &lookup).is_none());
    }
}
