/*!
In-memory integration: task commits are cherry-picked one after another onto a head that
starts at the base, each as a tree merge in memory (no checkout, no index file, no working
tree). A commit that conflicts with what is already integrated is skipped and its conflicting
paths returned as data.

The common case — the task's change touches only paths the head still has exactly as the
task's parent had them — is applied as a tree edit of just those paths, which costs what the
change costs, not what the whole tree costs (a three-way merge of trees walks all of them and
builds an index of every entry, so integrating n tasks would cost O(n²)). The result is the
tree a three-way merge gives; everything else goes through libgit2's merge.
*/

use git2::{Commit, MergeOptions, Oid, Repository, Tree};

use super::merge_rules::MergeRules;
use super::{fanout_signature, GitContext, GitError};

#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// Integrated; the new head.
    Merged(Oid),
    /// Nothing was applied; these paths conflict.
    Conflict(Vec<String>),
}

/// A moving integration head.
pub struct Integrator<'r> {
    repo: &'r Repository,
    head: Oid,
    /// The head's tree, parsed: reading it back costs what the whole tree costs, per commit.
    head_tree: Option<Tree<'r>>,
    /// The task file's `merge` rules: conflicts they cover are resolved, not reported.
    rules: Option<&'r MergeRules>,
}

impl<'r> Integrator<'r> {
    pub fn new(repo: &'r Repository, start: Oid) -> Self {
        Integrator {
            repo,
            head: start,
            head_tree: None,
            rules: None,
        }
    }

    /// The same integrator, resolving the conflicts `rules` cover.
    pub fn with_rules(mut self, rules: &'r MergeRules) -> Self {
        self.rules = (!rules.is_empty()).then_some(rules);
        self
    }

    pub fn head(&self) -> Oid {
        self.head
    }

    /// Moves the head back to `head` (a group that does not land leaves nothing behind).
    pub fn reset(&mut self, head: Oid) {
        self.head = head;
        self.head_tree = None;
    }

    /// Cherry-picks `commit` (its change against its first parent) onto the head.
    pub fn apply(&mut self, commit: Oid, message: &str) -> Result<Applied, GitError> {
        let repo = self.repo;
        let pick = repo
            .find_commit(commit)
            .ctx(|| format!("commit {commit} not found"))?;
        let ours = repo
            .find_commit(self.head)
            .ctx(|| format!("integration head {} not found", self.head))?;
        let ours_tree = match self.head_tree.take() {
            Some(t) if t.id() == ours.tree_id() => t,
            _ => ours
                .tree()
                .ctx(|| "cannot read the integration tree".into())?,
        };
        let tree_id = match fast_apply(repo, &pick, &ours, &ours_tree)? {
            Some(tree) => tree,
            None => match merge_apply(repo, &pick, &ours, commit, self.rules)? {
                Ok(tree) => tree,
                Err(conflict) => {
                    self.head_tree = Some(ours_tree);
                    return Ok(conflict);
                }
            },
        };
        if tree_id == ours.tree_id() {
            // The change is already integrated (e.g. two tasks made the same edit).
            self.head_tree = Some(ours_tree);
            return Ok(Applied::Merged(self.head));
        }
        let tree = repo
            .find_tree(tree_id)
            .ctx(|| "merged tree vanished".into())?;
        let sig = fanout_signature()?;
        let author = pick.author();
        let new = repo
            .commit(None, &author, &sig, message, &tree, &[&ours])
            .ctx(|| "cannot create the integration commit".into())?;
        self.head = new;
        self.head_tree = Some(tree);
        Ok(Applied::Merged(new))
    }
}

