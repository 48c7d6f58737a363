/*!
Collecting a task's change: the worktree's full content against the base (modified, added but
not ignored, deleted, renamed, mode changes, binaries) becomes one commit on the task branch,
with fanout as the committer. The agent's own index and commits are not trusted: the tree is
rebuilt from the base tree plus the files on disk.
*/

use std::collections::BTreeMap;
use std::path::Path;

use git2::{Diff, DiffFindOptions, DiffFormat, DiffOptions, Oid, Repository};
use serde::Serialize;

use super::{fanout_signature, workspace, GitContext, GitError};

/// What a task changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ChangeSummary {
    /// Paths touched (for a rename: both the old and the new path).
    pub files: Vec<String>,
    pub insertions: usize,
    pub deletions: usize,
    /// Per-file detail.
    pub changes: Vec<FileChange>,
    /// Changes that deserve a human look (CI configuration, attributes, links out, new
    /// executables): see [`crate::git::risky`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub risky: Vec<crate::git::risky::RiskyChange>,
}

#[derive(schemars::JsonSchema, Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct FileChange {
    pub path: String,
    /// added, modified, deleted, renamed, copied, typechange
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    pub binary: bool,
}

/// The result of collecting one task.
pub struct Collected {
    /// `None` when the worktree equals the base.
    pub commit: Option<Oid>,
    pub tree: Oid,
    pub summary: ChangeSummary,
    /// `git apply`-able patch of the change.
    pub patch: Vec<u8>,
}

pub use super::collect_options::{ChangeLimits, CollectOptions};

