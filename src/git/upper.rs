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

use super::bytes_path;
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::Path;

use git2::{IndexEntry, Oid, Repository};
use nix::fcntl::OFlag;

use super::collect_options::CollectOptions;
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

/// The start commit's entries, looked up in its tree: O(depth) per lookup, never O(files).
struct Start<'r> {
    tree: git2::Tree<'r>,
    repo: &'r Repository,
}

impl<'r> Start<'r> {
    fn entry(&self, p: &[u8]) -> Option<git2::TreeEntry<'static>> {
        self.tree.get_path(bytes_path(p)).ok()
    }

    /// The tracked file, link or gitlink at `p` as an index entry (no stat data).
    fn get(&self, p: &[u8]) -> Option<IndexEntry> {
        let e = self.entry(p)?;
        let mode = e.filemode() as u32;
        (e.kind() != Some(git2::ObjectType::Tree))
            .then(|| super::index_entry(p.to_vec(), mode, e.id(), 0))
    }

    /// Whether the start commit has a folder (so entries beneath) at `p`.
    fn has_beneath(&self, p: &[u8]) -> bool {
        self.entry(p)
            .is_some_and(|e| e.kind() == Some(git2::ObjectType::Tree))
    }

    fn gitlink_at(&self, p: &[u8]) -> bool {
        self.entry(p)
            .is_some_and(|e| e.filemode() as u32 == MODE_GITLINK)
    }

    /// A gitlink at or beneath `p` (walks only that folder).
    fn gitlink_within(&self, p: &[u8]) -> bool {
        if self.gitlink_at(p) {
            return true;
        }
        let Some(sub) = self
            .entry(p)
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .and_then(|e| self.repo.find_tree(e.id()).ok())
        else {
            return false;
        };
        let mut found = false;
        let _ = sub.walk(git2::TreeWalkMode::PreOrder, |_, e| {
            if e.filemode() as u32 == MODE_GITLINK {
                found = true;
                return git2::TreeWalkResult::Abort;
            }
            git2::TreeWalkResult::Ok
        });
        found
    }

    /// Every `.gitignore`/`.gitattributes` of the start commit (a walk of the whole tree: only
    /// when the task changed rule files).
    fn rule_files(&self) -> Vec<(Vec<u8>, Oid)> {
        let mut out = Vec::new();
        let _ = self.tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            let mut path = dir.as_bytes().to_vec();
            path.extend_from_slice(e.name_bytes());
            if e.kind() == Some(git2::ObjectType::Blob) && is_rule_file(&path) {
                out.push((path, e.id()));
            }
            git2::TreeWalkResult::Ok
        });
        out
    }
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

/// What a collection decided: paths whose start-commit content is gone, and the entries to
/// record.
struct Changes {
    removed: BTreeSet<Vec<u8>>,
    added: Vec<IndexEntry>,
}

