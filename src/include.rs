/*!
`include` (task file) and `.worktreeinclude` (repository root): ignored files of the user's
checkout — `.env`, local configuration — copied into every task's workspace before its setup
and agent run, so builds and tests work there as in the checkout. Only ignored files are
copied (anything else would become part of the task's change); `.git` is never copied,
symlinks are never followed: a symlink is copied as a symlink when its relative target stays
inside the checkout, skipped with a warning otherwise. The workspace is fanout's own at this
point (the agent has not run), but a tracked symlink in it is never written through.
*/

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The file at the repository root holding more include globs, one per line.
pub const WORKTREE_INCLUDE: &str = ".worktreeinclude";

#[derive(Debug, thiserror::Error)]
pub enum IncludeError {
    #[error("invalid include glob {glob:?}: {source}")]
    Glob {
        glob: String,
        #[source]
        source: globset::Error,
    },
    #[error("cannot copy {path} into the workspace")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One thing to copy, relative to the checkout's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File(PathBuf),
    /// A symlink with its (relative, inside) target.
    Link(PathBuf, PathBuf),
}

/// The globs of the task file plus those of `.worktreeinclude` (blank lines and `#` comments
/// skipped, a leading `/` dropped).
pub fn globs(workdir: &Path, from_file: &[String]) -> Vec<String> {
    let mut out: Vec<String> = from_file.to_vec();
    if let Ok(text) = std::fs::read_to_string(workdir.join(WORKTREE_INCLUDE)) {
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.trim_start_matches('/').to_string()),
        );
    }
    out
}

fn globset(globs: &[String]) -> Result<GlobSet, IncludeError> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob = GlobBuilder::new(g.trim_end_matches('/'))
            .literal_separator(true)
            .build()
            .map_err(|source| IncludeError::Glob {
                glob: g.clone(),
                source,
            })?;
        b.add(glob);
    }
    b.build().map_err(|source| IncludeError::Glob {
        glob: globs.join(", "),
        source,
    })
}

/// What to copy from the user's checkout (found once per run), and warnings for what is
/// skipped. A matching folder brings everything beneath it.
pub fn find(
    repo: &git2::Repository,
    workdir: &Path,
    globs: &[String],
) -> Result<(Vec<Entry>, Vec<String>), IncludeError> {
    let (mut entries, mut warnings) = (Vec::new(), Vec::new());
    if globs.is_empty() {
        return Ok((entries, warnings));
    }
    let set = globset(globs)?;
    walk(
        repo,
        workdir,
        Path::new(""),
        &set,
        false,
        &mut entries,
        &mut warnings,
    );
    Ok((entries, warnings))
}

fn walk(
    repo: &git2::Repository,
    root: &Path,
    rel: &Path,
    set: &GlobSet,
    matched: bool,
    entries: &mut Vec<Entry>,
    warnings: &mut Vec<String>,
) {
    let Ok(dir) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    let mut names: Vec<_> = dir.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        if name == ".git" {
            continue;
        }
        let path = rel.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(root.join(&path)) else {
            continue;
        };
        let hit = matched || set.is_match(&path);
        let ignored = || repo.is_path_ignored(&path).unwrap_or(false);
        if meta.is_dir() {
            // A matching ignored folder comes whole; a matching tracked one only by its own
            // ignored files that match.
            let whole = hit && (matched || ignored());
            walk(repo, root, &path, set, whole, entries, warnings);
            continue;
        }
        if !hit {
            continue;
        }
        if !matched && !ignored() {
            // Tracked files are in the workspace already; untracked ones would be committed.
            if !is_tracked(repo, &path) {
                warnings.push(format!(
                    "include: {} is not ignored by git; not copied (it would become part of every task's change)",
                    path.display()
                ));
            }
            continue;
        }
        if meta.file_type().is_symlink() {
            match std::fs::read_link(root.join(&path)) {
                Ok(target) if stays_inside(&path, &target) => {
                    entries.push(Entry::Link(path, target))
                }
                _ => warnings.push(format!(
                    "include: {} is a symlink leading outside the checkout; not copied",
                    path.display()
                )),
            }
        } else if meta.is_file() {
            entries.push(Entry::File(path));
        }
    }
}

fn is_tracked(repo: &git2::Repository, path: &Path) -> bool {
    repo.index()
        .ok()
        .and_then(|i| i.get_path(path, 0))
        .is_some()
}

/// Whether a relative symlink at `link` (relative to the root) pointing at `target` resolves
/// inside the root, lexically (no link is followed to find out).
fn stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: usize = link.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => return false,
        }
    }
    true
}

/// Copies `entries` from `src` (the user's checkout) into the fresh workspace `dst`. Returns
/// warnings for entries skipped because the workspace has something else in their place.
pub fn copy(src: &Path, dst: &Path, entries: &[Entry]) -> Result<Vec<String>, IncludeError> {
    let mut warnings = Vec::new();
    for e in entries {
        let rel = match e {
            Entry::File(p) | Entry::Link(p, _) => p,
        };
        let io = |source| IncludeError::Io {
            path: rel.display().to_string(),
            source,
        };
        if !make_parents(dst, rel).map_err(io)? {
            warnings.push(format!(
                "include: {} lies under a symlink or file of the workspace; not copied",
                rel.display()
            ));
            continue;
        }
        let to = dst.join(rel);
        if std::fs::symlink_metadata(&to).is_ok() {
            continue; // already there (tracked, or copied through a folder match)
        }
        match e {
            Entry::Link(_, target) => std::os::unix::fs::symlink(target, &to).map_err(io)?,
            Entry::File(_) => copy_file(&src.join(rel), &to).map_err(io)?,
        }
    }
    Ok(warnings)
}

/// Creates the folders above `rel` inside `root`; `false` when one of them is a symlink or a
/// file (nothing is written through a link).
fn make_parents(root: &Path, rel: &Path) -> std::io::Result<bool> {
    let mut at = root.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Copies one regular file, its mode kept, never opening a symlink on either side.
fn copy_file(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut input = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)?;
    let mode = input.metadata()?.permissions().mode() & 0o777;
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    std::io::copy(&mut input, &mut output)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_lexically() {
        assert!(stays_inside(Path::new("a/link"), Path::new("../b")));
        assert!(stays_inside(Path::new("link"), Path::new("b/c")));
        assert!(!stays_inside(Path::new("link"), Path::new("../outside")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../x")));
        assert!(!stays_inside(Path::new("link"), Path::new("/etc/passwd")));
    }
}
