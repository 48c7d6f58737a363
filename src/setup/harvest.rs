//! What a setup made, taken out of its checkout into its layer: every untracked or ignored
//! entry that was not there before the setup ran (`node_modules/`, `.venv/`, `target/`).
//! Tracked files are the start tree's: a setup that changes or deletes one fails, since the
//! layer could not carry that change faithfully (the lower checkout under it wins).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use git2::{Repository, Status, StatusOptions};

use super::SetupError;

/// How many changed tracked files a failure names.
const NAMED: usize = 5;

/// The untracked and ignored entries of the checkout (folders whole, as `dir/`), and the
/// tracked paths that differ from the start tree.
pub fn untracked(repo: &Repository) -> Result<(BTreeSet<String>, Vec<String>), SetupError> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .include_ignored(true)
        .recurse_untracked_dirs(false)
        .recurse_ignored_dirs(false)
        .exclude_submodules(true)
        .include_unmodified(false);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(|e| SetupError::Harvest(format!("cannot read the checkout's status: {e}")))?;
    let (mut new, mut changed) = (BTreeSet::new(), Vec::new());
    for s in statuses.iter() {
        let Some(path) = s.path().map(str::to_string) else {
            return Err(SetupError::Harvest(
                "the setup made a path that is not UTF-8".into(),
            ));
        };
        let st = s.status();
        if st.intersects(Status::WT_NEW | Status::IGNORED) {
            new.insert(path);
        } else if st.intersects(
            Status::WT_MODIFIED | Status::WT_DELETED | Status::WT_TYPECHANGE | Status::WT_RENAMED,
        ) {
            changed.push(path);
        }
    }
    Ok((new, changed))
}

/// Moves what the setup made (the entries of `after` not in `before`) from `checkout` into
/// `layer`; refuses changes to tracked files. Returns the entries moved.
pub fn take(
    checkout: &Path,
    before: &BTreeSet<String>,
    (after, changed): (BTreeSet<String>, Vec<String>),
    layer: &Path,
) -> Result<Vec<String>, SetupError> {
    if !changed.is_empty() {
        let mut names: Vec<&str> = changed.iter().take(NAMED).map(String::as_str).collect();
        if changed.len() > NAMED {
            names.push("…");
        }
        return Err(SetupError::Harvest(format!(
            "the setup changed tracked files ({}); a shared setup may only create untracked or ignored files (node_modules, .venv, target) — make it leave tracked files alone, or use \"once\": false",
            names.join(", ")
        )));
    }
    std::fs::create_dir_all(layer).map_err(|e| io("create", layer, e))?;
    let mut moved = Vec::new();
    for entry in after.difference(before) {
        let rel = entry.trim_end_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == "." || c == ".git") {
            continue;
        }
        let (from, to) = (checkout.join(rel), layer.join(rel));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        std::fs::rename(&from, &to).map_err(|e| io("move", &from, e))?;
        moved.push(rel.to_string());
    }
    Ok(moved)
}

fn io(what: &str, p: &Path, e: std::io::Error) -> SetupError {
    SetupError::Harvest(format!("cannot {what} {}: {e}", p.display()))
}

/// Where a layer's own files are beneath its folder.
pub fn layer_root(dir: &Path) -> PathBuf {
    dir.join("layer")
}