/// Builds the tree of the task's workspace as it is on disk, against `base`.
///
/// The workspace is walked by [`super::scan`]: no symlink is followed, the root's `.git` is
/// never read, unreadable entries are made readable or reported, and every file is streamed
/// into the object store (memory does not follow file sizes). Anything fanout cannot commit
/// faithfully is an error naming the path — never a silent drop or a deletion.
pub fn worktree_tree(
    task_repo: &Repository,
    base: Oid,
    opts: &CollectOptions,
) -> Result<Oid, GitError> {
    let workdir = task_repo
        .workdir()
        .ok_or_else(|| GitError::Io {
            what: "the task repository has no working folder".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?
        .to_path_buf();
    let mut index = task_repo
        .index()
        .ctx(|| "cannot open the task index".into())?;
    if !opts.trust_index {
        let base_tree = task_repo
            .find_commit(base)
            .and_then(|c| c.tree())
            .ctx(|| format!("base commit {base} has no tree"))?;
        index
            .read_tree(&base_tree)
            .ctx(|| "cannot load the base tree".into())?;
    }
    let index_mtime = index
        .path()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok());
    let known: BTreeMap<Vec<u8>, git2::IndexEntry> =
        index.iter().map(|e| (e.path.clone(), e)).collect();
    let ws = workspace::Workspace {
        repo: task_repo,
        root: &workdir,
        known: &known,
        racy_after: index_mtime,
        trust_stat: opts.trust_index,
        opts,
    };
    let entries = ws.entries()?;
    index.clear().ctx(|| "cannot reset the task index".into())?;
    for e in &entries {
        index
            .add(e)
            .ctx(|| format!("cannot record {}", String::from_utf8_lossy(&e.path)))?;
    }
    let tree = index
        .write_tree_to(task_repo)
        .ctx(|| "cannot write the worktree's tree".into())?;
    // The index now matches the files on disk (with their stat data): saving it keeps the next
    // collection cheap and makes `git status` in a kept worktree agree with the task commit.
    index.write().ctx(|| "cannot write the task index".into())?;
    Ok(tree)
}

/// Commits the worktree's change on `branch` (parent: `parent`, which is the base or a
/// dependency integration commit). Returns `commit: None` when nothing changed.
pub fn collect_and_commit(
    task_repo: &Repository,
    parent: Oid,
    branch: &str,
    message: &str,
    opts: &CollectOptions,
) -> Result<Collected, GitError> {
    collect_and_commit_as(task_repo, parent, branch, message, opts, None)
}

/// [`collect_and_commit`] with `author` (name, email) as the commit's author; fanout stays
/// the committer, so a task commit always says who wrote it into the repository.
pub fn collect_and_commit_as(
    task_repo: &Repository,
    parent: Oid,
    branch: &str,
    message: &str,
    opts: &CollectOptions,
    author: Option<(&str, &str)>,
) -> Result<Collected, GitError> {
    let tree_id = worktree_tree(task_repo, parent, opts)?;
    commit_tree(
        task_repo, task_repo, parent, branch, message, tree_id, author,
    )
}

/// Commits `tree_id` (a task's collected tree) on `branch` with parent `parent`; `commit: None`
/// when it equals the parent's tree. The branch moves in `refs_repo`: the repository itself
/// rather than an overlay task's registration, whose HEAD names the branch (libgit2 would
/// also append to that registration's HEAD log, two more files per task for nothing).
pub fn commit_tree(
    task_repo: &Repository,
    refs_repo: &Repository,
    parent: Oid,
    branch: &str,
    message: &str,
    tree_id: Oid,
    author: Option<(&str, &str)>,
) -> Result<Collected, GitError> {
    let parent_commit = task_repo
        .find_commit(parent)
        .ctx(|| format!("parent commit {parent} not found"))?;
    let (summary, patch) = summarize(task_repo, parent_commit.tree_id(), tree_id)?;
    if tree_id == parent_commit.tree_id() {
        return Ok(Collected {
            commit: None,
            tree: tree_id,
            summary,
            patch,
        });
    }
    let tree = task_repo
        .find_tree(tree_id)
        .ctx(|| "tree vanished".into())?;
    let sig = fanout_signature()?;
    let author = match author {
        Some((name, email)) => git2::Signature::now(name, email)
            .ctx(|| format!("cannot build the author signature {name} <{email}>"))?,
        None => sig.clone(),
    };
    let oid = task_repo
        .commit(None, &author, &sig, message, &tree, &[&parent_commit])
        .ctx(|| "cannot create the task commit".into())?;
    super::repo::set_branch(refs_repo, branch, oid, "fanout: task result")?;
    Ok(Collected {
        commit: Some(oid),
        tree: tree_id,
        summary,
        patch,
    })
}

/// A task commit's message: `<id>: <first non-empty prompt line>` (a subject of at most
/// [`message::SUBJECT_MAX`] characters), the full prompt when the subject does not hold it,
/// then the trailers `Fanout-Run:` and `Fanout-Task:`.
pub fn task_message(task: &str, prompt: &str, run: &str) -> String {
    let subject = super::message::subject(task, ": ", prompt);
    super::message::message(
        &subject,
        prompt,
        &[("Fanout-Run", run), ("Fanout-Task", task)],
    )
}

/// Diffs two trees: file list, line counts (renames detected) and a binary-safe patch.
pub fn summarize(
    repo: &Repository,
    old: Oid,
    new: Oid,
) -> Result<(ChangeSummary, Vec<u8>), GitError> {
    let old_tree = repo
        .find_tree(old)
        .ctx(|| format!("tree {old} not found"))?;
    let new_tree = repo
        .find_tree(new)
        .ctx(|| format!("tree {new} not found"))?;
    // The diff limited to the changed paths: what the full diff says, in O(change) instead
    // of O(files).
    let changes = super::tree_diff::changed_paths(repo, &old_tree, &new_tree)
        .ctx(|| "cannot diff the task's change".into())?;
    let scratch = scratch_handle(repo).ctx(|| "cannot open the repository again".into())?;
    let repo = &scratch;
    let (old_tree, new_tree) = (
        repo.find_tree(old)
            .ctx(|| format!("tree {old} not found"))?,
        repo.find_tree(new)
            .ctx(|| format!("tree {new} not found"))?,
    );
    let mut opts = DiffOptions::new();
    opts.show_binary(true).ignore_submodules(true);
    super::tree_diff::limit_to(&mut opts, &changes);
    let mut diff = repo
        .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), Some(&mut opts))
        .ctx(|| "cannot diff the task's change".into())?;
    let mut find = DiffFindOptions::new();
    find.renames(true).copies(false).exact_match_only(false);
    diff.find_similar(Some(&mut find))
        .ctx(|| "cannot detect renames".into())?;
    let mut summary = summary_of(&diff)?;
    summary.risky = risky_of(repo, &diff);
    let patch = patch_of(&diff)?;
    Ok((summary, patch))
}

