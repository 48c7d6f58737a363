/*!
A task's change merged onto another head with its conflicts marked, as files for a workspace
(`--on-conflict resolve`): the paths that merge cleanly hold the merged content, the conflicting
ones hold conflict markers (`<<<<<<< integration`, `=======`, `>>>>>>> <task>`); and whether a
committed tree still holds any.
*/

use std::collections::BTreeSet;
use std::path::Path;

use git2::{Oid, Repository};

use super::merge_rules::MergeRules;

/// Longest excerpt of one file's conflicting hunks (bytes).
const HUNKS_PER_FILE: usize = 4000;

/// A path's new content and mode, or `None` for a path deleted.
pub type Content = Option<(Vec<u8>, u32)>;

/// The change merged as far as it goes.
#[derive(Clone, Debug, Default)]
pub struct Marked {
    /// (path, content) to write over the head's checkout.
    pub files: Vec<(String, Content)>,
    /// The paths written with conflict markers.
    pub marked: Vec<String>,
    /// Every conflicting path (marked, or a deletion against a change).
    pub conflicted: BTreeSet<String>,
    /// The conflicting regions of both sides, and notes on deletion conflicts.
    pub hunks: String,
}

/// Merges `commit` (its change against its first parent) onto `head`; `label` names the
/// change's side in the markers. The task file's `merge` rules resolve what they cover first,
/// as the integration does: a path with a `union`, `ours` or `theirs` rule gets no markers.
pub fn merge_marked(
    repo: &Repository,
    head: Oid,
    commit: Oid,
    label: &str,
    rules: &MergeRules,
) -> Result<Marked, git2::Error> {
    let pick = repo.find_commit(commit)?;
    let ancestor = pick.parent(0)?.tree()?;
    let theirs = pick.tree()?;
    let ours = repo.find_commit(head)?.tree()?;
    let mut index = repo.merge_trees(&ancestor, &ours, &theirs, None)?;
    if index.has_conflicts() && !rules.is_empty() {
        super::merge_resolve::resolve(repo, &mut index, rules)
            .map_err(|e| git2::Error::from_str(&crate::error_chain(&e)))?;
    }
    let mut out = Marked::default();
    for c in index.conflicts()? {
        conflict(repo, &c?, label, &mut out)?;
    }
    // The paths that merged cleanly: what the change touched, as the merge has it.
    let diff = repo.diff_tree_to_tree(Some(&ancestor), Some(&theirs), None)?;
    for d in diff.deltas() {
        for file in [d.old_file(), d.new_file()] {
            let Some(path) = file.path().and_then(|p| p.to_str()) else {
                continue;
            };
            if out.conflicted.contains(path) || out.files.iter().any(|(p, _)| p == path) {
                continue;
            }
            let now = index.get_path(Path::new(path), 0);
            let before = ours.get_path(Path::new(path)).ok();
            match (now, before) {
                (Some(e), Some(b)) if e.id == b.id() && e.mode == b.filemode() as u32 => {}
                (Some(e), _) => {
                    let blob = repo.find_blob(e.id)?;
                    out.files
                        .push((path.to_string(), Some((blob.content().to_vec(), e.mode))));
                }
                (None, Some(_)) => out.files.push((path.to_string(), None)),
                (None, None) => {}
            }
        }
    }
    Ok(out)
}

