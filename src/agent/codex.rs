/*!
The built-in `codex` agent: finding the OpenAI Codex CLI, picking its protocol from its version,
and giving every task a private `CODEX_HOME` that works inside fanout's sandbox.

- `codex mcp-server` exists up to 0.153.x and was removed in 0.154.0; from then on fanout speaks
  `codex app-server`. `protocol: "auto"` (the built-in profile) picks by `codex --version`.
- The npm package named plain `codex` is an unrelated static-site generator; it is recognised by
  its `package.json` before it is ever run.
- Codex's own Linux sandbox (bubblewrap / namespaces) cannot start inside a Landlock domain, so
  under fanout's confinement Codex is told to run commands without its own sandbox
  (`danger-full-access` for `mcp-server`, `externalSandbox` for `app-server`): fanout's Landlock
  domain, inherited by every command Codex starts, is the workspace-write boundary.
- Each task gets `<scratch>/codex-home`: the user's `config.toml` with fanout's overrides merged,
  plus `auth.json` when present. Codex writes sessions, logs, sqlite state and even `config.toml`
  there (app-server adds a trusted-project entry), so it must be private and writable.
*/

pub mod config;
pub(crate) mod error;
use crate::agent::url::url_port;
pub use config::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::AgentContext;
use crate::sandbox::NetPolicy;
use crate::taskfile::{AgentProfile, Protocol};

/// Overrides the binary the built-in profile (command `codex`) runs; used by tests and CI.
pub const CODEX_BIN_ENV: &str = "FANOUT_CODEX_BIN";

/// The first version without `mcp-server` (and with a usable `app-server`).
pub const APP_SERVER_SINCE: Version = Version {
    major: 0,
    minor: 154,
    patch: 0,
};

/// How long `codex --version` may take (the npm launcher starts Node first).
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

pub use error::{CodexError, Installed, Version};

/// The protocol a Codex version speaks.
pub fn protocol_for(version: Version) -> Protocol {
    if version >= APP_SERVER_SINCE {
        Protocol::CodexAppServer
    } else {
        Protocol::Mcp
    }
}

/// The profile a task gets with `"agent": "codex"` and no `agents` entry of that name.
pub fn builtin_profile() -> AgentProfile {
    let mut p = AgentProfile::new(Protocol::Auto, "codex");
    p.tool = "codex".into();
    p
}

/// Whether a profile runs the Codex CLI (and so gets the Codex treatment below).
pub fn is_codex(profile: &AgentProfile) -> bool {
    match profile.protocol {
        Protocol::Auto | Protocol::CodexAppServer => true,
        Protocol::Mcp => program_name(&profile.command) == "codex",
        Protocol::Exec => false,
    }
}

fn program_name(command: &str) -> &str {
    command.rsplit('/').next().unwrap_or(command)
}

/// Finds the program for `command`: `FANOUT_CODEX_BIN` for a plain `codex`, a path as given,
/// otherwise the first executable of that name on `PATH`.
pub fn find_program(command: &str) -> Result<PathBuf, CodexError> {
    if command == "codex" {
        if let Some(bin) = std::env::var_os(CODEX_BIN_ENV).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(bin);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(CodexError::NotFound(format!(
                    "{CODEX_BIN_ENV}={} does not exist",
                    p.display()
                )))
            };
        }
    }
    crate::which::find_program(command).map_err(|e| CodexError::NotFound(e.to_string()))
}

/// The npm package a program belongs to, from the nearest `package.json` above its real path.
pub fn npm_package_of(program: &Path) -> Option<String> {
    let real = std::fs::canonicalize(program).ok()?;
    for dir in real.ancestors().skip(1).take(6) {
        let manifest = dir.join("package.json");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            let v: Value = serde_json::from_str(&text).ok()?;
            return v.get("name").and_then(Value::as_str).map(str::to_string);
        }
    }
    None
}

