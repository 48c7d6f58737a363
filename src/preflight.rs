/*!
Pre-flight checks of the repository's git directory, before a run creates anything or starts
an agent: a read-only object store or a nearly full disk would otherwise show only when the
first task collects its change — after every agent ran and spent its tokens.

The checks write nothing that stays: a probe file is created and removed in each folder a run
writes to (`objects`, the git directory itself for refs and worktree metadata, and the run
folder `fanout/` or, when it does not exist yet, the deepest existing folder on its way).
*/

use std::path::{Path, PathBuf};

/// Default for `--min-free-mb`.
pub const DEFAULT_MIN_FREE_MB: u64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{path} is not writable ({source}); nothing was run")]
    NotWritable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "only {free_mb} MB free on the filesystem of {path} (at least {min_mb} MB needed, \
         see --min-free-mb); nothing was run"
    )]
    LowSpace {
        path: String,
        free_mb: u64,
        min_mb: u64,
    },
    #[error("cannot read the free space of {path}")]
    Statvfs {
        path: String,
        #[source]
        source: nix::Error,
    },
}

/// Checks that the git directory `common_dir` can take a run: writable and with at least
/// `min_free_mb` MB free (0 turns the space check off).
pub fn check(common_dir: &Path, min_free_mb: u64) -> Result<(), PreflightError> {
    let fanout = common_dir.join("fanout").join("runs");
    let fanout_probe = fanout
        .ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(common_dir)
        .to_path_buf();
    for dir in [
        common_dir.join("objects"),
        common_dir.to_path_buf(),
        fanout_probe,
    ] {
        probe_writable(&dir)?;
    }
    if min_free_mb > 0 {
        let free_mb = free_mb(common_dir)?;
        if free_mb < min_free_mb {
            return Err(PreflightError::LowSpace {
                path: common_dir.display().to_string(),
                free_mb,
                min_mb: min_free_mb,
            });
        }
    }
    Ok(())
}

/// Creates and removes a temp file in `dir`.
fn probe_writable(dir: &PathBuf) -> Result<(), PreflightError> {
    // tempfile removes it again when dropped.
    tempfile::Builder::new()
        .prefix(".fanout-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|source| PreflightError::NotWritable {
            path: dir.display().to_string(),
            source,
        })
}

/// MB available to an unprivileged user on the filesystem of `path`.
fn free_mb(path: &Path) -> Result<u64, PreflightError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| PreflightError::Statvfs {
        path: path.display().to_string(),
        source,
    })?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let bytes = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    Ok(bytes / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_folder_passes_and_keeps_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("objects")).expect("mkdir");
        check(tmp.path(), 1).expect("passes");
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("objects"))
            .expect("read")
            .collect();
        assert!(left.is_empty());
        assert!(!tmp.path().join("fanout").exists());
    }

    #[test]
    fn an_impossible_free_space_demand_fails_naming_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("objects")).expect("mkdir");
        let e = check(tmp.path(), u64::MAX / 2).expect_err("too little space");
        assert!(
            e.to_string().contains(&tmp.path().display().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("--min-free-mb"), "{e}");
    }

    #[test]
    fn a_missing_object_store_is_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = check(tmp.path(), 0).expect_err("no objects folder");
        assert!(e.to_string().contains("objects"), "{e}");
    }
}
