//! What the plan checks and resolves before anything is created: tracked files for templates,
//! agent profiles, programs, the integration gate's command.

use super::error::PlanError;
use super::planned_task::PlannedTask;
use crate::git::repo::UserRepo;
use crate::taskfile::{self, AgentProfile, TaskFile, VerifyCommand};
use std::collections::BTreeMap;
use std::path::Path;

/// The paths of the files tracked at `rev` (blobs and links; not submodules), sorted.
pub fn tracked_files(repo: &UserRepo, rev: &str) -> Result<Vec<String>, String> {
    let base = repo.resolve_base(rev).map_err(|e| crate::error_chain(&e))?;
    let tree = repo
        .repo
        .find_commit(base)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read the tree of {rev}: {e}"))?;
    let mut out = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            if let Some(name) = entry.name() {
                out.push(format!("{dir}{name}"));
            }
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| format!("cannot walk the tree of {rev}: {e}"))?;
    out.sort();
    Ok(out)
}

/// A tracked file's content at `rev`, when it is a file of at most `limit` bytes.
pub fn tracked_content(repo: &UserRepo, rev: &str, path: &str, limit: u64) -> Option<Vec<u8>> {
    let base = repo.resolve_base(rev).ok()?;
    let tree = repo.repo.find_commit(base).and_then(|c| c.tree()).ok()?;
    let entry = tree.get_path(std::path::Path::new(path)).ok()?;
    let odb = repo.repo.odb().ok()?;
    let (size, kind) = odb.read_header(entry.id()).ok()?;
    if kind != git2::ObjectType::Blob || size as u64 > limit {
        return None;
    }
    Some(repo.repo.find_blob(entry.id()).ok()?.content().to_vec())
}

/// Profiles by name: the file's own plus the built-in ones it does not override, env expanded.
pub fn resolve_agents(
    file: &TaskFile,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, AgentProfile>, PlanError> {
    let mut out = BTreeMap::new();
    for name in taskfile::BUILTIN_AGENTS {
        if let Some(p) = crate::agent::builtin_profile(name) {
            out.insert(name.to_string(), p);
        }
    }
    for (name, profile) in &file.agents {
        out.insert(
            name.clone(),
            expand_profile(profile, &format!("$.agents.{name}"), lookup)?,
        );
    }
    Ok(out)
}

pub(super) fn expand_profile(
    profile: &AgentProfile,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<AgentProfile, PlanError> {
    let mut p = profile.clone();
    for (k, v) in p.env.iter_mut() {
        let from_env = v.contains("${");
        *v = taskfile::expand_env(v, lookup)
            .map_err(|e| PlanError::Invalid(format!("{path}.env.{k}: {e}")))?;
        // Values taken from the environment or named like credentials stay out of every log.
        if from_env || crate::redact::is_secret_name(k) {
            crate::redact::register(v);
        }
    }
    for (name, server) in p.mcp_servers.iter_mut() {
        for (k, v) in server.env.iter_mut() {
            let from_env = v.contains("${");
            *v = taskfile::expand_env(v, lookup).map_err(|e| {
                PlanError::Invalid(format!("{path}.mcp_servers.{name}.env.{k}: {e}"))
            })?;
            if from_env || crate::redact::is_secret_name(k) {
                crate::redact::register(v);
            }
        }
    }
    Ok(p)
}

/// A missing agent program is a broken environment: say so before anything is created,
/// instead of failing every task. Commands relative to the worktree (`./x.sh`) are checked
/// when the task starts.
pub(super) fn check_programs(tasks: &[PlannedTask]) -> Result<(), PlanError> {
    let mut checked = std::collections::BTreeSet::new();
    for t in tasks {
        let cmd = t.profile.command.as_str();
        if !checked.insert((t.agent_name.clone(), cmd.to_string())) {
            continue;
        }
        let relative_to_worktree = cmd.contains('/') && !Path::new(cmd).is_absolute();
        if relative_to_worktree {
            continue;
        }
        if crate::agent::codex::is_codex(&t.profile) || cmd == "codex" {
            if let Err(e) = crate::agent::codex::find_program(cmd) {
                return Err(PlanError::Invalid(format!("agent {:?}: {e}", t.agent_name)));
            }
            continue;
        }
        if crate::which::find_program(cmd).is_err() {
            return Err(PlanError::Invalid(format!(
                "agent {:?}: cannot find its command {cmd:?} ({}); nothing was run",
                t.agent_name,
                if cmd.contains('/') {
                    "no such file"
                } else {
                    "not on PATH"
                }
            )));
        }
    }
    Ok(())
}

/// The `claude` program fanout runs for Claude Code (the built-in `claude-code` MCP server,
/// the review gate, diagnoses): the verifier profile's command when it is a `claude`, else
/// `claude` on PATH.
pub fn claude_command(verifier: Option<&AgentProfile>) -> String {
    verifier
        .map(|v| v.command.as_str())
        .filter(|c| {
            c.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("claude"))
        })
        .unwrap_or("claude")
        .to_string()
}

/// A gate command that cannot start would fail on every integration and blame no task: say so
/// before anything runs. Commands relative to the checkout (`./x.sh`) are checked when it runs.
pub(super) fn check_gate_program(verify: &VerifyCommand) -> Result<(), PlanError> {
    let argv = verify.argv();
    let Some(cmd) = argv.first() else {
        return Err(PlanError::Invalid("integrate.verify: empty command".into()));
    };
    if cmd.contains('/') && !Path::new(cmd).is_absolute() {
        return Ok(());
    }
    crate::which::find_program(cmd).map(|_| ()).map_err(|_| {
        PlanError::Invalid(format!(
            "integrate.verify: cannot find its command {cmd:?} ({}); nothing was run",
            if cmd.contains('/') {
                "no such file"
            } else {
                "not on PATH"
            }
        ))
    })
}
