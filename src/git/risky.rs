//! Changes that deserve a human look: repository attributes and submodules, CI configuration, git
//! hook managers, files that make developer tools run commands (agent, editor, shell, package
//! manager and debugger configuration), symlinks that point outside the repository, new executable files. They are
//! flagged in the report, the event log and on the terminal, and fail the scope gate unless the
//! task's `paths` name them explicitly (`verify::scope::named_explicitly`).

use serde::{Deserialize, Serialize};

/// One flagged change.
#[derive(schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskyChange {
    pub path: String,
    pub why: String,
}

/// Paths (relative, slash-separated) whose change is flagged, whatever the change.
fn risky_path(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let top = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if name == ".gitattributes" {
        return Some("changes how git stores files (.gitattributes)");
    }
    if path == ".gitmodules" {
        return Some("changes the repository's submodules (.gitmodules)");
    }
    const CI_DIRS: &[&str] = &[
        ".github/workflows",
        ".github/actions",
        ".circleci",
        ".buildkite",
        ".woodpecker",
        ".gitlab",
        ".azure-pipelines",
        ".forgejo/workflows",
        ".gitea/workflows",
    ];
    const CI_FILES: &[&str] = &[
        ".gitlab-ci.yml",
        ".travis.yml",
        "Jenkinsfile",
        "azure-pipelines.yml",
        "bitbucket-pipelines.yml",
        ".drone.yml",
        ".woodpecker.yml",
        "appveyor.yml",
        ".appveyor.yml",
        "cloudbuild.yaml",
    ];
    if CI_DIRS.iter().any(|d| top(d)) || CI_FILES.contains(&path) {
        return Some("changes CI configuration");
    }
    const HOOK_DIRS: &[&str] = &[".husky", ".githooks", ".git-hooks", ".hooks"];
    const HOOK_FILES: &[&str] = &[
        ".pre-commit-config.yaml",
        ".pre-commit-hooks.yaml",
        "lefthook.yml",
        ".lefthook.yml",
        "lefthook.yaml",
    ];
    if HOOK_DIRS.iter().any(|d| top(d)) || HOOK_FILES.contains(&path) {
        return Some("changes git hooks or commands run on the developer's machine");
    }
    developer_tool_file(path, name)
}

/// Files that make developer tools (coding agents, editors, shells, package managers,
/// debuggers) run commands or follow instructions when someone opens, builds or debugs the
/// repository. Most tools read them from any folder they are started in, so they count in
/// any folder. The list and why each is on it: docs/verify.md, "Risky changes".
fn developer_tool_file(path: &str, name: &str) -> Option<&'static str> {
    // Folders whose whole content configures a tool that runs commands.
    const TOOL_DIRS: &[&str] = &[
        ".claude",       // Claude Code: settings (hooks, env), commands, agents
        ".codex",        // Codex: config.toml (MCP servers, notify), prompts
        ".cursor",       // Cursor: rules, mcp.json
        ".gemini",       // Gemini CLI: settings (MCP servers), commands
        ".devcontainer", // postCreateCommand and friends
        ".zed",          // Zed: tasks, language server commands
    ];
    // Files named so in any folder.
    const TOOL_FILES: &[&str] = &[
        "CLAUDE.md",
        "CLAUDE.local.md",
        "AGENTS.md",
        "GEMINI.md",
        ".mcp.json",
        ".devcontainer.json",
        ".envrc",
        ".npmrc",
        ".yarnrc",
        ".yarnrc.yml",
        ".pnpmfile.cjs",
        ".tool-versions",
        "mise.toml",
        ".mise.toml",
        "mise.local.toml",
        ".mise.local.toml",
        ".pdbrc",
        ".gdbinit",
        ".lldbinit",
        ".gitpod.yml",
    ];
    // Files or folders at one place inside a tool folder (any depth for the folder).
    const TOOL_PATHS: &[&str] = &[
        ".vscode/tasks.json",
        ".vscode/settings.json",
        ".vscode/launch.json",
        ".vscode/mcp.json",
        ".cargo/config.toml",
        ".cargo/config",
        ".config/mise.toml",
        ".config/mise",
        ".idea/runConfigurations",
        ".idea/workspace.xml",
        ".idea/tools",
        ".github/copilot-instructions.md",
    ];
    let components: Vec<&str> = path.split('/').collect();
    let in_dir = components[..components.len().saturating_sub(1)]
        .iter()
        .any(|c| TOOL_DIRS.contains(c));
    let at = |suffix: &str| {
        let parts: Vec<&str> = suffix.split('/').collect();
        components
            .windows(parts.len())
            .any(|w| w == parts.as_slice())
    };
    if in_dir
        || TOOL_DIRS.contains(&name)
        || TOOL_FILES.contains(&name)
        || TOOL_PATHS.iter().any(|p| at(p))
    {
        return Some(
            "changes a file that makes developer tools run commands or follow instructions",
        );
    }
    None
}

