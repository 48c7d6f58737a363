/*!
Collecting an overlay workspace from its upper folder: O(files changed), not O(files).

The task's view was `lower` (a checkout of the start commit, shared and never written) under
`upper` (the task's own). The upper folder holds exactly what changed: new and modified files
and links (whole files: metadata-only copies are off), whiteouts (character devices 0:0) for
deleted files and folders, and folders marked opaque (`<prefix>opaque = "y"`) whose lower
content is hidden. The tree is the start commit's tree with those changes applied, which is the
tree a walk of the merged view would give.

Like the worktree walk, the upper folder is hostile: it is read through [`super::scan`] (no
link followed, nothing outside reached), and the same rules decide what is committed (ignored
untracked files are left out, nested repositories, special files, submodule changes, filters
and size limits fail the task). Ignore and attribute rules are read from the lower checkout,
or — when the task changed a `.gitignore` or `.gitattributes`, or hid a folder — from a folder
holding only the merged view's rule files.
*/

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::Path;

use git2::{Index, IndexEntry, Oid, Repository};
use nix::fcntl::OFlag;

use super::collect::CollectOptions;
use super::scan::{self, Kind, Scan};
use super::workspace::{self, show, Decision, Workspace};
use super::{GitContext, GitError};

const MODE_GITLINK: u32 = 0o160000;
const RULE_FILES: [&[u8]; 2] = [b".gitignore", b".gitattributes"];

/// Where an overlay workspace's layers are, as fanout sees them (the mount itself exists only
/// in the task's processes).
pub struct UpperLayers<'a> {
    pub lower: &'a Path,
    pub upper: &'a Path,
    /// The overlay's xattr prefix (`trusted.overlay.` as root, `user.overlay.` otherwise).
    pub xattr_prefix: &'a str,
    /// A folder fanout may empty and fill with the merged view's rule files.
    pub rules_dir: &'a Path,
    /// The index of the lower checkout (the start commit, with the lower files' stat data).
    pub lower_index: &'a Path,
}

fn name_of(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

fn is_rule_file(path: &[u8]) -> bool {
    RULE_FILES.contains(&name_of(path))
}

fn is_whiteout(kind: &Kind, stat: &scan::Stat) -> bool {
    matches!(kind, Kind::Special("a character device")) && stat.rdev == 0
}

/// Ancestors of `path` (`a`, `a/b` for `a/b/c`).
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

fn bytes_path(p: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(p))
}

/// Whether the index has an entry at or beneath `dir`.
fn has_beneath(index: &Index, dir: &[u8]) -> bool {
    let mut prefix = dir.to_vec();
    prefix.push(b'/');
    index.find_prefix(bytes_path(&prefix)).is_ok()
}

