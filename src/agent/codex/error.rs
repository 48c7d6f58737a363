//! How preparing Codex fails, and the versions (and installations) it is told apart by.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CodexError {
    #[error("cannot find the Codex CLI ({0}); install it with `npm install -g @openai/codex`")]
    NotFound(String),
    #[error(
        "{0} is the unrelated npm package named \"codex\" (a static-site generator), not the OpenAI \
         Codex CLI; install the right one with `npm install -g @openai/codex`"
    )]
    WrongPackage(String),
    #[error("cannot read the Codex version from `{program} --version`: {detail}")]
    Version { program: String, detail: String },
    #[error(
        "Codex {0} has no `mcp-server` any more (it was removed in 0.154.0); use protocol \
         \"codex-app-server\" or \"auto\""
    )]
    McpRemoved(Version),
    #[error("{path} is not valid TOML: {message}")]
    BadConfig { path: String, message: String },
    #[error("{0}")]
    McpServers(String),
    #[error("cannot prepare the private CODEX_HOME {path}")]
    Home {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A `major.minor.patch` version (pre-release suffixes are ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    /// Parses `codex-cli 0.169.0`, `0.169.0`, `0.154.0-alpha.2`.
    pub fn parse(text: &str) -> Option<Version> {
        let word = text
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
        let core = word.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        Some(Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next().flatten().unwrap_or(0),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What `codex --version` said.
#[derive(Clone, Debug)]
pub struct Installed {
    pub program: PathBuf,
    pub version: Version,
    /// The first line of the output, e.g. `codex-cli 0.169.0`.
    pub banner: String,
}