/// Runs `f` with every object `repo` writes kept in memory, then writes the integration's
/// new objects as one pack. Each integration commit writes a commit and a tree per changed
/// folder level; as loose objects that is a new file each (a millisecond apiece on some
/// disks), as one pack it is two files for the whole integration. `f` returns its result and
/// the head it reached from `start` (a chain of one-parent commits); the pack holds those
/// commits and the trees and blobs they changed, nothing else — not what the chain merely
/// reaches. Nothing refers to the objects before `f` returns (the branch is set afterwards),
/// so a crash in between loses nothing but unreferenced work.
pub fn in_one_pack<T, E: From<GitError>>(
    repo: &Repository,
    start: Oid,
    f: impl FnOnce(&mut dyn FnMut(Oid) -> Result<(), GitError>) -> Result<(T, Oid), E>,
) -> Result<T, E> {
    let odb = repo.odb().ctx(|| "cannot open the object store".into())?;
    // Above the loose (1) and packed (2) backends: writes go here first.
    let mempack = odb
        .add_new_mempack_backend(1000)
        .ctx(|| "cannot keep objects in memory".into())?;
    let mut flushed = start;
    // Writes what the chain gained since the last flush as a pack and empties the memory:
    // `f` calls it now and then so memory stays bounded however long the integration.
    let mut flush = |head: Oid| -> Result<(), GitError> {
        if head != flushed {
            write_pack(repo, &odb, flushed, head)?;
            flushed = head;
        }
        mempack
            .reset()
            .ctx(|| "cannot release the in-memory objects".into())
    };
    let (result, head) = f(&mut flush)?;
    flush(head)?;
    Ok(result)
}

/// Writes the objects of the chain `start..head` (see [`add_chain`]) as one pack.
fn write_pack(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    start: Oid,
    head: Oid,
) -> Result<(), GitError> {
    let mut pack = super::pack_write::PackBuf::new();
    add_chain(repo, odb, start, head, &mut pack)
        .ctx(|| "cannot list the integration's objects".into())?;
    let bytes = pack.finish();
    use std::io::Write;
    let mut writer = odb
        .packwriter()
        .ctx(|| "cannot write the integration's objects".into())?;
    writer.write_all(&bytes).map_err(|source| GitError::Io {
        what: "cannot write the integration's pack".into(),
        source,
    })?;
    writer
        .commit()
        .ctx(|| "cannot store the integration's pack".into())?;
    Ok(())
}

/// Adds the commits from `start` (exclusive) to `head` along first parents, oldest first (a
/// tree's delta base, the tree it replaced, comes before it), and per commit the trees and
/// blobs it changed against its parent.
fn add_chain(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    start: Oid,
    head: Oid,
    pack: &mut super::pack_write::PackBuf,
) -> Result<(), git2::Error> {
    // (commit, its parent's tree), newest first.
    let mut chain = Vec::new();
    let mut commit = repo.find_commit(head)?;
    while commit.id() != start {
        let parent = commit.parent(0)?;
        chain.push((commit, parent.tree()?));
        commit = parent;
    }
    // The head's root is stored whole: the next pack's first merge reads it back, and read as
    // the end of a chain of deltas it would leave every base of the chain in libgit2's cache of
    // this pack for the rest of the run (a flat folder of 10 000 files: 400 KB roots, 1.2 GB).
    for (k, (commit, parent_tree)) in chain.iter().rev().enumerate() {
        let is_head = k + 1 == chain.len();
        add_changed(
            repo,
            odb,
            Some(parent_tree),
            &commit.tree()?,
            pack,
            !is_head,
        )?;
        add_whole(odb, commit.id(), pack)?;
    }
    Ok(())
}

fn add_whole(
    odb: &git2::Odb<'_>,
    id: Oid,
    pack: &mut super::pack_write::PackBuf,
) -> Result<(), git2::Error> {
    if pack.has(id) {
        return Ok(());
    }
    let object = odb.read(id)?;
    pack.add(id, object.kind(), object.data())
        .map_err(|e| pack_error(id, e))
}

/// A pack that could not take an object (only compression can fail, in memory).
fn pack_error(id: Oid, e: std::io::Error) -> git2::Error {
    git2::Error::from_str(&format!("cannot pack {id}: {e}"))
}

