//! The invoking user's credential files and folders, hidden from a tree that runs in a network
//! namespace of its own (`--net isolated`): run as an ordinary user, the agent's tree has the
//! invoker's uid and Landlock lets it read the whole file system, so without this a
//! prompt-injected model could read these and send them out through any allowed destination,
//! or write them into its commit. fanout itself reads what it needs (the Codex login it copies
//! or proxies) in its own process, outside the tree.
//!
//! The list is computed in fanout's process (whose `HOME` is the invoker's; a task's is a
//! private one) and travels in the policy; the sandboxed child mounts over the ones that exist
//! (`sandbox/hide.rs`).

use std::path::{Path, PathBuf};

/// Folders and files beneath a home folder, each with why it is there. A folder is replaced by
/// an empty read-only one, a file by an empty read-only one.
const IN_HOME: &[(&str, &str)] = &[
    // Codex: `auth.json` (API key or ChatGPT login), `config.toml` (MCP servers' tokens),
    // session transcripts.
    (".codex", "Codex's login and transcripts"),
    // Claude Code: `.credentials.json` (its login), transcripts, settings with keys.
    (".claude", "Claude Code's login and transcripts"),
    // Also inside `.claude`: hidden on its own where the folder cannot be (it holds the
    // program, e.g. Claude Code's local install in `~/.claude/local`).
    (".claude/.credentials.json", "Claude Code's login"),
    (".codex/auth.json", "Codex's login"),
    // Claude Code's global state: its OAuth account and, for an API key login, the key.
    (".claude.json", "Claude Code's account and key"),
    (".ssh", "SSH private keys"),
    (".gnupg", "GnuPG private keys"),
    (".password-store", "pass's password store"),
    (".aws", "AWS access keys"),
    (".azure", "Azure CLI tokens"),
    (".kube", "Kubernetes cluster credentials"),
    (".config/gcloud", "Google Cloud credentials"),
    (".config/gh", "GitHub CLI tokens (hosts.yml)"),
    (".config/hub", "hub's GitHub token"),
    (
        ".config/git/credentials",
        "git's credential store (XDG location)",
    ),
    (".git-credentials", "git's credential store"),
    (".netrc", "logins for HTTP, FTP and git over HTTPS"),
    (".docker", "container registry logins (config.json)"),
    (".npmrc", "npm registry tokens"),
    (".yarnrc.yml", "Yarn registry tokens"),
    (".pypirc", "PyPI upload tokens"),
    (".gem/credentials", "RubyGems API key"),
    // Not the whole `.cargo`: agents use its toolchains (`CARGO_HOME` points there).
    (".cargo/credentials.toml", "crates.io token"),
    (".cargo/credentials", "crates.io token (old name)"),
    (
        ".terraform.d/credentials.tfrc.json",
        "Terraform Cloud tokens",
    ),
    (".vault-token", "HashiCorp Vault token"),
    (".m2/settings.xml", "Maven repository passwords"),
    (".gradle/gradle.properties", "Gradle repository credentials"),
];

/// Variables naming a credential file or folder elsewhere than its default place (each the
/// variable its tool reads; `KUBECONFIG` may list several files).
const FROM_ENV: &[&str] = &[
    "CODEX_HOME",
    "CLAUDE_CONFIG_DIR",
    "GH_CONFIG_DIR",
    "CLOUDSDK_CONFIG",
    "DOCKER_CONFIG",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "NPM_CONFIG_USERCONFIG",
    "KUBECONFIG",
    "GNUPGHOME",
];

/// Beneath `XDG_CONFIG_HOME` when it is set.
const IN_XDG_CONFIG: &[&str] = &["gcloud", "gh", "hub", "git/credentials"];

/// The credential paths of `homes` and of what `var` names (absolute paths only), in order,
/// without duplicates. Whether they exist is decided where they are hidden.
pub fn candidates(homes: &[PathBuf], var: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        if p.is_absolute() && p != Path::new("/") && !out.contains(&p) {
            out.push(p);
        }
    };
    for home in homes {
        for (rel, _why) in IN_HOME {
            add(home.join(rel));
        }
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        for rel in IN_XDG_CONFIG {
            add(Path::new(&x).join(rel));
        }
    }
    for name in FROM_ENV {
        if let Some(v) = var(name) {
            for p in v.split(':').filter(|p| !p.is_empty()) {
                add(PathBuf::from(p));
            }
        }
    }
    out
}

/// The invoking user's credential paths, from fanout's own environment: its `HOME` and the
/// home its uid's account names (they differ under `sudo`, for instance).
pub fn of_invoker() -> Vec<PathBuf> {
    let mut homes: Vec<PathBuf> = std::env::var_os("HOME")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::geteuid()) {
        if !homes.contains(&user.dir) {
            homes.push(user.dir);
        }
    }
    // A home of `/` (system accounts) would hide nothing useful and `/.ssh` is nobody's.
    homes.retain(|h| h.is_absolute() && h != Path::new("/"));
    candidates(&homes, &|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_home_entries_and_the_variables_places() {
        let env = |n: &str| match n {
            "CODEX_HOME" => Some("/srv/codex".to_string()),
            "KUBECONFIG" => Some("/a/k1::/b/k2:relative".to_string()),
            "XDG_CONFIG_HOME" => Some("/x".to_string()),
            _ => None,
        };
        let got = candidates(&["/h".into(), "/h".into()], &env);
        for want in [
            "/h/.codex",
            "/h/.claude/.credentials.json",
            "/h/.ssh",
            "/h/.netrc",
            "/h/.config/gh",
            "/x/gh",
            "/srv/codex",
            "/a/k1",
            "/b/k2",
        ] {
            assert!(got.contains(&PathBuf::from(want)), "{want} in {got:?}");
        }
        assert!(!got.iter().any(|p| p.ends_with("relative")), "{got:?}");
        // Each once, although the home was given twice.
        assert_eq!(got.iter().filter(|p| p.ends_with(".ssh")).count(), 1);
        // Folders before the files inside them: a hidden folder makes them vanish.
        let pos = |p: &str| got.iter().position(|g| g == Path::new(p));
        assert!(pos("/h/.claude") < pos("/h/.claude/.credentials.json"));
        // The toolchains stay: only cargo's token file.
        assert!(!got.contains(&PathBuf::from("/h/.cargo")));
    }
}
