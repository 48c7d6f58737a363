/*!
The library part of `fanout doctor`: checks of the environment agents run in, each one line.

Covered here: the Landlock ABI of the kernel, whether fanout runs as root (and who agents then
run as), the Codex CLI (binary, version, the protocol fanout
will speak, the unrelated npm package named `codex`), `mcp-server` asked of a Codex that no
longer has it (in a task file's profiles or in Codex's own `mcp_servers`), and whether the
user's Codex `config.toml` is valid TOML (Codex's CLI and IDE extension share it).
*/

use std::fmt;
use std::path::Path;

use crate::agent::app_server;
use crate::agent::codex::{self, CodexError, APP_SERVER_SINCE};
use crate::taskfile::{Protocol, TaskFile};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Error,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    /// What was checked: `landlock`, `codex`, `codex config`, `agent NAME`.
    pub subject: String,
    pub message: String,
}

impl Check {
    fn new(level: Level, subject: &str, message: impl Into<String>) -> Check {
        Check {
            level,
            subject: subject.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok   ",
            Level::Warn => "warn ",
            Level::Error => "error",
        };
        write!(f, "{tag} {}: {}", self.subject, self.message)
    }
}

/// Whether any check is an error (for the exit code).
pub fn has_errors(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.level == Level::Error)
}

/// Every check; `tasks` adds the task file's agent profiles.
pub fn run(tasks: Option<&TaskFile>) -> Vec<Check> {
    let mut out = vec![landlock(), privileges(), workspaces()];
    out.extend(codex_checks("codex", None));
    out.extend(codex_config_checks(codex::user_codex_home(None).as_deref()));
    if let Some(file) = tasks {
        out.extend(profile_checks(file));
    }
    out
}

/// The kernel's Landlock ABI.
pub fn landlock() -> Check {
    match crate::sandbox::kernel_abi() {
        Some(abi) if abi >= 4 => Check::new(
            Level::Ok,
            "landlock",
            format!("kernel Landlock ABI {abi} (filesystem and TCP confinement)"),
        ),
        Some(abi) => Check::new(
            Level::Warn,
            "landlock",
            format!("kernel Landlock ABI {abi}: filesystem confinement only, no TCP rules (ABI 4+)"),
        ),
        None => Check::new(
            Level::Error,
            "landlock",
            "the kernel offers no Landlock: fanout refuses to run agents unless told `--sandbox off`",
        ),
    }
}

/// Which kind of workspace `fanout run --workspace auto` would pick here, tried with the same
/// throwaway overlay a run starts with.
pub fn workspaces() -> Check {
    let subject = "workspaces";
    let Ok(exe) = std::env::current_exe() else {
        return Check::new(
            Level::Warn,
            subject,
            "cannot find fanout's own executable to probe overlays",
        );
    };
    let run_as = crate::sandbox::user::resolve(None).ok().flatten();
    let probed = tempfile::Builder::new()
        .prefix("fanout-doctor-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp folder: {e}"))
        .and_then(|d| {
            crate::sandbox::overlay::probe(
                &exe,
                d.path(),
                run_as,
                crate::sandbox::MIN_SUPPORTED_ABI,
            )
        });
    match probed {
        Ok(()) => Check::new(
            Level::Ok,
            subject,
            format!(
                "overlay: a task's workspace costs what it changes (--workspace auto picks it); {}",
                crate::git::memory_lower::describe()
            ),
        ),
        Err(e) => Check::new(
            Level::Warn,
            subject,
            format!(
                "worktree: overlay workspaces do not work here ({e}); {}",
                if crate::which::find_program("git").is_ok() {
                    "the first --jobs tasks get a full checkout, later ones a worktree reused and reset in their sandbox"
                } else {
                    "every task gets a full checkout (no `git` on PATH to reset reused worktrees)"
                }
            ),
        ),
    }
}