/// Adds `new` and what beneath it differs from `old`. `new` is stored as a delta against `old`
/// when `as_delta` and `old` is in the pack (a root tree other than the pack's head); every
/// other tree whole. The integration reads trees back from its packs (a deeper tree: the next
/// task in the same folder; the head's root: the next merge), and libgit2 keeps the base of
/// every delta it resolves in a cache of each pack for as long as the pack is open: deltified
/// deeper trees grew 10 000 tasks by 10 MB. The other roots are read only from memory, while
/// their pack is built.
fn add_changed(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    old: Option<&Tree<'_>>,
    new: &Tree<'_>,
    pack: &mut super::pack_write::PackBuf,
    as_delta: bool,
) -> Result<(), git2::Error> {
    if old.is_some_and(|o| o.id() == new.id()) || pack.has(new.id()) {
        return Ok(());
    }
    match old.filter(|o| as_delta && pack.has(o.id())) {
        Some(o) => {
            let (base, target) = (odb.read(o.id())?, odb.read(new.id())?);
            pack.add_against(
                new.id(),
                git2::ObjectType::Tree,
                target.data(),
                o.id(),
                base.data(),
            )
            .map_err(|e| pack_error(new.id(), e))?;
        }
        None => add_whole(odb, new.id(), pack)?,
    }
    let before: std::collections::HashMap<Vec<u8>, (Oid, Option<git2::ObjectType>)> = old
        .map(|o| {
            o.iter()
                .map(|e| (e.name_bytes().to_vec(), (e.id(), e.kind())))
                .collect()
        })
        .unwrap_or_default();
    for e in new.iter() {
        let prior = before.get(e.name_bytes());
        if prior.is_some_and(|(id, _)| *id == e.id()) {
            continue;
        }
        match e.kind() {
            Some(git2::ObjectType::Tree) => {
                let old_sub = match prior {
                    Some((id, Some(git2::ObjectType::Tree))) => Some(repo.find_tree(*id)?),
                    _ => None,
                };
                add_changed(
                    repo,
                    odb,
                    old_sub.as_ref(),
                    &repo.find_tree(e.id())?,
                    pack,
                    false,
                )?;
            }
            Some(git2::ObjectType::Blob) => add_whole(odb, e.id(), pack)?,
            _ => {}
        }
    }
    Ok(())
}

/// The three-way merge of `pick`'s change onto `ours`: the merged tree, or the conflict.
fn merge_apply(
    repo: &Repository,
    pick: &Commit<'_>,
    ours: &Commit<'_>,
    commit: Oid,
    rules: Option<&MergeRules>,
) -> Result<Result<Oid, Applied>, GitError> {
    let mut opts = MergeOptions::new();
    opts.find_renames(true).fail_on_conflict(false);
    let mut index = repo
        .cherrypick_commit(pick, ours, 0, Some(&opts))
        .ctx(|| format!("cannot merge commit {commit}"))?;
    if index.has_conflicts() {
        let paths = match rules {
            Some(rules) => super::merge_resolve::resolve(repo, &mut index, rules)?,
            None => conflict_paths(&mut index)?,
        };
        if !paths.is_empty() {
            return Ok(Err(Applied::Conflict(paths)));
        }
    }
    let tree_id = index
        .write_tree_to(repo)
        .ctx(|| "cannot write the merged tree".into())?;
    Ok(Ok(tree_id))
}

