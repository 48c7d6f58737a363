/*!
`--on-conflict resolve`: a conflicting task goes back to its own agent. Its workspace starts at
the integration head with the task's change merged as far as it goes, the conflicting hunks
marked (`git::conflict_markers`). Its prompt names the tasks whose changes it meets and shows
the hunks of both sides. A resolution that leaves markers fails its gates.
*/

use git2::{Oid, Repository};

use crate::git::conflict_markers::{self, Content};
use crate::report::GateResult;

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
    rules: &crate::git::merge_rules::MergeRules,
) -> Result<Resolution, git2::Error> {
    let m = conflict_markers::merge_marked(repo, head, commit, task_id, rules)?;
    let met = conflict_markers::touching(repo, merged, &m.conflicted)?;
    let mut text = describe(task_id, &met, &m.conflicted, &m.hunks);
    let deleted: Vec<&str> = m
        .files
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(p, _)| p.as_str())
        .collect();
    if !deleted.is_empty() {
        text.push_str(&format!(
            "\nYour change deletes {} (already deleted in the workspace).\n",
            deleted.join(", ")
        ));
    }
    Ok(Resolution {
        files: m.files,
        marked: m.marked,
        text,
    })
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
/// upper folder when `overlay`: a deletion is then a whiteout), and gives them to the task's uid.
pub(crate) fn write(
    root: &std::path::Path,
    overlay: bool,
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
            None => {
                match std::fs::remove_file(&to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("cannot delete {}: {e}", to.display())),
                }
                if overlay {
                    whiteout(&to)?;
                }
            }
        }
    }
    if let Some(who) = owner {
        crate::sandbox::user::hand_over(root, who)
            .map_err(|e| format!("cannot give {} to the agent uid: {e}", root.display()))?;
    }
    Ok(())
}

/// An overlay whiteout (a character device 0:0) at `path`: the lower's file is gone from the
/// view. Linux lets any user make one (5.8+).
fn whiteout(path: &std::path::Path) -> Result<(), String> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(0, 0),
    )
    .map_err(|e| {
        format!(
            "cannot delete {} from the overlay view: {e}",
            path.display()
        )
    })
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
    let left = conflict_markers::markers_left(repo, commit, marked)?;
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
