/*!
Task worktrees: one branch `fanout/<run>/task/<id>` at the base commit and one linked worktree
per task, in the run folder under `.git/fanout` (never in the user's working tree).

After the agent ran, the worktree is hostile: the task's repository is opened from the
worktree's admin folder in the main `.git` (which the sandbox keeps read-only), never from the
`.git` file inside the worktree that the agent could have rewritten.
*/

use std::path::Path;

use git2::Repository;

use super::{GitContext, GitError};

/// The git name of a task's worktree (`.git/worktrees/<name>`), unique per run.
pub fn worktree_name(run: &str, task: &str) -> String {
    format!("fanout-{run}-{task}")
}

/// A worktree's admin folder in the main repository: `<common>/worktrees/<name>`.
pub fn admin_dir(common_dir: &Path, name: &str) -> std::path::PathBuf {
    common_dir.join("worktrees").join(name)
}

/// Creates the task branch at `base` and checks it out into `path`.
///
/// The linked worktree's metadata is written directly, in git's own format (what
/// `git worktree add --no-checkout` writes), instead of through libgit2's worktree add, which
/// races with itself when several are created at once. The checkout then runs on the task's own
/// repository handle, so many worktrees can be checked out in parallel.
pub fn create(
    repo: &Repository,
    name: &str,
    branch: &str,
    base: git2::Oid,
    path: &Path,
) -> Result<(), GitError> {
    adopt(repo, name, branch, base, path)?;
    check_out(repo, name, base, path)
}

/// Creates the task branch at `base` and registers `path` as its worktree without touching
/// the folder: for a pooled worktree, which the sandboxed reset brings to `base` and gives
/// its `.git` file (what a previous agent left there is never opened by fanout).
pub fn adopt(
    repo: &Repository,
    name: &str,
    branch: &str,
    base: git2::Oid,
    path: &Path,
) -> Result<(), GitError> {
    let commit = repo
        .find_commit(base)
        .ctx(|| format!("base commit {base} not found"))?;
    new_branch(repo, branch, &commit).ctx(|| format!("cannot create branch {branch}"))?;
    register(repo, name, &format!("ref: refs/heads/{branch}"), path, None)?;
    Ok(())
}

/// Creates `branch` at `commit`. A branch deleted at the same moment (a candidate's, a task's
/// run again) may prune the folder this one's ref or reflog is being written in (empty folders
/// under `refs/` and `logs/` go with their last ref); libgit2 then fails with an OS error and
/// writes nothing, so that is tried again, a few times.
pub(crate) fn new_branch(
    repo: &Repository,
    branch: &str,
    commit: &git2::Commit<'_>,
) -> Result<(), git2::Error> {
    let mut tries = 0;
    loop {
        match repo.branch(branch, commit, false) {
            Err(e) if e.class() == git2::ErrorClass::Os && tries < 5 => {
                tries += 1;
                std::thread::yield_now();
            }
            r => return r.map(|_| ()),
        }
    }
}

/// Checks a registered worktree's HEAD (`head`) out into its new or emptied folder, with its
/// `.git` file: files written in parallel when plain, else by libgit2.
pub fn check_out(
    repo: &Repository,
    name: &str,
    head: git2::Oid,
    path: &Path,
) -> Result<(), GitError> {
    let admin = admin_dir(repo.commondir(), name);
    let admin =
        std::path::absolute(&admin).ctx(|| format!("cannot resolve {}", admin.display()))?;
    std::fs::create_dir_all(path).ctx(|| format!("cannot create {}", path.display()))?;
    write_git_file(path, &admin)?;
    if super::checkout::checkout_plain(repo, head, path, &admin.join("index"))? {
        return Ok(());
    }
    let task_repo = open_task_repo(repo, name)?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout.force();
    task_repo
        .checkout_head(Some(&mut checkout))
        .ctx(|| format!("cannot check out {name} into {}", path.display()))?;
    Ok(())
}

