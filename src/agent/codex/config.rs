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

/// The placeholder a sandboxed Codex holds instead of an API key (the proxy adds the real one).
pub const KEY_PLACEHOLDER: &str = "fanout-placeholder";

/// The model API a Codex config talks to: the active `model_provider`'s `base_url` and the
/// variable holding its key (`env_key`, else `OPENAI_API_KEY`); without a custom provider,
/// `openai_base_url`, then `OPENAI_BASE_URL` from `env`, then OpenAI's own.
pub fn model_upstream(
    config: &toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> (String, String) {
    let provider = config
        .get("model_provider")
        .and_then(toml::Value::as_str)
        .and_then(|name| config.get("model_providers")?.get(name));
    let key_var = provider
        .and_then(|p| p.get("env_key"))
        .and_then(toml::Value::as_str)
        .unwrap_or("OPENAI_API_KEY")
        .to_string();
    let url = provider
        .and_then(|p| p.get("base_url"))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            config
                .get("openai_base_url")
                .and_then(toml::Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| env("OPENAI_BASE_URL"))
        .unwrap_or_else(|| "https://api.openai.com/v1".into());
    (url, key_var)
}

/// Points the config's model API at `url` (the egress proxy's model route): the active
/// provider's `base_url`, else `openai_base_url`.
pub fn point_model_at(config: &mut toml::Table, url: &str) {
    let name = config
        .get("model_provider")
        .and_then(toml::Value::as_str)
        .map(str::to_string);
    if let Some(p) = name.as_deref().and_then(|n| {
        config
            .get_mut("model_providers")?
            .as_table_mut()?
            .get_mut(n)?
            .as_table_mut()
    }) {
        p.insert("base_url".into(), url.into());
        return;
    }
    config.insert("openai_base_url".into(), url.into());
}

/// ChatGPT's backend, where Codex sends a ChatGPT login's requests (`chatgpt_base_url`).
pub const CHATGPT_BASE_URL: &str = "https://chatgpt.com/backend-api/";

/// The ChatGPT backend a config names (`chatgpt_base_url`, else ChatGPT's own).
pub fn chatgpt_base_url(config: &toml::Table) -> String {
    config
        .get("chatgpt_base_url")
        .and_then(toml::Value::as_str)
        .unwrap_or(CHATGPT_BASE_URL)
        .to_string()
}

/// Whether Codex talks to the ChatGPT backend with the login in `auth` (a parsed `auth.json`):
/// no custom provider is active, no API key is in the environment, and `auth` holds tokens.
pub fn uses_chatgpt_login(
    config: &toml::Table,
    key_in_env: bool,
    auth: Option<&serde_json::Value>,
) -> bool {
    let custom = config
        .get("model_provider")
        .and_then(toml::Value::as_str)
        .is_some_and(|p| p != "openai");
    !custom && !key_in_env && auth.is_some_and(crate::egress::chatgpt::is_chatgpt_login)
}

/// Under fanout's egress proxy: the private home's config sends model requests to the proxy's
/// model route and the proxy adds the real credential. With an API key the home holds no
/// `auth.json` and the key variable only a placeholder; with a ChatGPT login the home holds an
/// `auth.json` of the same shape with placeholder tokens, and both the model API
/// (`openai_base_url`, `<route>/codex`) and the backend (`chatgpt_base_url`, `<route>/`) go
/// through the route, which leads to the user's ChatGPT backend.
pub fn behind_proxy(
    home: &Path,
    env: &mut std::collections::BTreeMap<String, String>,
) -> Result<(), CodexError> {
    let path = home.join("config.toml");
    let mut config = read_config(&path)?;
    let lookup = |n: &str| env.get(n).cloned().or_else(|| std::env::var(n).ok());
    let (_, key_var) = model_upstream(&config, &lookup);
    let key_in_env = lookup(&key_var).is_some_and(|k| !k.is_empty());
    let auth_path = home.join("auth.json");
    let auth: Option<serde_json::Value> = std::fs::read(&auth_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let bad = |message: String| CodexError::BadConfig {
        path: path.display().to_string(),
        message,
    };
    let login = uses_chatgpt_login(&config, key_in_env, auth.as_ref());
    let url = crate::egress::model_url();
    let model_url = if login {
        config.insert("chatgpt_base_url".into(), format!("{url}/").into());
        format!("{url}/codex")
    } else {
        url
    };
    point_model_at(&mut config, &model_url);
    let text = toml::to_string(&config).map_err(|e| bad(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| bad(e.to_string()))?;
    match (login, auth) {
        (true, Some(auth)) => {
            let fake = crate::egress::chatgpt::placeholder_auth(&auth);
            let text = serde_json::to_vec_pretty(&fake).map_err(|e| bad(e.to_string()))?;
            std::fs::write(&auth_path, text)
                .map_err(|e| bad(format!("cannot write auth.json: {e}")))?;
        }
        _ => {
            match std::fs::remove_file(&auth_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(bad(format!("cannot remove auth.json: {e}"))),
            }
            env.insert(key_var, KEY_PLACEHOLDER.into());
        }
    }
    env.insert("OPENAI_BASE_URL".into(), model_url);
    Ok(())
}

#[cfg(test)]
mod upstream_tests {
    use super::*;

    #[test]
    fn the_active_provider_is_pointed_at_the_proxy() {
        let mut c: toml::Table = "model_provider = \"s\"\n[model_providers.s]\nbase_url = \"http://127.0.0.1:9/v1\"\nenv_key = \"S_KEY\"\n".parse().unwrap();
        assert_eq!(
            model_upstream(&c, &|_| None),
            ("http://127.0.0.1:9/v1".into(), "S_KEY".into())
        );
        point_model_at(&mut c, "http://127.0.0.1:3128/model");
        assert_eq!(
            model_upstream(&c, &|_| None).0,
            "http://127.0.0.1:3128/model"
        );
        let mut plain = toml::Table::new();
        assert_eq!(
            model_upstream(&plain, &|_| Some("http://x:1".into())).0,
            "http://x:1"
        );
        point_model_at(&mut plain, "http://p");
        assert_eq!(
            plain.get("openai_base_url").and_then(|v| v.as_str()),
            Some("http://p")
        );
    }
}
