/*!
Looking a program up the way `execvp` would: a command with a `/` is a path as given,
anything else is the first executable file of that name in a `PATH` folder.
*/

use std::path::{Path, PathBuf};

/// Why a program was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    /// A path (the command has a `/`) that is not a file.
    #[error("{0} does not exist")]
    NoSuchFile(String),
    /// A bare name that no `PATH` folder holds as an executable file.
    #[error("no `{0}` on PATH")]
    NotOnPath(String),
}

/// Where `command` is: a path as given when it is a file, else the first executable file of
/// that name on `PATH`. (An explicit path is not checked for the executable bit: starting it
/// says why it cannot run; see [`is_executable`].)
pub fn find_program(command: &str) -> Result<PathBuf, NotFound> {
    if command.contains('/') {
        let p = PathBuf::from(command);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(NotFound::NoSuchFile(command.to_string()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(command))
        .find(|p| is_executable(p))
        .ok_or_else(|| NotFound::NotOnPath(command.to_string()))
}

/// A regular file (after links) with an executable bit.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Folders a program lives in (its folder; a Node package's whole `node_modules`), readable
/// under `--read strict`.
pub fn program_dirs(command: &str) -> Vec<PathBuf> {
    let found = if command.contains('/') {
        Some(PathBuf::from(command))
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(command))
                .find(|p| p.is_file())
        })
    };
    let mut out = Vec::new();
    if let Some(p) = found {
        for candidate in [Some(p.clone()), p.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            // Node launchers need their whole package tree.
            let root = candidate
                .ancestors()
                .find(|a| a.file_name().is_some_and(|n| n == "node_modules"))
                .map(Path::to_path_buf)
                .or_else(|| candidate.parent().map(Path::to_path_buf));
            out.extend(root);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_given_and_names_on_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").expect("write");
        let exe = dir.path().join("exe");
        std::fs::write(&exe, "x").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        let plain_s = plain.display().to_string();
        assert_eq!(find_program(&plain_s), Ok(plain.clone()));
        assert!(!is_executable(&plain));
        assert!(is_executable(&exe));
        let missing = dir.path().join("missing").display().to_string();
        assert_eq!(
            find_program(&missing),
            Err(NotFound::NoSuchFile(missing.clone()))
        );
        // Bare names: only PATH lookups, never the current folder.
        assert_eq!(
            find_program("fanout-no-such-program-here"),
            Err(NotFound::NotOnPath("fanout-no-such-program-here".into()))
        );
        assert!(find_program("sh").is_ok_and(|p| is_executable(&p)));
    }
}