/// One conflict of the merge index: the file with markers, or the side that kept a file the
/// other deleted (said in the hunks).
fn conflict(
    repo: &Repository,
    c: &git2::IndexConflict,
    label: &str,
    out: &mut Marked,
) -> Result<(), git2::Error> {
    let path = [&c.our, &c.their, &c.ancestor]
        .iter()
        .find_map(|e| e.as_ref())
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .unwrap_or_default();
    out.conflicted.insert(path.clone());
    match (&c.our, &c.their) {
        (Some(o), Some(t)) => {
            let mut opts = git2::MergeFileOptions::new();
            opts.our_label("integration").their_label(label);
            let anc = c.ancestor.as_ref().unwrap_or(o);
            let merged = repo.merge_file_from_index(anc, o, t, Some(&mut opts))?;
            let content = merged.content().to_vec();
            out.hunks.push_str(&file_hunks(&path, &content));
            out.files.push((path.clone(), Some((content, t.mode))));
            out.marked.push(path);
        }
        (None, Some(t)) => {
            // The integration deleted what the change changed: the change's version stays.
            let blob = repo.find_blob(t.id)?;
            out.files
                .push((path.clone(), Some((blob.content().to_vec(), t.mode))));
            out.hunks.push_str(&format!(
                "\n{path}: the integration deleted this file; your version is in the workspace. Delete it or keep it.\n"
            ));
        }
        (Some(_), None) => out.hunks.push_str(&format!(
            "\n{path}: you deleted this file, the integration changed it; the integration's version is in the workspace. Delete it or keep it.\n"
        )),
        (None, None) => {}
    }
    Ok(())
}

/// The commits (by name) among `merged` that changed one of `paths` against their parent.
pub fn touching(
    repo: &Repository,
    merged: &[(String, Oid)],
    paths: &BTreeSet<String>,
) -> Result<Vec<String>, git2::Error> {
    let mut met = Vec::new();
    for (id, commit) in merged {
        let c = repo.find_commit(*commit)?;
        let (tree, parent) = (c.tree()?, c.parent(0)?.tree()?);
        let touches = paths.iter().any(|p| {
            let p = Path::new(p);
            let a = tree.get_path(p).ok().map(|e| (e.id(), e.filemode()));
            let b = parent.get_path(p).ok().map(|e| (e.id(), e.filemode()));
            a != b
        });
        if touches {
            met.push(id.clone());
        }
    }
    Ok(met)
}

/// The conflicting regions of a file written with markers (both sides), capped.
fn file_hunks(path: &str, content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let mut out = format!("\n--- {path}\n");
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("<<<<<<< ") {
            inside = true;
        }
        if inside {
            if out.len() > HUNKS_PER_FILE {
                out.push_str("(more conflicting lines in the file)\n");
                break;
            }
            out.push_str(line);
            out.push('\n');
        }
        if line.starts_with(">>>>>>> ") {
            inside = false;
        }
    }
    out
}

/// The files among `marked` that still hold a conflict in `commit`'s tree.
pub fn markers_left(
    repo: &Repository,
    commit: Oid,
    marked: &[String],
) -> Result<Vec<String>, git2::Error> {
    let tree = repo.find_commit(commit)?.tree()?;
    let mut left = Vec::new();
    for p in marked {
        let Ok(entry) = tree.get_path(Path::new(p)) else {
            continue;
        };
        let Ok(blob) = repo.find_blob(entry.id()) else {
            continue;
        };
        if has_markers(blob.content()) {
            left.push(p.clone());
        }
    }
    Ok(left)
}

/// Whether a file still holds a conflict: a `<<<<<<< ` line, later a `>>>>>>> ` line.
fn has_markers(content: &[u8]) -> bool {
    let text = String::from_utf8_lossy(content);
    let mut open = false;
    for line in text.lines() {
        if line.starts_with("<<<<<<< ") || line == "<<<<<<<" {
            open = true;
        } else if open && (line.starts_with(">>>>>>> ") || line == ">>>>>>>") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_only_as_a_pair_of_lines() {
        assert!(has_markers(
            b"a\n<<<<<<< integration\nx\n=======\ny\n>>>>>>> b\n"
        ));
        assert!(!has_markers(b"a\n<<<<<<< only an opening\n"));
        assert!(!has_markers(
            b"text mentioning >>>>>>> and <<<<<<< inline\n"
        ));
    }

    #[test]
    fn hunks_show_both_sides() {
        let h = file_hunks(
            "line.txt",
            b"top\n<<<<<<< integration\nbase a\n=======\nbase b\n>>>>>>> b\nend\n",
        );
        assert!(h.contains("base a") && h.contains("base b"), "{h}");
        assert!(!h.contains("top") && !h.contains("end"), "{h}");
    }
}
