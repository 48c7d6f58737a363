/*!
`--on-conflict resolve`: a conflicting task goes back to its own agent. Its workspace starts at
the integration head with the task's change merged as far as it goes: the paths that merge
cleanly hold the merged content, the conflicting ones hold conflict markers (`<<<<<<<`,
`=======`, `>>>>>>>`). Its prompt names the tasks whose changes it meets and shows the hunks of
both sides. A resolution that leaves markers fails its gates.
*/

use git2::{Oid, Repository};

use crate::report::GateResult;

/// Longest excerpt of one file's conflicting hunks in the prompt (bytes).
const HUNKS_PER_FILE: usize = 4000;

/// A path's new content and mode, or `None` for a path deleted.
pub(crate) type Content = Option<(Vec<u8>, u32)>;

/// What the workspace of a resolve round gets on top of the integration head.
#[derive(Clone, Debug, Default)]
pub(crate) struct Resolution {
    /// (path, content and mode), or `None` for a path the task deleted.
    pub files: Vec<(String, Content)>,
    /// The paths written with conflict markers.
    pub marked: Vec<String>,
    /// The prompt's description of the conflict.
    pub text: String,
}

/// Merges the task's `commit` (its change against its parent) onto `head`: what the workspace
/// gets, and the description for the agent. `merged`: the tasks integrated so far (their ids and
/// commits), to name the ones the change meets.
pub(crate) fn prepare(
    repo: &Repository,
    head: Oid,
    commit: Oid,
    task_id: &str,
    merged: &[(String, Oid)],
) -> Result<Resolution, git2::Error> {
    let pick = repo.find_commit(commit)?;
    let ancestor = pick.parent(0)?.tree()?;
    let theirs = pick.tree()?;
    let ours = repo.find_commit(head)?.tree()?;
    let index = repo.merge_trees(&ancestor, &ours, &theirs, None)?;
    let mut out = Resolution::default();
    let mut conflicted = std::collections::BTreeSet::new();
    let mut hunks = String::new();
    for c in index.conflicts()? {
        let c = c?;
        let path = [&c.our, &c.their, &c.ancestor]
            .iter()
            .find_map(|e| e.as_ref())
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .unwrap_or_default();
        conflicted.insert(path.clone());
        match (&c.our, &c.their) {
            (Some(o), Some(t)) => {
                let mut opts = git2::MergeFileOptions::new();
                opts.our_label("integration").their_label(task_id);
                let anc = c.ancestor.as_ref();
                let merged_file =
                    repo.merge_file_from_index(anc.unwrap_or(o), o, t, Some(&mut opts))?;
                let content = merged_file.content().to_vec();
                hunks.push_str(&file_hunks(&path, &content));
                out.files.push((path.clone(), Some((content, t.mode))));
                out.marked.push(path);
            }
            (None, Some(t)) => {
                // The integration deleted what the task changed: the task's version stays.
                let blob = repo.find_blob(t.id)?;
                out.files
                    .push((path.clone(), Some((blob.content().to_vec(), t.mode))));
                hunks.push_str(&format!(
                    "\n{path}: the integration deleted this file; your version is in the workspace. Delete it or keep it.\n"
                ));
            }
            (Some(_), None) => {
                hunks.push_str(&format!(
                    "\n{path}: you deleted this file, the integration changed it; the integration's version is in the workspace. Delete it or keep it.\n"
                ));
            }
            (None, None) => {}
        }
    }
    // The paths that merged cleanly: what the task changed, as the merge has it.
    let diff = repo.diff_tree_to_tree(Some(&ancestor), Some(&theirs), None)?;
    for d in diff.deltas() {
        for file in [d.old_file(), d.new_file()] {
            let Some(path) = file.path().and_then(|p| p.to_str()) else {
                continue;
            };
            if conflicted.contains(path) || out.files.iter().any(|(p, _)| p == path) {
                continue;
            }
            let now = index.get_path(std::path::Path::new(path), 0);
            let before = ours.get_path(std::path::Path::new(path)).ok();
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
    let met = tasks_touching(repo, merged, &conflicted)?;
    out.text = describe(task_id, &met, &conflicted, &hunks);
    let deleted: Vec<&str> = out
        .files
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(p, _)| p.as_str())
        .collect();
    if !deleted.is_empty() {
        // An overlay workspace cannot be given a deletion from outside the task's namespace.
        out.text.push_str(&format!(
            "\nYour change deletes {}: delete any of them the workspace still has.\n",
            deleted.join(", ")
        ));
    }
    Ok(out)
}

/// The merged tasks whose commits changed one of `paths`.
fn tasks_touching(
    repo: &Repository,
    merged: &[(String, Oid)],
    paths: &std::collections::BTreeSet<String>,
) -> Result<Vec<String>, git2::Error> {
    let mut met = Vec::new();
    for (id, commit) in merged {
        let c = repo.find_commit(*commit)?;
        let (tree, parent) = (c.tree()?, c.parent(0)?.tree()?);
        let touches = paths.iter().any(|p| {
            let p = std::path::Path::new(p);
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

fn describe(
    task_id: &str,
    met: &[String],
    conflicted: &std::collections::BTreeSet<String>,
    hunks: &str,
) -> String {
    let who = if met.is_empty() {
        "changes merged before it".to_string()
    } else {
        format!(
            "the change of task{} {}",
            if met.len() == 1 { "" } else { "s" },
            met.join(", ")
        )
    };
    format!(
        "fanout could not merge your change (task {task_id}): it conflicts with {who}, in: {}.\n\
         Your workspace now starts from the current integration, with your change merged as far as it goes; \
         the conflicting hunks are marked in the files (<<<<<<< integration … ======= … >>>>>>> {task_id}). \
         Resolve every conflict so that both changes are kept, remove all the markers, and finish.\n\
         The conflicting hunks (the integration's side first, then yours):\n{hunks}",
        conflicted.iter().cloned().collect::<Vec<_>>().join(", ")
    )
}

/// Writes the resolution's files into the workspace folder `root` (the worktree, or an overlay's
/// upper folder), and gives them to the task's uid.
pub(crate) fn write(
    root: &std::path::Path,
    resolution: &Resolution,
    owner: Option<crate::sandbox::RunAs>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for (path, content) in &resolution.files {
        let to = inside(root, path)
            .ok_or_else(|| format!("refusing to write outside the workspace: {path}"))?;
        match content {
            Some((bytes, mode)) => {
                if let Some(dir) = to.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                let _ = std::fs::remove_file(&to);
                if *mode == 0o120000 {
                    let target = String::from_utf8_lossy(bytes).into_owned();
                    std::os::unix::fs::symlink(target, &to)
                        .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
                    continue;
                }
                std::fs::write(&to, bytes)
                    .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
                let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(perm))
                    .map_err(|e| format!("cannot set the mode of {}: {e}", to.display()))?;
            }
            None => match std::fs::remove_file(&to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot delete {}: {e}", to.display())),
            },
        }
    }
    if let Some(who) = owner {
        crate::sandbox::user::hand_over(root, who)
            .map_err(|e| format!("cannot give {} to the agent uid: {e}", root.display()))?;
    }
    Ok(())
}

/// `root/rel` when `rel` is a plain relative path whose folders in `root` are no links (fanout
/// writes there, as root too): nothing may lead it outside the workspace.
fn inside(root: &std::path::Path, rel: &str) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let rel = std::path::Path::new(rel);
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        let Component::Normal(name) = c else {
            return None;
        };
        if *name == ".git" {
            return None;
        }
        at.push(name);
        let last = i + 1 == parts.len();
        if !last && std::fs::symlink_metadata(&at).is_ok_and(|m| !m.is_dir()) {
            return None;
        }
    }
    Some(at)
}

/// The gate of a resolve round: none of the files written with markers may keep one.
pub(crate) fn markers_gate(
    repo: &Repository,
    commit: Oid,
    marked: &[String],
) -> Result<GateResult, git2::Error> {
    let tree = repo.find_commit(commit)?.tree()?;
    let mut left = Vec::new();
    for p in marked {
        let Ok(entry) = tree.get_path(std::path::Path::new(p)) else {
            continue;
        };
        let Ok(blob) = repo.find_blob(entry.id()) else {
            continue;
        };
        if has_markers(blob.content()) {
            left.push(p.clone());
        }
    }
    let passed = left.is_empty();
    Ok(GateResult {
        gate: "conflict_markers".into(),
        passed,
        detail: (!passed).then(|| {
            format!(
                "conflict markers are left in: {} (resolve each conflict and remove <<<<<<<, ======= and >>>>>>>)",
                left.join(", ")
            )
        }),
        paths: left,
        output: None,
        stderr: None,
        flaky: false,
    })
}

/// Whether a file still holds a conflict: a `<<<<<<< ` line and a `>>>>>>> ` line.
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