/// The `.git` file of a worktree (or an overlay's upper folder) pointing at its admin folder.
fn write_git_file(dir: &Path, admin: &Path) -> Result<(), GitError> {
    let file = dir.join(".git");
    std::fs::write(&file, format!("gitdir: {}\n", admin.display()))
        .ctx(|| format!("cannot write {}", file.display()))
}

/// Opens a task's repository through its admin folder in the main repository
/// (`.git/worktrees/<name>`), which the sandbox keeps read-only.
///
/// Never through the worktree: libgit2's `open_from_worktree` re-discovers the repository from
/// the worktree's own `.git` entry, which the agent controls (it could point it at the user's
/// repository or another one). Opened from the admin folder, the working folder comes from the
/// admin folder's `gitdir` file that fanout wrote, and the worktree's `.git` is never read.
pub fn open_task_repo(repo: &Repository, name: &str) -> Result<Repository, GitError> {
    let admin = admin_dir(repo.commondir(), name);
    if !admin.join("commondir").is_file() {
        return Err(GitError::Io {
            what: format!("worktree {name} is not registered"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Repository::open_ext(
        &admin,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .ctx(|| format!("cannot open worktree {name}"))
}

/// Writes a linked worktree's admin folder `<common>/worktrees/<name>` in git's format with
/// `head` as its HEAD and `workdir` as its working folder, and (unless `None`) the `.git` file
/// pointing at it into `git_file_dir` (an overlay's upper folder). Returns the admin folder.
pub(super) fn register(
    repo: &Repository,
    name: &str,
    head: &str,
    workdir: &Path,
    git_file_dir: Option<&Path>,
) -> Result<std::path::PathBuf, GitError> {
    let admin = admin_dir(repo.commondir(), name);
    if admin.exists() {
        return Err(GitError::Io {
            what: format!("worktree {name} is already registered"),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    let admin =
        std::path::absolute(&admin).ctx(|| format!("cannot resolve {}", admin.display()))?;
    let write = |file: &Path, text: String| {
        std::fs::write(file, text).ctx(|| format!("cannot write {}", file.display()))
    };
    std::fs::create_dir_all(&admin).ctx(|| format!("cannot create {}", admin.display()))?;
    write(&admin.join("commondir"), "../..\n".into())?;
    write(
        &admin.join("gitdir"),
        format!("{}\n", workdir.join(".git").display()),
    )?;
    write(&admin.join("HEAD"), format!("{head}\n"))?;
    if let Some(dir) = git_file_dir {
        std::fs::create_dir_all(workdir).ctx(|| format!("cannot create {}", workdir.display()))?;
        std::fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
        write_git_file(dir, &admin)?;
    }
    Ok(admin)
}

/// Removes a task's worktree folder and its registration. Missing pieces are not errors.
///
/// O(1) in the number of worktrees: the folder and its admin folder `<common>/worktrees/<name>`
/// are deleted directly (what `git worktree prune` does for a worktree whose folder is gone),
/// without listing or opening any other worktree as libgit2's lookup and prune do.
pub fn remove(common_dir: &Path, name: &str, path: &Path) -> Result<(), GitError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(GitError::Io {
            what: format!("refusing to remove a worktree named {name:?}"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    // The folder first: if we stop in between, the admin folder points at nothing, which
    // `fanout clean` (and git's own prune) still recognise and remove.
    remove_tree(path).ctx(|| format!("cannot remove worktree folder {}", path.display()))?;
    let admin = admin_dir(common_dir, name);
    remove_tree(&admin).ctx(|| format!("cannot remove worktree registration {}", admin.display()))
}

pub use crate::fs_util::remove_tree;

/// The names of the worktrees registered in `common_dir` that start with `prefix` (admin
/// folders, also half-written ones a kill -9 during creation left).
pub fn registered_with_prefix(common_dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(common_dir.join("worktrees"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}