/// Whether fanout runs as root, and what agents then run as.
pub fn privileges() -> Check {
    let subject = "privileges";
    if !crate::sandbox::user::is_root() {
        return Check::new(
            Level::Ok,
            subject,
            format!(
                "fanout runs as uid {}; agents run as this user, confined by Landlock",
                nix::unistd::geteuid()
            ),
        );
    }
    match crate::sandbox::user::resolve(None) {
        Ok(Some(who)) => Check::new(
            Level::Warn,
            subject,
            format!(
                "fanout runs as root: agents run as {} (or --agent-user) with no capabilities, \
                 their worktrees and scratch folders in a root-owned folder under {} handed to \
                 that user; they can do at most what that user could",
                crate::sandbox::user::describe(who),
                std::env::temp_dir().display()
            ),
        ),
        Ok(None) => Check::new(
            Level::Error,
            subject,
            "fanout runs as root but found no agent user",
        ),
        Err(e) => Check::new(Level::Error, subject, e.to_string()),
    }
}

/// The Codex binary `command` resolves to, its version, and the protocol fanout would speak.
pub fn codex_checks(command: &str, forced: Option<Protocol>) -> Vec<Check> {
    let subject = "codex";
    let program = match codex::find_program(command) {
        Ok(p) => p,
        Err(e) => return vec![Check::new(Level::Warn, subject, e.to_string())],
    };
    match codex::detect(&program) {
        Ok(found) => {
            let auto = codex::protocol_for(found.version);
            let mut out = vec![Check::new(
                Level::Ok,
                subject,
                format!(
                    "{} is Codex {} → protocol {} (supported: Codex up to 0.153.x over mcp, {} over app-server)",
                    program.display(),
                    found.version,
                    protocol_name(auto),
                    app_server::supported_range()
                ),
            )];
            if found.version >= APP_SERVER_SINCE && !app_server::knows(found.version) {
                out.push(Check::new(
                    Level::Error,
                    subject,
                    format!(
                        "Codex {} is newer than the app-server protocol fanout knows (supported: Codex {}); tasks with it are refused",
                        found.version,
                        app_server::supported_range()
                    ),
                ));
            }
            if forced == Some(Protocol::Mcp) && found.version >= APP_SERVER_SINCE {
                out.push(Check::new(
                    Level::Error,
                    subject,
                    CodexError::McpRemoved(found.version).to_string(),
                ));
            }
            out
        }
        Err(e @ CodexError::WrongPackage(_)) => {
            vec![Check::new(Level::Error, subject, e.to_string())]
        }
        Err(e) => vec![Check::new(Level::Error, subject, e.to_string())],
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Mcp => "mcp (codex mcp-server)",
        Protocol::CodexAppServer => "codex-app-server (codex app-server)",
        Protocol::Exec => "exec",
        Protocol::Auto => "auto",
    }
}

/// The user's Codex `config.toml`: valid TOML, and no `mcp_servers` entry running
/// `codex mcp-server` on a Codex that removed it.
pub fn codex_config_checks(home: Option<&Path>) -> Vec<Check> {
    let subject = "codex config";
    let Some(home) = home else {
        return vec![Check::new(
            Level::Warn,
            subject,
            "neither CODEX_HOME nor HOME is set",
        )];
    };
    let path = home.join("config.toml");
    if !path.exists() {
        return vec![Check::new(
            Level::Ok,
            subject,
            format!("{} does not exist (Codex defaults apply)", path.display()),
        )];
    }
    let config = match codex::read_config(&path) {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::new(
                Level::Error,
                subject,
                format!("{e}; Codex's CLI and IDE extension share this file, and fanout copies it for every task"),
            )]
        }
    };
    let mut out = vec![Check::new(
        Level::Ok,
        subject,
        format!("{} is valid TOML", path.display()),
    )];
    if let Some(toml::Value::Table(servers)) = config.get("mcp_servers") {
        for (name, server) in servers {
            let command = server
                .get("command")
                .and_then(toml::Value::as_str)
                .unwrap_or("");
            let asks_mcp_server = server
                .get("args")
                .and_then(toml::Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some("mcp-server")));
            if asks_mcp_server && command.rsplit('/').next() == Some("codex") {
                out.extend(mcp_server_removed(
                    &format!("{subject}: mcp_servers.{name}"),
                    command,
                ));
            }
        }
    }
    out
}