/// Another handle on `repo`'s objects, bare, with an empty in-memory index: a diff's
/// attribute lookups read neither a workspace's files (an agent's) nor the repository's whole
/// index (O(files) a task).
fn scratch_handle(repo: &Repository) -> Result<Repository, git2::Error> {
    let scratch = Repository::open_bare(repo.commondir())?;
    scratch.set_index(&mut git2::Index::new()?)?;
    Ok(scratch)
}

fn summary_of(diff: &Diff<'_>) -> Result<ChangeSummary, GitError> {
    let stats = diff.stats().ctx(|| "cannot count changed lines".into())?;
    let mut summary = ChangeSummary {
        insertions: stats.insertions(),
        deletions: stats.deletions(),
        ..ChangeSummary::default()
    };
    let path_of = |f: git2::DiffFile<'_>| f.path().map(|p| p.to_string_lossy().into_owned());
    for delta in diff.deltas() {
        let new = path_of(delta.new_file());
        let old = path_of(delta.old_file());
        let kind = match delta.status() {
            git2::Delta::Added | git2::Delta::Untracked => "added",
            git2::Delta::Deleted => "deleted",
            git2::Delta::Renamed => "renamed",
            git2::Delta::Copied => "copied",
            git2::Delta::Typechange => "typechange",
            _ => "modified",
        };
        let binary = delta.flags().is_binary();
        let path = if kind == "deleted" {
            old.clone()
        } else {
            new.clone()
        }
        .unwrap_or_default();
        let old_path = (kind == "renamed" || kind == "copied")
            .then(|| old.clone())
            .flatten();
        if let Some(o) = &old_path {
            summary.files.push(o.clone());
        }
        summary.files.push(path.clone());
        summary.changes.push(FileChange {
            path,
            kind: kind.into(),
            old_path,
            binary,
        });
    }
    summary.files.sort();
    summary.files.dedup();
    Ok(summary)
}

fn risky_of(repo: &Repository, diff: &Diff<'_>) -> Vec<crate::git::risky::RiskyChange> {
    use crate::git::risky::{flag, NewEntry};
    use git2::FileMode;
    let mut out = Vec::new();
    for delta in diff.deltas() {
        let (old, new) = (delta.old_file(), delta.new_file());
        let was_executable = old.mode() == FileMode::BlobExecutable;
        let target;
        let entry = if delta.status() == git2::Delta::Deleted {
            NewEntry::Deleted
        } else {
            match new.mode() {
                FileMode::Blob | FileMode::BlobGroupWritable => NewEntry::File {
                    executable: false,
                    was_executable,
                },
                FileMode::BlobExecutable => NewEntry::File {
                    executable: true,
                    was_executable,
                },
                FileMode::Link => {
                    target = repo
                        .find_blob(new.id())
                        .map(|b| b.content().to_vec())
                        .unwrap_or_default();
                    NewEntry::Symlink { target: &target }
                }
                _ => NewEntry::Other,
            }
        };
        let file = if delta.status() == git2::Delta::Deleted {
            old
        } else {
            new
        };
        let path = file
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.extend(flag(&path, entry));
        if delta.status() == git2::Delta::Renamed {
            if let Some(p) = delta.old_file().path() {
                out.extend(flag(&p.to_string_lossy(), NewEntry::Deleted));
            }
        }
    }
    out
}

fn patch_of(diff: &Diff<'_>) -> Result<Vec<u8>, GitError> {
    let mut out = Vec::new();
    diff.print(DiffFormat::Patch, |_delta, _hunk, line| {
        match line.origin() {
            '+' | '-' | ' ' => out.push(line.origin() as u8),
            _ => {}
        }
        out.extend_from_slice(line.content());
        true
    })
    .ctx(|| "cannot render the patch".into())?;
    Ok(out)
}

/// The content of `path` in `tree`, if it is a blob there.
pub fn blob_at(repo: &Repository, tree: Oid, path: &Path) -> Option<Vec<u8>> {
    let tree = repo.find_tree(tree).ok()?;
    let entry = tree.get_path(path).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(blob.content().to_vec())
}