fn version_cache() -> &'static Mutex<HashMap<PathBuf, Installed>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Installed>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Runs `program --version` (once per program per process) and checks it is the OpenAI Codex CLI.
pub fn detect(program: &Path) -> Result<Installed, CodexError> {
    if let Some(hit) = version_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(program)
    {
        return Ok(hit.clone());
    }
    // The unrelated `codex` package must not even be run: say what it is instead.
    if npm_package_of(program).as_deref() == Some("codex") {
        return Err(CodexError::WrongPackage(program.display().to_string()));
    }
    let out = run_with_timeout(program, &["--version"], VERSION_TIMEOUT).map_err(|e| {
        CodexError::Version {
            program: program.display().to_string(),
            detail: e.to_string(),
        }
    })?;
    let banner = out
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let looks_right = banner.starts_with("codex-cli") || banner.starts_with("codex ");
    let version = Version::parse(&banner)
        .filter(|_| looks_right)
        .ok_or_else(|| CodexError::Version {
            program: program.display().to_string(),
            detail: format!(
                "it printed {:?}, not `codex-cli <version>`: this is not the OpenAI Codex CLI",
                crate::jsonrpc::truncate(&banner, 200)
            ),
        })?;
    let installed = Installed {
        program: program.to_path_buf(),
        version,
        banner,
    };
    version_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(program.to_path_buf(), installed.clone());
    Ok(installed)
}

/// Why a short command gave no output to use.
#[derive(Debug, thiserror::Error)]
enum QuickRunError {
    #[error("cannot start it: {0}")]
    Start(#[source] std::io::Error),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("it failed ({0})")]
    Failed(String),
}

/// Runs a short command, returning its stdout; the process group is killed on timeout.
fn run_with_timeout(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<String, QuickRunError> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(QuickRunError::Start)?;
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.take(64 * 1024).read_to_end(&mut buf);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                return Err(QuickRunError::Timeout(timeout.as_secs()));
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(QuickRunError::Failed(crate::process::describe_exit(
            &status,
        )));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Creates `<scratch>/codex-home` from the user's Codex home plus fanout's overrides.
/// Returns the folder and the merged config (for the sandbox's port list).
pub fn prepare_home(
    scratch: &Path,
    user_home: Option<&Path>,
    confined: bool,
    extra: toml::Table,
) -> Result<(PathBuf, toml::Table), CodexError> {
    let home = scratch.join("codex-home");
    let io = |source| CodexError::Home {
        path: home.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&home).map_err(io)?;
    let mut config = match user_home {
        Some(h) => read_config(&h.join("config.toml"))?,
        None => toml::Table::new(),
    };
    merge_toml(&mut config, fanout_overrides(confined));
    merge_toml(&mut config, extra);
    let text = toml::to_string(&config).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    std::fs::write(home.join("config.toml"), text).map_err(io)?;
    if let Some(h) = user_home {
        let auth = h.join("auth.json");
        if auth.is_file() {
            // Credentials: copied with owner-only permissions, never logged.
            let dst = home.join("auth.json");
            std::fs::copy(&auth, &dst).map_err(io)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            // Its tokens are masked wherever fanout writes text.
            if let Ok(v) = std::fs::read(&auth)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
                })
            {
                crate::redact::register_json_strings(&v);
            }
        }
    }
    Ok((home, config))
}

/// What [`prepare`] found out, for the session and the report.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub installed: Installed,
}

