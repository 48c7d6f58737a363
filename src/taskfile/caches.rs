//! The named cache presets of the task file's `caches` field.

/// The variables a cache preset sets, each to a folder of the cache (relative; "" = itself).
pub fn preset(name: &str) -> Option<&'static [(&'static str, &'static str)]> {
    Some(match name {
        // Registry index, crate sources and git checkouts; the toolchain stays in RUSTUP_HOME.
        "cargo" => &[("CARGO_HOME", "")],
        "pip" => &[("PIP_CACHE_DIR", "")],
        "uv" => &[("UV_CACHE_DIR", "")],
        "npm" => &[("npm_config_cache", "")],
        "yarn" => &[("YARN_CACHE_FOLDER", "")],
        "go" => &[("GOMODCACHE", "mod"), ("GOCACHE", "build")],
        _ => return None,
    })
}

/// The names of the presets, for messages and the schema.
pub const PRESETS: &[&str] = &["cargo", "pip", "uv", "npm", "yarn", "go"];
