//! The user's checkout as the plan sees it: uncommitted changes left out of a run, and the
//! identity task commits are authored with.

use crate::git::repo::UserRepo;
use crate::taskfile::{self};

/// A warning when the checkout has uncommitted changes (tracked or untracked, not ignored)
/// while the run starts from the commit checked out: the tasks will not see them.
pub(super) fn uncommitted_warning(repo: &UserRepo, base: git2::Oid) -> Vec<String> {
    let head = repo.repo.head().ok().and_then(|h| h.target());
    if head != Some(base) {
        return Vec::new();
    }
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .include_ignored(false)
        .recurse_untracked_dirs(false);
    let Ok(statuses) = repo.repo.statuses(Some(&mut opts)) else {
        return Vec::new();
    };
    let paths: Vec<String> = statuses
        .iter()
        .filter(|s| s.status() != git2::Status::CURRENT)
        .filter_map(|s| s.path().map(str::to_string))
        .collect();
    if paths.is_empty() {
        return Vec::new();
    }
    let shown = paths.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let more = if paths.len() > 5 {
        format!(" and {} more", paths.len() - 5)
    } else {
        String::new()
    };
    vec![format!(
        "the checkout has uncommitted changes the run does not include ({shown}{more}): tasks start from the last commit; commit them first to include them"
    )]
}

/// Who task commits are authored by: the repository's own identity (`user.name`/`user.email`
/// in its `.git/config`), else the task file's `commit.author`, else the identity of git's
/// global, XDG or system configuration, else fanout (`None`). The task file's author is said
/// for this run, so it wins over a machine-wide identity: as root, root's own global identity
/// would otherwise sign every task of a nightly bot.
pub fn commit_author(repo: &git2::Repository, from_file: Option<&str>) -> Option<(String, String)> {
    local_config(repo)
        .as_ref()
        .and_then(identity)
        .or_else(|| from_file.and_then(taskfile::parse_author))
        .or_else(|| git_config(repo).as_ref().and_then(identity))
}

/// `user.name` and `user.email` of `config`, both set and not blank.
fn identity(config: &git2::Config) -> Option<(String, String)> {
    let name = config.get_string("user.name").ok()?;
    let email = config.get_string("user.email").ok()?;
    (!name.trim().is_empty() && !email.trim().is_empty()).then_some((name, email))
}

/// The repository's own configuration file alone (an empty one when it has none).
fn local_config(repo: &git2::Repository) -> Option<git2::Config> {
    let mut cfg = git2::Config::new().ok()?;
    let path = repo.commondir().join("config");
    if path.is_file() {
        let _ = cfg.add_file(&path, git2::ConfigLevel::Local, false);
    }
    cfg.snapshot().ok()
}

/// The repository's configuration as git reads it: libgit2 ignores `GIT_CONFIG_GLOBAL`,
/// `GIT_CONFIG_SYSTEM` and `GIT_CONFIG_NOSYSTEM`, git (and CI setups) rely on them.
pub(super) fn git_config(repo: &git2::Repository) -> Option<git2::Config> {
    use git2::{Config, ConfigLevel};
    let mut cfg = Config::new().ok()?;
    let mut add = |path: std::path::PathBuf, level| {
        if path.is_file() {
            let _ = cfg.add_file(&path, level, false);
        }
    };
    match std::env::var_os("GIT_CONFIG_SYSTEM") {
        _ if std::env::var_os("GIT_CONFIG_NOSYSTEM").is_some() => {}
        Some(p) => add(p.into(), ConfigLevel::System),
        None => {
            if let Ok(p) = Config::find_system() {
                add(p, ConfigLevel::System)
            }
        }
    }
    match std::env::var_os("GIT_CONFIG_GLOBAL") {
        Some(p) => add(p.into(), ConfigLevel::Global),
        None => {
            for p in [Config::find_xdg(), Config::find_global()]
                .into_iter()
                .flatten()
            {
                let level = if p.ends_with(".gitconfig") {
                    ConfigLevel::Global
                } else {
                    ConfigLevel::XDG
                };
                add(p, level);
            }
        }
    }
    add(repo.commondir().join("config"), ConfigLevel::Local);
    cfg.snapshot().ok()
}