/// Index entries beneath `dir`.
fn entries_beneath(index: &Index, dir: &[u8]) -> Vec<IndexEntry> {
    let mut prefix = dir.to_vec();
    prefix.push(b'/');
    let Ok(mut i) = index.find_prefix(bytes_path(&prefix)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(e) = index.get(i) {
        if !e.path.starts_with(&prefix) {
            break;
        }
        out.push(e);
        i += 1;
    }
    out
}

/// Whether folder `rel` of the upper folder is marked opaque.
fn is_opaque(root: &std::os::fd::OwnedFd, rel: &[u8], prefix: &str) -> bool {
    let Ok(fd) = scan::open_beneath(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(format!("{prefix}opaque")) else {
        return false;
    };
    let mut buf = [0u8; 8];
    #[allow(unsafe_code)]
    // SAFETY: fgetxattr writes at most `buf.len()` bytes into `buf`; the name is NUL-terminated.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Builds the tree of the merged view (start commit + upper folder) and leaves the task's
/// index at it. `task_repo` is the task's repository (opened from its admin folder); its index
/// is first reset to the lower checkout's.
pub fn upper_tree(
    task_repo: &Repository,
    layers: &UpperLayers<'_>,
    opts: &CollectOptions,
) -> Result<Oid, GitError> {
    // The task's index starts as the lower checkout's every time: the upper folder is always
    // relative to the start commit, whatever an earlier attempt's collection recorded.
    let task_index = task_repo.path().join("index");
    std::fs::copy(layers.lower_index, &task_index)
        .ctx(|| format!("cannot reset the task index {}", task_index.display()))?;
    task_repo
        .set_workdir(layers.lower, false)
        .ctx(|| "cannot point the task repository at the lower checkout".into())?;
    let mut index = task_repo
        .index()
        .ctx(|| "cannot open the task index".into())?;
    index
        .read(true)
        .ctx(|| "cannot read the task index".into())?;

    let mut scanned = scan_upper(task_repo, &index, layers, opts)?;
    let root_fd = scan::open_root(layers.upper)?;
    let opaque: Vec<Vec<u8>> = scanned
        .dirs
        .iter()
        .filter(|d| is_opaque(&root_fd, d, layers.xattr_prefix))
        .cloned()
        .collect();
    let rules_changed = !opaque.is_empty()
        || scanned.entries.iter().any(|f| is_rule_file(&f.path))
        || scanned.dirs.iter().any(|d| is_rule_file(d));
    // libgit2 caches rule files by their relative path: a fresh handle reads the new ones.
    let rules_repo;
    let mut repo = task_repo;
    if rules_changed {
        write_rule_view(task_repo, &index, layers, &scanned, &opaque)?;
        rules_repo = Repository::open_ext(
            task_repo.path(),
            git2::RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&std::ffi::OsStr>(),
        )
        .ctx(|| "cannot reopen the task repository".into())?;
        rules_repo
            .set_workdir(layers.rules_dir, false)
            .ctx(|| "cannot point the task repository at the rule files".into())?;
        repo = &rules_repo;
        scanned = scan_upper(repo, &index, layers, opts)?;
    }

    let empty = Default::default();
    let ws = Workspace {
        repo,
        root: layers.upper,
        known: &empty,
        racy_after: None,
        trust_stat: false,
        opts,
    };
    let mut problems: Vec<String> = Vec::new();
    for (path, why) in &scanned.unreadable {
        problems.push(format!("{}: cannot be read ({why})", show(path)));
    }
    let gitlink_at = |p: &[u8]| {
        index
            .get_path(bytes_path(p), 0)
            .is_some_and(|e| e.mode == MODE_GITLINK)
    };
    let gitlink_within = |p: &[u8]| {
        gitlink_at(p)
            || entries_beneath(&index, p)
                .iter()
                .any(|e| e.mode == MODE_GITLINK)
    };
    for nested in &scanned.nested_repos {
        if ancestors(nested).any(gitlink_at) || gitlink_at(nested) {
            problems.push(format!(
                "{}: the task made a repository inside the submodule folder; fanout does not change submodules",
                show(nested)
            ));
        } else if !ws.ignored(nested, true) {
            problems.push(format!(
                "{}: holds a git repository of its own; fanout does not commit nested repositories (remove its .git, or ignore the folder)",
                show(nested)
            ));
        }
    }
    // Paths whose lower content is gone: whiteouts, opaque folders, and what a new entry of
    // another type covers (a file over a folder, a folder over a file).
    let mut removed: BTreeSet<Vec<u8>> = BTreeSet::new();
    for d in &opaque {
        if gitlink_within(d) {
            problems.push(format!(
                "{}: the task removed or replaced the submodule folder; fanout does not change submodules",
                show(d)
            ));
        }
        removed.insert(d.clone());
    }
    for d in &scanned.dirs {
        if index.get_path(bytes_path(d), 0).is_some() && !gitlink_at(d) {
            removed.insert(d.clone());
        }
    }
    let file_mode_cfg = repo
        .config()
        .and_then(|c| c.get_bool("core.filemode"))
        .unwrap_or(true);
    let mut added: Vec<IndexEntry> = Vec::new();
    let mut change_bytes = 0u64;
    for found in &scanned.entries {
        if is_whiteout(&found.kind, &found.stat) {
            if gitlink_within(&found.path) {
                problems.push(format!(
                    "{}: the task removed or replaced the submodule folder; fanout does not change submodules",
                    show(&found.path)
                ));
            }
            removed.insert(found.path.clone());
            continue;
        }
        if let Some(g) = ancestors(&found.path)
            .find(|a| gitlink_at(a))
            .or_else(|| gitlink_at(&found.path).then_some(&found.path[..]))
        {
            problems.push(format!(
                "{}: the task wrote {} inside the submodule folder; fanout does not change submodules",
                show(g),
                show(&found.path)
            ));
            continue;
        }
        if let Some(bad) = workspace::bad_component(&found.path) {
            problems.push(format!(
                "{}: a path component {bad:?} is not allowed in git",
                show(&found.path)
            ));
            continue;
        }
        let tracked = index.get_path(bytes_path(&found.path), 0);
        match ws.entry_for(
            &root_fd,
            found,
            tracked.as_ref(),
            file_mode_cfg,
            &mut change_bytes,
        ) {
            Decision::Entry(e) => {
                if has_beneath(&index, &found.path) {
                    removed.insert(found.path.clone());
                }
                added.push(e);
            }
            Decision::Skip => {}
            Decision::Problem(p) => problems.push(p),
            Decision::Stop(p) => {
                problems.push(p);
                break;
            }
        }
    }
    if !problems.is_empty() {
        return Err(GitError::Refused(problems));
    }
    for p in &removed {
        let path = bytes_path(p);
        let _ = index.remove_path(path);
        let _ = index.remove_dir(path, 0);
    }
    for e in &added {
        // A file where the start commit had a folder's parent as a file.
        for a in ancestors(&e.path) {
            if index.get_path(bytes_path(a), 0).is_some() {
                let _ = index.remove_path(bytes_path(a));
            }
        }
        index
            .add(e)
            .ctx(|| format!("cannot record {}", show(&e.path)))?;
    }
    let tree = index
        .write_tree_to(task_repo)
        .ctx(|| "cannot write the workspace's tree".into())?;
    index.write().ctx(|| "cannot write the task index".into())?;
    Ok(tree)
}

fn scan_upper(
    task_repo: &Repository,
    index: &Index,
    layers: &UpperLayers<'_>,
    opts: &CollectOptions,
) -> Result<Scan, GitError> {
    let empty = Default::default();
    let ws = Workspace {
        repo: task_repo,
        root: layers.upper,
        known: &empty,
        racy_after: None,
        trust_stat: false,
        opts,
    };
    // Ignored folders that hold no tracked file are not walked (build output, caches).
    let mut descend = |dir: &[u8]| has_beneath(index, dir) || !ws.ignored(dir, true);
    Ok(scan::scan(layers.upper, &mut descend)?)
}

/// Fills `layers.rules_dir` with the merged view's `.gitignore` and `.gitattributes` files:
/// the start commit's, minus what the upper folder deleted or hid, plus the upper folder's.
fn write_rule_view(
    task_repo: &Repository,
    index: &Index,
    layers: &UpperLayers<'_>,
    scanned: &Scan,
    opaque: &[Vec<u8>],
) -> Result<(), GitError> {
    let dir = layers.rules_dir;
    super::worktree::remove_tree(dir).ctx(|| format!("cannot empty {}", dir.display()))?;
    std::fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
    let hidden = |p: &[u8]| {
        opaque
            .iter()
            .any(|o| p.starts_with(o) && p.get(o.len()) == Some(&b'/'))
            || scanned.entries.iter().any(|f| {
                is_whiteout(&f.kind, &f.stat) && (f.path == p || ancestors(p).any(|a| a == f.path))
            })
    };
    let write = |rel: &[u8], content: &[u8]| -> Result<(), GitError> {
        let target = dir.join(bytes_path(rel));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .ctx(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, content).ctx(|| format!("cannot write {}", target.display()))
    };
    for e in index.iter() {
        if is_rule_file(&e.path) && e.mode != MODE_GITLINK && !hidden(&e.path) {
            if let Ok(blob) = task_repo.find_blob(e.id) {
                write(&e.path, blob.content())?;
            }
        }
    }
    let root_fd = scan::open_root(layers.upper)?;
    // Rule files are small; a huge one is read only up to this much.
    const MAX_RULES: u64 = 1 << 20;
    for f in &scanned.entries {
        if is_rule_file(&f.path) && matches!(f.kind, Kind::File { .. }) {
            use std::io::Read;
            let mut content = Vec::new();
            if let Ok(file) = scan::open_file(&root_fd, &f.path, &f.stat) {
                let _ = file.take(MAX_RULES).read_to_end(&mut content);
            }
            write(&f.path, &content)?;
        }
    }
    Ok(())
}

/// Writes a linked worktree's admin folder `<common>/worktrees/<name>` in git's format (as
/// [`super::worktree::create`] does) with `head` as its HEAD, and the `.git` file pointing at
/// it into `git_file_dir`.
fn write_admin(
    repo: &Repository,
    name: &str,
    head: &str,
    workdir: &Path,
    git_file_dir: &Path,
) -> Result<std::path::PathBuf, GitError> {
    let admin = repo.commondir().join("worktrees").join(name);
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
    std::fs::create_dir_all(workdir).ctx(|| format!("cannot create {}", workdir.display()))?;
    std::fs::create_dir_all(git_file_dir)
        .ctx(|| format!("cannot create {}", git_file_dir.display()))?;
    write(&admin.join("commondir"), "../..\n".into())?;
    write(
        &admin.join("gitdir"),
        format!("{}\n", workdir.join(".git").display()),
    )?;
    write(&admin.join("HEAD"), format!("{head}\n"))?;
    write(
        &git_file_dir.join(".git"),
        format!("gitdir: {}\n", admin.display()),
    )?;
    Ok(admin)
}

/// Checks `commit` out into `path` as a detached linked worktree `name` (the shared lower
/// layer of every overlay workspace that starts from it). Returns the path of its index.
pub fn create_lower(
    repo: &Repository,
    name: &str,
    commit: Oid,
    path: &Path,
) -> Result<std::path::PathBuf, GitError> {
    let path = std::path::absolute(path).ctx(|| format!("cannot resolve {}", path.display()))?;
    let admin = write_admin(repo, name, &commit.to_string(), &path, &path)?;
    let lower = super::worktree::open_task_repo(repo, name)?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout.force();
    lower
        .checkout_head(Some(&mut checkout))
        .ctx(|| format!("cannot check out {commit} into {}", path.display()))?;
    Ok(admin.join("index"))
}

/// Registers an overlay task: branch `branch` at `start`, admin folder `name` whose working
/// folder is `merged` and whose index is a copy of the lower checkout's (so `git status`
/// inside the view is fast and clean), and the `.git` file in `upper`, where the view shows
/// it at its root.
pub fn create_overlay_task(
    repo: &Repository,
    name: &str,
    branch: &str,
    start: Oid,
    merged: &Path,
    upper: &Path,
    lower_index: &Path,
) -> Result<(), GitError> {
    let commit = repo
        .find_commit(start)
        .ctx(|| format!("start commit {start} not found"))?;
    repo.branch(branch, &commit, false)
        .ctx(|| format!("cannot create branch {branch}"))?;
    let merged =
        std::path::absolute(merged).ctx(|| format!("cannot resolve {}", merged.display()))?;
    let admin = write_admin(
        repo,
        name,
        &format!("ref: refs/heads/{branch}"),
        &merged,
        upper,
    )?;
    std::fs::copy(lower_index, admin.join("index"))
        .ctx(|| format!("cannot copy the index {}", lower_index.display()))?;
    Ok(())
}
