//! Agent profiles and their `mcp_servers`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::*;
use super::read::kind;
use super::schema;
use super::validator::Validator;

impl Validator {
    pub(super) fn profile(
        &mut self,
        value: &Value,
        path: &str,
        default_tool: &str,
    ) -> Option<AgentProfile> {
        let obj = self.object(value, path)?;
        self.known_fields(obj, path, &schema::names(schema::PROFILE_FIELDS));
        let protocol = match self.string(obj, "protocol", path) {
            None => Protocol::Mcp,
            Some(s) => {
                match Protocol::parse(&s) {
                    Some(p) => p,
                    None => {
                        self.problem(
                        &format!("{path}.protocol"),
                        format!("unknown protocol {s:?}; expected mcp, codex-app-server, exec or auto"),
                    );
                        Protocol::Mcp
                    }
                }
            }
        };
        let command = match self.string(obj, "command", path) {
            Some(c) if !c.trim().is_empty() => c,
            Some(_) => {
                self.problem(&format!("{path}.command"), "command must not be empty");
                String::new()
            }
            None => {
                if !obj.contains_key("command") {
                    self.problem(path, "missing field \"command\"");
                }
                String::new()
            }
        };
        let mut profile = AgentProfile::new(protocol, &command);
        profile.tool = default_tool.to_string();
        if let Some(args) = self.strings(obj, "args", path) {
            profile.args = args;
        }
        profile.cwd = self.string(obj, "cwd", path);
        if let Some(env) = obj.get("env") {
            let loc = format!("{path}.env");
            if let Some(map) = self.object(env, &loc) {
                for (k, v) in map {
                    match v {
                        Value::String(s) => {
                            if let Err(e) = expand_env(s, &|n| std::env::var(n).ok()) {
                                self.problem(&format!("{loc}.{k}"), e);
                            }
                            profile.env.insert(k.clone(), s.clone());
                        }
                        other => self.problem(
                            &format!("{loc}.{k}"),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
            }
        }
        if let Some(tool) = self.string(obj, "tool", path) {
            profile.tool = tool;
        }
        if let Some(args) = obj.get("arguments") {
            if let Some(map) = self.object(args, &format!("{path}.arguments")) {
                profile.arguments = map.clone();
            }
        }
        if let Some(x) = self.positive(obj, "startup_timeout_sec", path) {
            profile.startup_timeout_sec = x;
        }
        if let Some(x) = self.positive(obj, "tool_timeout_sec", path) {
            profile.tool_timeout_sec = x;
        }
        if let Some(b) = self.boolean(obj, "enabled", path) {
            profile.enabled = b;
        }
        if let Some(ports) = obj.get("connect_ports") {
            let loc = format!("{path}.connect_ports");
            match ports {
                Value::Array(items) => {
                    for (i, p) in items.iter().enumerate() {
                        match p.as_u64() {
                            Some(n) if (1..=65535).contains(&n) => {
                                profile.connect_ports.push(n as u16)
                            }
                            _ => self
                                .problem(&format!("{loc}[{i}]"), "expected a TCP port (1-65535)"),
                        }
                    }
                }
                other => self.problem(
                    &loc,
                    format!("expected an array of ports, found {}", kind(other)),
                ),
            }
        }
        if let Some(names) = self.strings(obj, "env_pass", path) {
            for (i, n) in names.iter().enumerate() {
                if n.is_empty() || n.contains(['=', '\0']) {
                    self.problem(
                        &format!("{path}.env_pass[{i}]"),
                        "expected a variable name (no `=`)",
                    );
                }
            }
            profile.env_pass = names;
        }
        if let Some(servers) = obj.get("mcp_servers") {
            profile.mcp_servers = self.mcp_servers(servers, &format!("{path}.mcp_servers"));
        }
        Some(profile)
    }

    /// `mcp_servers`: name → `{command, args, env, …}`; the built-in `claude-code` may be
    /// `true` or `{}` (everything defaulted), `false` leaves a server out.
    pub(super) fn mcp_servers(
        &mut self,
        value: &Value,
        path: &str,
    ) -> BTreeMap<String, McpServerSpec> {
        let mut out = BTreeMap::new();
        let Some(map) = self.object(value, path) else {
            return out;
        };
        for (name, entry) in map {
            let loc = format!("{path}.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            {
                self.problem(&loc, "MCP server names are [A-Za-z0-9_-]");
            }
            let builtin = name == CLAUDE_CODE_SERVER;
            let spec = match entry {
                Value::Bool(true) if builtin => McpServerSpec::default(),
                Value::Bool(true) => {
                    self.problem(&loc, format!("`true` only works for the built-in {CLAUDE_CODE_SERVER:?}; give a {{\"command\": …}} object"));
                    continue;
                }
                Value::Bool(false) => continue,
                Value::Object(obj) => {
                    self.known_fields(obj, &loc, &schema::names(schema::MCP_SERVER_FIELDS));
                    let command = self.string(obj, "command", &loc);
                    let url = self.string(obj, "url", &loc);
                    match &command {
                        Some(c) if c.trim().is_empty() => {
                            self.problem(&format!("{loc}.command"), "command must not be empty")
                        }
                        None if !builtin
                            && !obj.contains_key("command")
                            && !obj.contains_key("url") =>
                        {
                            self.problem(&loc, "missing field \"command\" (or \"url\")")
                        }
                        _ => {}
                    }
                    self.check_url_server(obj, &loc, url.as_deref(), builtin);
                    let mut env = BTreeMap::new();
                    if let Some(e) = obj.get("env") {
                        let eloc = format!("{loc}.env");
                        if let Some(m) = self.object(e, &eloc) {
                            for (k, v) in m {
                                match v {
                                    Value::String(s) => {
                                        if let Err(e) = expand_env(s, &|n| std::env::var(n).ok()) {
                                            self.problem(&format!("{eloc}.{k}"), e);
                                        }
                                        env.insert(k.clone(), s.clone());
                                    }
                                    other => self.problem(
                                        &format!("{eloc}.{k}"),
                                        format!("expected a string, found {}", kind(other)),
                                    ),
                                }
                            }
                        }
                    }
                    McpServerSpec {
                        command,
                        url,
                        bearer_token_env_var: self.string(obj, "bearer_token_env_var", &loc),
                        http_headers: self.string_map(obj, "http_headers", &loc),
                        args: self.strings(obj, "args", &loc),
                        env,
                        startup_timeout_sec: self.positive(obj, "startup_timeout_sec", &loc),
                        tool_timeout_sec: self.positive(obj, "tool_timeout_sec", &loc),
                        enabled_tools: self.strings(obj, "enabled_tools", &loc),
                        enabled: self.boolean(obj, "enabled", &loc),
                    }
                }
                other => {
                    self.problem(
                        &loc,
                        format!(
                            "expected an object (or true for {CLAUDE_CODE_SERVER:?}), found {}",
                            kind(other)
                        ),
                    );
                    continue;
                }
            };
            out.insert(name.clone(), spec);
        }
        out
    }

    /// A server by URL: http(s), not with `command`; its HTTP fields only with a URL.
    fn check_url_server(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        loc: &str,
        url: Option<&str>,
        builtin: bool,
    ) {
        match url {
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => self.problem(
                &format!("{loc}.url"),
                "url must start with http:// or https://",
            ),
            Some(_) if obj.contains_key("command") || builtin => self.problem(
                loc,
                "give either \"command\" (a server Codex starts) or \"url\" (a server it connects to), not both",
            ),
            Some(_) => {
                for local in ["args", "env"] {
                    if obj.contains_key(local) {
                        self.problem(
                            &format!("{loc}.{local}"),
                            format!("{local} is for a server started by `command`, not one reached by `url`"),
                        );
                    }
                }
            }
            None => {
                for http in ["bearer_token_env_var", "http_headers"] {
                    if obj.contains_key(http) {
                        self.problem(&format!("{loc}.{http}"), format!("{http} needs \"url\""));
                    }
                }
            }
        }
    }

    /// An object of strings (`http_headers`).
    fn string_map(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        key: &str,
        loc: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(v) = obj.get(key) else {
            return out;
        };
        let kloc = format!("{loc}.{key}");
        if let Some(m) = self.object(v, &kloc) {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    other => self.problem(
                        &format!("{kloc}.{k}"),
                        format!("expected a string, found {}", kind(other)),
                    ),
                }
            }
        }
        out
    }
}