/// Builds the tree of the merged view (start commit `start` + upper folder): the start tree
/// edited at the changed paths only. With `write_index`, the task's index (first reset to the
/// lower checkout's) is also left at that tree, so `git status` inside the view is clean for
/// the agent's next turn — O(files), done only before such a turn. `task_repo` is the task's
/// repository (opened from its admin folder).
pub fn upper_tree(
    task_repo: &Repository,
    layers: &UpperLayers<'_>,
    start: Oid,
    opts: &CollectOptions,
    write_index: bool,
) -> Result<Oid, GitError> {
    let start_tree = task_repo
        .find_commit(start)
        .and_then(|c| c.tree())
        .ctx(|| format!("cannot read the tree of the start commit {start}"))?;
    let view = Start {
        tree: start_tree,
        repo: task_repo,
    };
    task_repo
        .set_workdir(layers.lower, false)
        .ctx(|| "cannot point the task repository at the lower checkout".into())?;
    // Attribute lookups (filters, per path) load the repository's index first: an empty one
    // in memory instead of the task's copy of the lower's, which holds every file.
    let mut no_index = git2::Index::new().ctx(|| "cannot make an index".into())?;
    task_repo
        .set_index(&mut no_index)
        .ctx(|| "cannot set the task repository's index".into())?;
    let changes = find_changes(task_repo, layers, &view, opts)?;
    if !write_index {
        if let Some(tree) = edit_tree(task_repo, &view.tree, &changes) {
            return Ok(tree);
        }
    }
    // Through the index: the start tree's entries (the lower's index, with its stat data)
    // with the changes applied; also what a file↔folder change the tree edit declined needs.
    let task_index = task_repo.path().join("index");
    std::fs::copy(layers.lower_index, &task_index)
        .ctx(|| format!("cannot reset the task index {}", task_index.display()))?;
    let mut index = git2::Index::open(&task_index).ctx(|| "cannot open the task index".into())?;
    for p in &changes.removed {
        let path = bytes_path(p);
        let _ = index.remove_path(path);
        let _ = index.remove_dir(path, 0);
    }
    for e in &changes.added {
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
    if write_index {
        index.write().ctx(|| "cannot write the task index".into())?;
    }
    Ok(tree)
}

/// The start tree with `changes` applied as edits of just those paths; `None` when the edit
/// cannot be expressed simply (a path both removed and re-made beneath, a file becoming a
/// folder's parent): the caller goes through the index instead.
fn edit_tree(repo: &Repository, start: &git2::Tree<'_>, changes: &Changes) -> Option<Oid> {
    let under =
        |dir: &[u8], p: &[u8]| p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/';
    let added: BTreeSet<&[u8]> = changes.added.iter().map(|e| &e.path[..]).collect();
    for r in &changes.removed {
        if added.iter().any(|a| under(r, a) || under(a, r)) {
            return None;
        }
    }
    let mut update = git2::build::TreeUpdateBuilder::new();
    for r in &changes.removed {
        let covered = changes.removed.iter().any(|o| under(o, r));
        if covered || added.contains(&r[..]) || start.get_path(bytes_path(r)).is_err() {
            continue;
        }
        update.remove(bytes_path(r));
    }
    for e in &changes.added {
        let file_parent = ancestors(&e.path).any(|a| {
            start
                .get_path(bytes_path(a))
                .is_ok_and(|t| t.kind() != Some(git2::ObjectType::Tree))
        });
        if file_parent {
            return None;
        }
        update.upsert(bytes_path(&e.path), e.id, super::file_mode(e.mode));
    }
    update.create_updated(repo, start).ok()
}

/// Reads the upper folder and decides, path by path, what changed against the start commit.
fn find_changes(
    task_repo: &Repository,
    layers: &UpperLayers<'_>,
    view: &Start<'_>,
    opts: &CollectOptions,
) -> Result<Changes, GitError> {
    let mut scanned = scan_upper(task_repo, view, layers, opts)?;
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
        write_rule_view(task_repo, view, layers, &scanned, &opaque)?;
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
        scanned = scan_upper(repo, view, layers, opts)?;
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
    let gitlink_at = |p: &[u8]| view.gitlink_at(p);
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
        if view.gitlink_within(d) {
            problems.push(format!(
                "{}: the task removed or replaced the submodule folder; fanout does not change submodules",
                show(d)
            ));
        }
        removed.insert(d.clone());
    }
    for d in &scanned.dirs {
        if view.get(d).is_some() && !gitlink_at(d) {
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
            if view.gitlink_within(&found.path) {
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
        let tracked = view.get(&found.path);
        match ws.entry_for(
            &root_fd,
            found,
            tracked.as_ref(),
            file_mode_cfg,
            &mut change_bytes,
        ) {
            Decision::Entry(e) => {
                if view.has_beneath(&found.path) {
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
    Ok(Changes { removed, added })
}

fn scan_upper(
    task_repo: &Repository,
    view: &Start<'_>,
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
    let mut descend = |dir: &[u8]| view.has_beneath(dir) || !ws.ignored(dir, true);
    Ok(scan::scan(layers.upper, &mut descend)?)
}

/// Fills `layers.rules_dir` with the merged view's `.gitignore` and `.gitattributes` files:
/// the start commit's, minus what the upper folder deleted or hid, plus the upper folder's.
fn write_rule_view(
    task_repo: &Repository,
    view: &Start<'_>,
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
    for (path, id) in view.rule_files() {
        if !hidden(&path) {
            if let Ok(blob) = task_repo.find_blob(id) {
                write(&path, blob.content())?;
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

/// Checks `commit` out into `path` as a detached linked worktree `name` (the shared lower
/// layer of every overlay workspace that starts from it). Returns the path of its index.
pub fn create_lower(
    repo: &Repository,
    name: &str,
    commit: Oid,
    path: &Path,
) -> Result<std::path::PathBuf, GitError> {
    let path = std::path::absolute(path).ctx(|| format!("cannot resolve {}", path.display()))?;
    let admin = super::worktree::register(repo, name, &commit.to_string(), &path, Some(&path))?;
    if super::checkout::checkout_plain(repo, commit, &path, &admin.join("index"))? {
        return Ok(admin.join("index"));
    }
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
    super::worktree::new_branch(repo, branch, &commit)
        .ctx(|| format!("cannot create branch {branch}"))?;
    let merged =
        std::path::absolute(merged).ctx(|| format!("cannot resolve {}", merged.display()))?;
    let admin = super::worktree::register(
        repo,
        name,
        &format!("ref: refs/heads/{branch}"),
        &merged,
        Some(upper),
    )?;
    std::fs::copy(lower_index, admin.join("index"))
        .ctx(|| format!("cannot copy the index {}", lower_index.display()))?;
    Ok(())
}