/// Every path of the index's conflicts, sorted.
fn conflict_paths(index: &mut git2::Index) -> Result<Vec<String>, GitError> {
    let mut paths = Vec::new();
    for c in index.conflicts().ctx(|| "cannot list conflicts".into())? {
        let c = c.ctx(|| "cannot read a conflict".into())?;
        for entry in [c.our, c.their, c.ancestor].into_iter().flatten() {
            paths.push(String::from_utf8_lossy(&entry.path).into_owned());
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Applies `pick`'s change onto `ours` as an edit of the changed paths, when every one of them
/// is in `ours` exactly as in `pick`'s parent (so a three-way merge would simply take the
/// task's side). `None`: not that simple, use the three-way merge.
fn fast_apply(
    repo: &Repository,
    pick: &Commit<'_>,
    ours: &Commit<'_>,
    ours_tree: &Tree<'_>,
) -> Result<Option<Oid>, GitError> {
    if pick.parent_count() != 1 {
        return Ok(None);
    }
    let parent = pick
        .parent(0)
        .ctx(|| "cannot read the task's parent".into())?;
    if parent.tree_id() == ours.tree_id() {
        return Ok(Some(pick.tree_id()));
    }
    let parent_tree = parent
        .tree()
        .ctx(|| "cannot read the parent's tree".into())?;
    let pick_tree = pick.tree().ctx(|| "cannot read the task's tree".into())?;
    // O(change): folders the task did not touch are never opened.
    let changes = super::tree_diff::changed_paths(repo, &parent_tree, &pick_tree)
        .ctx(|| "cannot diff the task's change".into())?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    let mut removed: Vec<Vec<u8>> = Vec::new();
    let mut added: Vec<Vec<u8>> = Vec::new();
    for c in &changes {
        let path = &c.path[..];
        let Ok(path_str) = std::str::from_utf8(path) else {
            return Ok(None);
        };
        if !same_entry(ours_tree, &parent_tree, path_str) || !dirs_are_trees(ours_tree, path_str) {
            return Ok(None);
        }
        match c.new {
            None => {
                update.remove(path_str);
                removed.push(path.to_vec());
            }
            Some((id, mode)) => {
                let mode = match mode {
                    0o100644 => git2::FileMode::Blob,
                    0o100755 => git2::FileMode::BlobExecutable,
                    0o120000 => git2::FileMode::Link,
                    0o160000 => git2::FileMode::Commit,
                    _ => return Ok(None),
                };
                update.upsert(path_str, id, mode);
                added.push(path.to_vec());
            }
        }
    }
    // A file replaced by a folder (or the other way round) in one change: leave it to the merge.
    let under =
        |dir: &[u8], p: &[u8]| p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/';
    if removed
        .iter()
        .any(|r| added.iter().any(|a| under(r, a) || under(a, r)))
    {
        return Ok(None);
    }
    let tree = update
        .create_updated(repo, ours_tree)
        .ctx(|| "cannot write the integrated tree".into())?;
    Ok(Some(tree))
}

/// Whether `path` is the same entry (id and mode), or equally absent, in both trees.
fn same_entry(a: &Tree<'_>, b: &Tree<'_>, path: &str) -> bool {
    let entry = |t: &Tree<'_>| {
        t.get_path(std::path::Path::new(path))
            .ok()
            .map(|e| (e.id(), e.filemode()))
    };
    entry(a) == entry(b)
}

/// Whether every folder on the way to `path` is, in `tree`, a folder or absent.
fn dirs_are_trees(tree: &Tree<'_>, path: &str) -> bool {
    let mut end = 0;
    while let Some(slash) = path[end..].find('/') {
        end += slash;
        match tree.get_path(std::path::Path::new(&path[..end])) {
            Ok(e) if e.kind() != Some(git2::ObjectType::Tree) => return false,
            Ok(_) => {}
            // Absent here: nothing below it can be either.
            Err(_) => return true,
        }
        end += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn commit_file(repo: &Repository, parent: Option<Oid>, files: &[(&str, &str)]) -> Oid {
        let changes: Vec<(&str, Option<(&str, git2::FileMode)>)> = files
            .iter()
            .map(|(p, c)| (*p, Some((*c, git2::FileMode::Blob))))
            .collect();
        commit_paths(repo, parent, &changes)
    }

    /// Each pack's head root is whole (the next merge reads it back; read as the end of a delta
    /// chain, libgit2 would cache every base of the chain with the pack for the whole run), and
    /// the roots before it are deltas.
    #[test]
    fn a_packs_head_root_is_whole_and_the_roots_before_it_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let files: Vec<(String, String)> = (0..200)
            .map(|i| (format!("f{i}.txt"), format!("{i}\n")))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        let base = commit_file(&repo, None, &refs);
        let tasks: Vec<Oid> = (0..8)
            .map(|i| commit_file(&repo, Some(base), &[(&format!("new{i}.txt"), "x\n")]))
            .collect();
        let mut heads = Vec::new();
        in_one_pack::<(), GitError>(&repo, base, |flush| {
            let mut integ = Integrator::new(&repo, base);
            for (i, t) in tasks.iter().enumerate() {
                assert!(matches!(integ.apply(*t, "t")?, Applied::Merged(_)));
                if i % 4 == 3 {
                    flush(integ.head())?;
                    heads.push(integ.head());
                }
            }
            Ok(((), integ.head()))
        })
        .unwrap();
        let pack_dir = dir.path().join(".git/objects/pack");
        let mut listing = String::new();
        for e in std::fs::read_dir(&pack_dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "pack") {
                let out = std::process::Command::new("git")
                    .args(["verify-pack", "-v"])
                    .arg(e.path())
                    .env("GIT_CONFIG_GLOBAL", "/dev/null")
                    .output()
                    .expect("git runs");
                assert!(out.status.success());
                listing.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
        // `<id> tree <size> <packed> <offset>` whole; `… <depth> <base>` a delta.
        let fields = |id: Oid| -> usize {
            let line = listing
                .lines()
                .find(|l| l.starts_with(&id.to_string()))
                .unwrap_or_else(|| panic!("{id} in a pack: {listing}"));
            line.split_whitespace().count()
        };
        assert_eq!(heads.len(), 2);
        for h in &heads {
            let root = repo.find_commit(*h).unwrap().tree_id();
            assert_eq!(fields(root), 5, "a pack's head root is whole: {listing}");
            let before = repo.find_commit(*h).unwrap().parent(0).unwrap().tree_id();
            assert_eq!(
                fields(before),
                7,
                "the root before it is a delta: {listing}"
            );
        }
    }

    #[test]
    fn integrates_disjoint_changes_and_reports_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let base = commit_file(&repo, None, &[("a.txt", "one\n"), ("b.txt", "two\n")]);
        let t1 = commit_file(&repo, Some(base), &[("a.txt", "ONE\n")]);
        let t2 = commit_file(&repo, Some(base), &[("b.txt", "TWO\n")]);
        let t3 = commit_file(&repo, Some(base), &[("a.txt", "uno\n")]);
        let mut integ = Integrator::new(&repo, base);
        assert!(matches!(integ.apply(t1, "t1").unwrap(), Applied::Merged(_)));
        assert!(matches!(integ.apply(t2, "t2").unwrap(), Applied::Merged(_)));
        assert_eq!(
            integ.apply(t3, "t3").unwrap(),
            Applied::Conflict(vec!["a.txt".into()])
        );
        let tree = repo.find_commit(integ.head()).unwrap().tree().unwrap();
        let read = |p: &str| {
            let e = tree.get_path(Path::new(p)).unwrap();
            String::from_utf8(repo.find_blob(e.id()).unwrap().content().to_vec()).unwrap()
        };
        assert_eq!(read("a.txt"), "ONE\n");
        assert_eq!(read("b.txt"), "TWO\n");
    }

    /// A commit on `parent` with `changes` applied: (path, Some((content, mode))) or (path, None).
    fn commit_paths(
        repo: &Repository,
        parent: Option<Oid>,
        changes: &[(&str, Option<(&str, git2::FileMode)>)],
    ) -> Oid {
        let mut tree = match parent {
            Some(p) => repo.find_commit(p).unwrap().tree().unwrap(),
            None => repo
                .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
                .unwrap(),
        };
        // Removals first: libgit2's tree update refuses a file and a folder of one name at once.
        for removing in [true, false] {
            let mut update = git2::build::TreeUpdateBuilder::new();
            for (path, change) in changes {
                match change {
                    Some((content, mode)) if !removing => {
                        let blob = repo.blob(content.as_bytes()).unwrap();
                        update.upsert(*path, blob, *mode);
                    }
                    None if removing => {
                        update.remove(*path);
                    }
                    _ => {}
                }
            }
            tree = repo
                .find_tree(update.create_updated(repo, &tree).unwrap())
                .unwrap();
        }
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let parents: Vec<_> = parent
            .map(|p| repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "m", &tree, &refs).unwrap()
    }

    #[test]
    fn the_tree_edit_gives_what_the_three_way_merge_gives() {
        use git2::FileMode::{Blob, BlobExecutable};
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let base = commit_paths(
            &repo,
            None,
            &[
                ("a.txt", Some(("a\n", Blob))),
                ("d/x.txt", Some(("x\n", Blob))),
                ("d/y.txt", Some(("y\n", Blob))),
                ("e/only.txt", Some(("only\n", Blob))),
                ("f", Some(("f\n", Blob))),
            ],
        );
        let picks = [
            commit_paths(&repo, Some(base), &[("d/x.txt", Some(("X\n", Blob)))]),
            commit_paths(&repo, Some(base), &[("e/only.txt", None)]),
            commit_paths(
                &repo,
                Some(base),
                &[("g/new/deep.txt", Some(("deep\n", Blob)))],
            ),
            commit_paths(
                &repo,
                Some(base),
                &[("a.txt", Some(("a\n", BlobExecutable)))],
            ),
            commit_paths(
                &repo,
                Some(base),
                &[("f", None), ("f/inner.txt", Some(("in\n", Blob)))],
            ),
            commit_paths(&repo, Some(base), &[("d/z.txt", Some(("z\n", Blob)))]),
            // Same path as the first: a conflict either way.
            commit_paths(&repo, Some(base), &[("d/x.txt", Some(("other\n", Blob)))]),
            // The same edit as the first: nothing new.
            commit_paths(&repo, Some(base), &[("d/x.txt", Some(("X\n", Blob)))]),
        ];
        // The simple changes take the tree edit, the file-to-folder one the merge.
        let first = commit_paths(&repo, Some(base), &[("d/y.txt", Some(("Y\n", Blob)))]);
        let (first, c) = (repo.find_commit(first).unwrap(), |o| {
            repo.find_commit(o).unwrap()
        });
        for (i, simple) in [
            (0, true),
            (1, true),
            (2, true),
            (3, true),
            (4, false),
            (5, true),
        ] {
            let got = fast_apply(&repo, &c(picks[i]), &first, &first.tree().unwrap()).unwrap();
            assert_eq!(got.is_some(), simple, "pick {i}");
        }
        let mut integ = Integrator::new(&repo, base);
        let mut results = Vec::new();
        for p in picks {
            results.push(integ.apply(p, "m").unwrap());
        }
        assert!(matches!(results[6], Applied::Conflict(_)), "{results:?}");
        assert_eq!(results[7], results[5]);
        // The same picks through the three-way merge only.
        let mut head = base;
        for p in picks {
            let pick = repo.find_commit(p).unwrap();
            let ours = repo.find_commit(head).unwrap();
            if let Ok(tree) = merge_apply(&repo, &pick, &ours, p, None).unwrap() {
                let tree = repo.find_tree(tree).unwrap();
                let sig = git2::Signature::now("t", "t@t").unwrap();
                head = repo.commit(None, &sig, &sig, "m", &tree, &[&ours]).unwrap();
            }
        }
        let fast = repo.find_commit(integ.head()).unwrap().tree_id();
        let merged = repo.find_commit(head).unwrap().tree_id();
        assert_eq!(fast, merged);
        let tree = repo.find_tree(fast).unwrap();
        assert!(
            tree.get_path(Path::new("e")).is_err(),
            "an emptied folder disappears"
        );
        assert!(tree.get_path(Path::new("f/inner.txt")).is_ok());
        assert_eq!(
            tree.get_path(Path::new("a.txt")).unwrap().filemode(),
            i32::from(BlobExecutable)
        );
    }

    #[test]
    fn union_files_take_every_task_and_other_files_still_conflict() {
        use crate::git::merge_rules::{MergeRules, MergeStrategy};
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let list: String = (1..=8).map(|i| format!("host{i}\n")).collect();
        let base = commit_file(&repo, None, &[("allow.txt", &list), ("main.rs", "a\n")]);
        let picks: Vec<Oid> = (2..=7)
            .map(|i| {
                let without = list.replace(&format!("host{i}\n"), "");
                commit_file(&repo, Some(base), &[("allow.txt", &without)])
            })
            .collect();
        let rules = MergeRules::new(&[(vec!["allow.txt".into()], MergeStrategy::Union)]).unwrap();
        let mut integ = Integrator::new(&repo, base).with_rules(&rules);
        for &p in &picks {
            assert!(matches!(integ.apply(p, "m").unwrap(), Applied::Merged(_)));
        }
        let read = |head: Oid, p: &str| {
            let tree = repo.find_commit(head).unwrap().tree().unwrap();
            let e = tree.get_path(Path::new(p)).unwrap();
            String::from_utf8(repo.find_blob(e.id()).unwrap().content().to_vec()).unwrap()
        };
        assert_eq!(read(integ.head(), "allow.txt"), "host1\nhost8\n");
        // Without the rule, the second removal already conflicts.
        let mut plain = Integrator::new(&repo, base);
        assert!(matches!(
            plain.apply(picks[0], "m").unwrap(),
            Applied::Merged(_)
        ));
        assert!(matches!(
            plain.apply(picks[1], "m").unwrap(),
            Applied::Conflict(_)
        ));
        // A file no rule names still conflicts, even next to a union file.
        let a = commit_file(
            &repo,
            Some(base),
            &[("main.rs", "b\n"), ("allow.txt", "x\n")],
        );
        let b = commit_file(
            &repo,
            Some(base),
            &[("main.rs", "c\n"), ("allow.txt", "y\n")],
        );
        let mut integ = Integrator::new(&repo, base).with_rules(&rules);
        assert!(matches!(integ.apply(a, "m").unwrap(), Applied::Merged(_)));
        assert_eq!(
            integ.apply(b, "m").unwrap(),
            Applied::Conflict(vec!["main.rs".into()])
        );
    }

    #[test]
    fn ours_keeps_the_integration_and_theirs_takes_the_task() {
        use crate::git::merge_rules::{MergeRules, MergeStrategy};
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let files = [
            ("CHANGELOG.md", "base\n"),
            ("lock.json", "{}\n"),
            ("data.bin", "a\0b\n"),
        ];
        let base = commit_file(&repo, None, &files);
        let first = commit_file(
            &repo,
            Some(base),
            &[("CHANGELOG.md", "first\n"), ("lock.json", "{\"a\": 1}\n")],
        );
        let second = commit_file(
            &repo,
            Some(base),
            &[("CHANGELOG.md", "second\n"), ("lock.json", "{\"b\": 2}\n")],
        );
        let rules = MergeRules::new(&[
            (vec!["CHANGELOG.md".into()], MergeStrategy::Ours),
            (vec!["*.json".into(), "*.bin".into()], MergeStrategy::Theirs),
        ])
        .unwrap();
        let mut integ = Integrator::new(&repo, base).with_rules(&rules);
        assert!(matches!(
            integ.apply(first, "m").unwrap(),
            Applied::Merged(_)
        ));
        assert!(matches!(
            integ.apply(second, "m").unwrap(),
            Applied::Merged(_)
        ));
        let tree = repo.find_commit(integ.head()).unwrap().tree().unwrap();
        let read = |p: &str| {
            let e = tree.get_path(Path::new(p)).unwrap();
            String::from_utf8(repo.find_blob(e.id()).unwrap().content().to_vec()).unwrap()
        };
        assert_eq!(read("CHANGELOG.md"), "first\n");
        assert_eq!(read("lock.json"), "{\"b\": 2}\n");
        // A binary file is never merged by union: it still conflicts.
        let union = MergeRules::new(&[(vec!["*.bin".into()], MergeStrategy::Union)]).unwrap();
        let a = commit_file(&repo, Some(base), &[("data.bin", "a\0c\n")]);
        let b = commit_file(&repo, Some(base), &[("data.bin", "a\0d\n")]);
        let mut integ = Integrator::new(&repo, base).with_rules(&union);
        assert!(matches!(integ.apply(a, "m").unwrap(), Applied::Merged(_)));
        assert_eq!(
            integ.apply(b, "m").unwrap(),
            Applied::Conflict(vec!["data.bin".into()])
        );
    }
}
