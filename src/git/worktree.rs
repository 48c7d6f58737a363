/*!
Task worktrees: one branch `fanout/<run>/task/<id>` at the base commit and one linked worktree
per task, in the run folder under `.git/fanout` (never in the user's working tree).

After the agent ran, the worktree is hostile: the task's repository is opened from the
worktree's admin folder in the main `.git` (which the sandbox keeps read-only), never from the
`.git` file inside the worktree that the agent could have rewritten.
*/

use std::path::{Path, PathBuf};

use git2::{Repository, WorktreeAddOptions};

use super::{GitContext, GitError};

/// The git name of a task's worktree (`.git/worktrees/<name>`), unique per run.
pub fn worktree_name(run: &str, task: &str) -> String {
    format!("fanout-{run}-{task}")
}

/// Creates the task branch at `base` and checks it out into `path`.
pub fn create(
    repo: &Repository,
    name: &str,
    branch: &str,
    base: git2::Oid,
    path: &Path,
) -> Result<(), GitError> {
    let commit = repo
        .find_commit(base)
        .ctx(|| format!("base commit {base} not found"))?;
    let branch_ref = repo
        .branch(branch, &commit, false)
        .ctx(|| format!("cannot create branch {branch}"))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
    }
    let mut opts = WorktreeAddOptions::new();
    let reference = branch_ref.into_reference();
    opts.reference(Some(&reference));
    repo.worktree(name, path, Some(&opts))
        .ctx(|| format!("cannot create worktree {}", path.display()))?;
    Ok(())
}

/// Opens a task's repository through its admin folder in the main repository.
pub fn open_task_repo(repo: &Repository, name: &str) -> Result<Repository, GitError> {
    let wt = repo
        .find_worktree(name)
        .ctx(|| format!("worktree {name} is not registered"))?;
    Repository::open_from_worktree(&wt).ctx(|| format!("cannot open worktree {name}"))
}

/// Removes a task's worktree folder and its registration. Missing pieces are not errors.
pub fn remove(repo: &Repository, name: &str, path: &Path) -> Result<(), GitError> {
    if path.exists() {
        remove_tree(path).ctx(|| format!("cannot remove worktree folder {}", path.display()))?;
    }
    if let Ok(wt) = repo.find_worktree(name) {
        let mut opts = git2::WorktreePruneOptions::new();
        opts.valid(true).locked(true).working_tree(false);
        wt.prune(Some(&mut opts))
            .ctx(|| format!("cannot prune worktree {name}"))?;
    }
    Ok(())
}

/// `remove_dir_all` that first gives back write/execute permission an agent may have taken away.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            restore_permissions(path);
            std::fs::remove_dir_all(path)
        }
    }
}

fn restore_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
}