/// Task-file profiles that run Codex: `mcp-server` on 0.154+ is an error.
pub fn profile_checks(file: &TaskFile) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, profile) in &file.agents {
        if !codex::is_codex(profile) {
            continue;
        }
        let asks_mcp = profile.protocol == Protocol::Mcp
            || profile.args.first().map(String::as_str) == Some("mcp-server");
        if asks_mcp {
            out.extend(mcp_server_removed(
                &format!("agent {name}"),
                &profile.command,
            ));
        }
    }
    out
}

/// `exec` agents of the task file: the program is found and executable. A relative path is
/// taken from the repository's root (`workdir`), where the agent starts.
pub fn exec_checks(file: &TaskFile, workdir: Option<&Path>) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, profile) in &file.agents {
        if profile.protocol != Protocol::Exec {
            continue;
        }
        let subject = format!("agent {name}");
        let command = match workdir {
            Some(w) if profile.command.contains('/') && !profile.command.starts_with('/') => {
                w.join(&profile.command).display().to_string()
            }
            _ => profile.command.clone(),
        };
        out.push(match crate::which::find_program(&command) {
            Ok(p) if crate::which::is_executable(&p) => {
                Check::new(Level::Ok, &subject, format!("exec agent {}", p.display()))
            }
            Ok(p) => Check::new(
                Level::Error,
                &subject,
                format!("{} is not executable (chmod +x it)", p.display()),
            ),
            Err(e) => Check::new(Level::Error, &subject, format!("exec agent: {e}")),
        });
    }
    out
}

fn mcp_server_removed(subject: &str, command: &str) -> Vec<Check> {
    let Ok(program) = codex::find_program(command) else {
        return Vec::new();
    };
    match codex::detect(&program) {
        Ok(found) if found.version >= APP_SERVER_SINCE => vec![Check::new(
            Level::Error,
            subject,
            format!(
                "asks for `codex mcp-server`, but {} is Codex {}, which no longer has it (removed in 0.154.0); \
                 use protocol \"codex-app-server\" or \"auto\"",
                program.display(),
                found.version
            ),
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_codex_config_is_an_error() {
        let home = tempfile::tempdir().expect("tmp");
        std::fs::write(
            home.path().join("config.toml"),
            "model = \"x\"\n[features\n",
        )
        .expect("write");
        let checks = codex_config_checks(Some(home.path()));
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].level, Level::Error);
        assert!(
            checks[0].to_string().contains("not valid TOML"),
            "{}",
            checks[0]
        );
    }

    #[test]
    fn unrelated_codex_package_is_named() {
        // An npm layout of the unrelated `codex` package: node_modules/codex/{package.json,bin/codex}.
        let dir = tempfile::tempdir().expect("tmp");
        let pkg = dir.path().join("node_modules/codex");
        std::fs::create_dir_all(pkg.join("bin")).expect("mkdir");
        std::fs::write(
            pkg.join("package.json"),
            r#"{"name":"codex","version":"0.2.3"}"#,
        )
        .expect("write");
        let bin = pkg.join("bin/codex");
        std::fs::write(&bin, "#!/bin/sh\necho 0.2.3\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let checks = codex_checks(&bin.display().to_string(), None);
        assert_eq!(checks[0].level, Level::Error);
        assert!(checks[0].message.contains("@openai/codex"), "{}", checks[0]);
        assert!(
            checks[0].message.contains("static-site generator"),
            "{}",
            checks[0]
        );
    }

    #[test]
    fn something_that_is_not_codex_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("codex");
        std::fs::write(&bin, "#!/bin/sh\necho hello\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let checks = codex_checks(&bin.display().to_string(), None);
        assert_eq!(checks[0].level, Level::Error);
        assert!(
            checks[0].message.contains("not the OpenAI Codex CLI"),
            "{}",
            checks[0]
        );
    }
}
