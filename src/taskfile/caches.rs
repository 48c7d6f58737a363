//! The named cache presets of the task file's `caches` field: the variables each sets, and the
//! parts of the cache folder that are shared between tasks and runs (only what is a cache —
//! never a tool's configuration, installed programs or credentials, which stay per task).

/// The variables a cache preset sets, each to a folder of the task's view of the cache
/// (relative; "" = the view itself).
pub fn preset(name: &str) -> Option<&'static [(&'static str, &'static str)]> {
    Some(match name {
        // A private CARGO_HOME per task (config.toml, bin/, credentials, env stay the task's own)
        // whose registry/ and git/ are the shared ones; the toolchain stays in RUSTUP_HOME.
        "cargo" => &[("CARGO_HOME", "")],
        "pip" => &[("PIP_CACHE_DIR", "")],
        "uv" => &[("UV_CACHE_DIR", "")],
        "npm" => &[("npm_config_cache", "")],
        "yarn" => &[("YARN_CACHE_FOLDER", "")],
        // The module cache is shared; the build and test-result cache is per task.
        "go" => &[("GOMODCACHE", "mod"), ("GOCACHE", "build")],
        _ => return None,
    })
}

/// The subfolders of a preset's cache that are shared ("" = the whole folder); everything
/// else of the view is private to the task and starts empty.
pub fn shared_parts(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "cargo" => &["registry", "git"],
        "pip" | "uv" | "yarn" => &[""],
        // npm's content-addressed cache; `_npx` (installed programs) and `_logs` stay private.
        "npm" => &["_cacache"],
        "go" => &["mod"],
        _ => return None,
    })
}

/// The names of the presets, for messages and the schema.
pub const PRESETS: &[&str] = &["cargo", "pip", "uv", "npm", "yarn", "go"];
