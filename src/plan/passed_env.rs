//! The environment an agent gets from fanout's own: an allow-list. A CI job's tokens, cloud
//! keys and the like stay in fanout; a profile names what else to pass (`env_pass`), or sets
//! values itself (`env`).

use crate::taskfile::Protocol;

/// Always passed when fanout has them: what programs need to run at all.
pub const BASE: &[&str] = &[
    "PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL",
];
/// Where the user's tools live, which fanout otherwise pins itself (the task's environment,
/// docs/taskfile.md): paths, not secrets.
pub const TOOL_LOCATIONS: &[&str] = &[
    "RUSTUP_HOME",
    "CARGO_HOME",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
];
/// Passed by prefix: locale settings, and fanout's own variables (the sandbox's policy, test
/// hooks, the helpers' settings).
pub const BASE_PREFIXES: &[&str] = &["LC_", "FANOUT_"];
/// What a Codex agent needs to reach its model API with a key from the environment: passed
/// to Codex profiles until fanout's egress proxy holds the credentials.
pub const CODEX_CREDENTIALS: &[&str] = &["OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_API_KEY"];
/// Git settings fanout relies on when it starts agents as another uid (`safe.directory`).
pub const GIT_CONFIG_PREFIX: &str = "GIT_CONFIG_";

/// The names a profile's processes get from fanout's environment besides [`BASE`]: the
/// profile's `env_pass`, the protocol's credentials, and the git settings of a dropped root.
pub fn extra_names(protocol: Protocol, env_pass: &[String], drops_root: bool) -> Vec<String> {
    let mut names: Vec<String> = env_pass.to_vec();
    if matches!(
        protocol,
        Protocol::Mcp | Protocol::CodexAppServer | Protocol::Auto
    ) {
        names.extend(CODEX_CREDENTIALS.iter().map(|s| s.to_string()));
    }
    if drops_root {
        names.extend(["GIT_CONFIG_COUNT"].iter().map(|s| s.to_string()).chain(
            std::env::vars().filter_map(|(k, _)| {
                k.strip_prefix(GIT_CONFIG_PREFIX)
                    .filter(|r| r.starts_with("KEY_") || r.starts_with("VALUE_"))
                    .map(|_| k.clone())
            }),
        ));
    }
    names.sort();
    names.dedup();
    names
}

/// Whether `name` of fanout's environment is passed, `extra` being [`extra_names`].
pub fn is_passed(name: &str, extra: &[String]) -> bool {
    BASE.contains(&name)
        || TOOL_LOCATIONS.contains(&name)
        || BASE_PREFIXES.iter().any(|p| name.starts_with(p))
        || extra.iter().any(|e| e == name)
}

/// Every variable of fanout's environment a task's process must not inherit.
pub fn removed(extra: &[String]) -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| !is_passed(k, extra))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allow_list_and_the_named_pass() {
        let extra = extra_names(Protocol::Exec, &["MY_TOOL_HOME".into()], false);
        for kept in [
            "PATH",
            "HOME",
            "LC_ALL",
            "FANOUT_SANDBOX_POLICY",
            "MY_TOOL_HOME",
        ] {
            assert!(is_passed(kept, &extra), "{kept}");
        }
        for gone in [
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "OPENAI_API_KEY",
            "SSH_AUTH_SOCK",
        ] {
            assert!(!is_passed(gone, &extra), "{gone}");
        }
        let codex = extra_names(Protocol::CodexAppServer, &[], false);
        assert!(is_passed("OPENAI_API_KEY", &codex));
        assert!(!is_passed("GITHUB_TOKEN", &codex));
    }
}