/// Whether a symlink at `path` with `target` points outside the repository.
fn link_leaves_repo(path: &str, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut depth: i64 = path.matches('/').count() as i64;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// What kind of entry a change leaves behind.
pub enum NewEntry<'a> {
    Deleted,
    File {
        executable: bool,
        was_executable: bool,
    },
    Symlink {
        target: &'a [u8],
    },
    Other,
}

/// The flags for one changed path.
pub fn flag(path: &str, entry: NewEntry<'_>) -> Vec<RiskyChange> {
    let mut out = Vec::new();
    if let Some(why) = risky_path(path) {
        out.push(RiskyChange {
            path: path.into(),
            why: why.into(),
        });
    }
    match entry {
        NewEntry::File {
            executable: true,
            was_executable: false,
        } => out.push(RiskyChange {
            path: path.into(),
            why: "a new executable file".into(),
        }),
        NewEntry::Symlink { target } if link_leaves_repo(path, target) => out.push(RiskyChange {
            path: path.into(),
            why: format!(
                "a symlink pointing outside the repository ({})",
                String::from_utf8_lossy(target)
            ),
        }),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_the_paths_that_deserve_a_look() {
        for p in [
            ".gitattributes",
            "sub/.gitattributes",
            ".gitmodules",
            ".github/workflows/ci.yml",
            ".gitlab-ci.yml",
            ".husky/pre-commit",
            ".pre-commit-config.yaml",
            ".claude/settings.json",
            ".claude/hooks/stop.sh",
            ".claude/commands/x.md",
            "CLAUDE.md",
            "pkg/deep/CLAUDE.md",
            "AGENTS.md",
            ".mcp.json",
            ".cursor/mcp.json",
            ".codex/config.toml",
            ".vscode/tasks.json",
            ".vscode/settings.json",
            ".vscode/launch.json",
            "web/.vscode/tasks.json",
            ".devcontainer/devcontainer.json",
            ".devcontainer.json",
            ".yarnrc.yml",
            ".npmrc",
            "pkg/.npmrc",
            ".envrc",
            "sub/.envrc",
            ".gitpod.yml",
            ".idea/runConfigurations/Run.xml",
            "lefthook.yml",
            ".tool-versions",
            "mise.toml",
            ".config/mise.toml",
            ".pdbrc",
            ".cargo/config.toml",
            "crates/a/.cargo/config.toml",
            ".github/copilot-instructions.md",
        ] {
            assert!(!flag(p, NewEntry::Other).is_empty(), "{p}");
        }
        assert!(flag("src/main.rs", NewEntry::Other).is_empty());
        assert!(flag(".github/CODEOWNERS", NewEntry::Other).is_empty());
        for p in [
            ".editorconfig",
            ".vscode/extensions.json",
            "docs/claude.md",
            "src/CLAUDE.rs",
            "claude/settings.json",
            ".cargo/registry/x",
            "README.md",
        ] {
            assert!(flag(p, NewEntry::Other).is_empty(), "{p}");
        }
    }

    #[test]
    fn links_out_of_the_repository_and_new_executables() {
        let link = |p, t: &'static [u8]| flag(p, NewEntry::Symlink { target: t });
        assert!(!link("a", b"/etc/passwd").is_empty());
        assert!(!link("a", b"../x").is_empty());
        assert!(!link("d/e/a", b"../../../x").is_empty());
        assert!(link("d/e/a", b"../../x").is_empty());
        assert!(link("d/a", b"b/../c").is_empty());
        let exe = |executable, was_executable| {
            flag(
                "run.sh",
                NewEntry::File {
                    executable,
                    was_executable,
                },
            )
        };
        assert!(!exe(true, false).is_empty());
        assert!(exe(true, true).is_empty());
        assert!(exe(false, false).is_empty());
    }
}