/// Turns a context for a Codex profile into one ready to spawn: resolved binary, protocol
/// picked from the version, subcommand, private CODEX_HOME and TMPDIR, model ports opened.
/// Contexts for other agents are returned unchanged.
pub fn prepare(mut ctx: AgentContext) -> Result<(AgentContext, Option<Prepared>), CodexError> {
    if !is_codex(&ctx.profile) && !is_codex_protocol(ctx.protocol, &ctx.profile) {
        return Ok((ctx, None));
    }
    // Resolved by the plan; found here only for a context made without one.
    let installed = match ctx.codex.clone() {
        Some(installed) => installed,
        None => detect(&find_program(&ctx.profile.command)?)?,
    };
    let program = installed.program.clone();
    let protocol = match ctx.protocol {
        Protocol::Auto => protocol_for(installed.version),
        Protocol::Mcp if installed.version >= APP_SERVER_SINCE => {
            return Err(CodexError::McpRemoved(installed.version));
        }
        p => p,
    };
    ctx.protocol = protocol;
    ctx.profile.protocol = protocol;
    ctx.spawn.program = program.display().to_string();
    ctx.spawn.args = subcommand_args(&ctx.spawn.args, protocol);
    ctx.profile.args = ctx.spawn.args.clone();
    let confined = ctx.spawn.policy.enforce;
    if protocol == Protocol::Mcp {
        ctx.profile.tool = "codex".into();
        let args = &mut ctx.profile.arguments;
        args.entry("approval-policy").or_insert(json!("never"));
        let sandbox = args.get("sandbox").and_then(Value::as_str).unwrap_or("");
        if confined && sandbox != "danger-full-access" {
            if !sandbox.is_empty() {
                ctx.events.record(
                    "codex_sandbox_override",
                    json!({"asked": sandbox, "used": "danger-full-access",
                           "why": "Codex's own sandbox cannot start inside fanout's Landlock domain, which already confines it"}),
                );
            }
            args.insert("sandbox".into(), json!("danger-full-access"));
        }
    }
    if protocol == Protocol::CodexAppServer {
        translate_mcp_arguments(&mut ctx.profile.arguments);
    }
    let user_home = user_codex_home(ctx.spawn.env.get("CODEX_HOME").map(String::as_str));
    // The CODEX_HOME copied from (the profile's `env` may name one of its own) is hidden
    // from the tree with the invoker's other credentials (`sandbox::credentials`).
    if let Some(h) = user_home.as_ref().filter(|_| ctx.spawn.policy.isolate_net) {
        if !ctx.spawn.policy.hide.contains(h) {
            ctx.spawn.policy.hide.push(h.clone());
        }
    }
    // The profile's MCP servers (the built-in `claude-code` among them), run by Codex as its
    // children, inside the same sandbox.
    let mut mcp = super::mcp_servers::build(&ctx.profile.mcp_servers, &ctx.scratch, &|n| {
        std::env::var(n).ok()
    })
    .map_err(|e| CodexError::McpServers(e.to_string()))?;
    if ctx.spawn.policy.egress.is_some() {
        // Claude Code's model traffic through the proxy's Anthropic route (issue 19).
        super::mcp_servers::behind_proxy(&mut mcp);
    }
    let (home, config) = prepare_home(&ctx.scratch, user_home.as_deref(), confined, mcp.config)?;
    ctx.spawn.env.extend(mcp.env);
    if ctx.spawn.policy.egress.is_some() {
        // Model traffic through fanout's proxy, which holds the credential.
        super::codex::config::behind_proxy(&home, &mut ctx.spawn.env)?;
    }
    let tmp = ctx.scratch.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|source| CodexError::Home {
        path: tmp.display().to_string(),
        source,
    })?;
    ctx.spawn
        .env
        .insert("CODEX_HOME".into(), home.display().to_string());
    // The task's short TMPDIR when the runner gave one (socket paths must stay short).
    ctx.spawn
        .env
        .entry("TMPDIR".into())
        .or_insert_with(|| tmp.display().to_string());
    // Codex's built-in provider also honours OPENAI_BASE_URL from the environment.
    let env_url = ctx
        .spawn
        .env
        .get("OPENAI_BASE_URL")
        .cloned()
        .or_else(|| std::env::var("OPENAI_BASE_URL").ok());
    let env_port = env_url.as_deref().and_then(url_port);
    for port in provider_ports(&config)
        .into_iter()
        .chain(env_port)
        .chain(mcp.ports)
    {
        if !ctx.profile.connect_ports.contains(&port) {
            ctx.profile.connect_ports.push(port);
        }
        if let NetPolicy::ConnectPorts(ports) = &mut ctx.spawn.policy.net {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    ctx.events.record(
        "codex",
        json!({"program": ctx.spawn.program, "version": installed.version.to_string(),
               "protocol": protocol, "codex_home": home.display().to_string(),
               "mcp_servers": mcp.names}),
    );
    Ok((ctx, Some(Prepared { installed })))
}

/// Profile `arguments` written for `mcp-server` (kebab-case tool arguments) become
/// thread/start parameters; the ones fanout sets itself (policy, sandbox, cwd) are dropped.
fn translate_mcp_arguments(args: &mut serde_json::Map<String, Value>) {
    let old = std::mem::take(args);
    for (k, v) in old {
        let key = match k.as_str() {
            "approval-policy" | "sandbox" | "cwd" | "prompt" => continue,
            "base-instructions" => "baseInstructions".to_string(),
            "developer-instructions" => "developerInstructions".to_string(),
            "compact-prompt" => continue,
            _ => k,
        };
        args.insert(key, v);
    }
}

/// Resolves a Codex profile's launch before anything starts (the plan calls it): the program
/// found once (`FANOUT_CODEX_BIN`, a path, or `PATH`), `--version` asked once, `auto` turned
/// into the protocol that version speaks. Sessions then start exactly this: what was found is
/// returned for them ([`AgentContext::codex`]), so they probe nothing. A profile that cannot be
/// resolved is left as it is (`None`): its session reports why, as without the plan's help.
pub fn resolve_launch(profile: &mut AgentProfile) -> Option<Installed> {
    if !is_codex(profile) && !is_codex_protocol(profile.protocol, profile) {
        return None;
    }
    let program = find_program(&profile.command).ok()?;
    let installed = detect(&program).ok()?;
    profile.command = program.display().to_string();
    if profile.protocol == Protocol::Auto {
        profile.protocol = protocol_for(installed.version);
    }
    Some(installed)
}

fn is_codex_protocol(protocol: Protocol, profile: &AgentProfile) -> bool {
    matches!(protocol, Protocol::Auto | Protocol::CodexAppServer)
        && profile.protocol != Protocol::Exec
}

/// `mcp-server` / `app-server` as the first argument, keeping any further arguments.
fn subcommand_args(args: &[String], protocol: Protocol) -> Vec<String> {
    let sub = match protocol {
        Protocol::CodexAppServer => "app-server",
        _ => "mcp-server",
    };
    let rest = match args.first().map(String::as_str) {
        Some("mcp-server") | Some("app-server") => &args[1..],
        _ => args,
    };
    std::iter::once(sub.to_string())
        .chain(rest.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_picks_protocols() {
        let v = Version::parse("codex-cli 0.153.4").expect("version");
        assert_eq!(v.to_string(), "0.153.4");
        assert_eq!(protocol_for(v), Protocol::Mcp);
        assert_eq!(
            protocol_for(Version::parse("codex-cli 0.154.0-alpha.3").expect("v")),
            Protocol::CodexAppServer
        );
        assert_eq!(
            protocol_for(Version::parse("0.169.0").expect("v")),
            Protocol::CodexAppServer
        );
        assert!(Version::parse("codex static site generator").is_none());
    }

    #[test]
    fn merges_overrides_and_finds_provider_ports() {
        let mut base: toml::Table = r#"
model_provider = "x"
[features]
web_search = true
plugins = true
[model_providers.x]
base_url = "http://127.0.0.1:4321/v1"
[model_providers.y]
base_url = "https://example.com/v1"
"#
        .parse()
        .expect("toml");
        merge_toml(&mut base, fanout_overrides(true));
        let f = base["features"].as_table().expect("features");
        assert_eq!(f["web_search"].as_bool(), Some(true));
        assert_eq!(f["plugins"].as_bool(), Some(false));
        assert_eq!(base["sandbox_mode"].as_str(), Some("danger-full-access"));
        assert_eq!(
            base["shell_environment_policy"]["inherit"].as_str(),
            Some("core")
        );
        assert_eq!(provider_ports(&base), vec![4321, 443]);
    }

    #[test]
    fn subcommands() {
        assert_eq!(subcommand_args(&[], Protocol::Mcp), vec!["mcp-server"]);
        assert_eq!(
            subcommand_args(
                &["mcp-server".into(), "-c".into(), "x=1".into()],
                Protocol::CodexAppServer
            ),
            vec!["app-server", "-c", "x=1"]
        );
    }

    #[test]
    fn home_copies_config_and_auth_privately() {
        let user = tempfile::tempdir().expect("tmp");
        let scratch = tempfile::tempdir().expect("tmp");
        std::fs::write(user.path().join("config.toml"), "model = \"m\"\n").expect("write");
        std::fs::write(user.path().join("auth.json"), "{\"secret\":1}").expect("write");
        let (home, cfg) = prepare_home(scratch.path(), Some(user.path()), true, toml::Table::new())
            .expect("home");
        assert_eq!(cfg["model"].as_str(), Some("m"));
        let written = std::fs::read_to_string(home.join("config.toml")).expect("read");
        assert!(
            written.contains("unbounded_connection_retries = false"),
            "{written}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("auth.json"))
            .expect("auth")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(user.path().join("config.toml"), "model = [").expect("write");
        let err =
            prepare_home(scratch.path(), Some(user.path()), true, toml::Table::new()).unwrap_err();
        assert!(err.to_string().contains("not valid TOML"), "{err}");
    }
}
