/*!
What differs between two trees, in O(what changed): folders whose ids are equal are never
opened. libgit2's tree-to-tree diff walks every entry of both trees (O(files in the repository)
per task, which on a big repository is most of a task's cost); this walk gives the changed
paths, and [`limit_to`] limits libgit2's diff to exactly those (a path list, not patterns): its
tree iterator then opens no folder that holds none of them, so the diff (renames, line counts,
patches) costs what the change costs and says the same. Nothing is written: an earlier version
built two pruned trees as objects, a loose file each, and every new object makes libgit2 rescan
the pack folder.
*/

use std::collections::BTreeMap;

use git2::{ObjectType, Oid, Repository, Tree, TreeEntry};

use super::bytes_path;

/// One path whose entry differs: its (id, mode) before and after (`None`: absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Changed {
    pub path: Vec<u8>,
    pub old: Option<(Oid, i32)>,
    pub new: Option<(Oid, i32)>,
}

fn is_tree(e: &TreeEntry<'_>) -> bool {
    e.kind() == Some(ObjectType::Tree)
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Every non-folder path that differs between `old` and `new`.
pub fn changed_paths(
    repo: &Repository,
    old: &Tree<'_>,
    new: &Tree<'_>,
) -> Result<Vec<Changed>, git2::Error> {
    let mut out = Vec::new();
    walk(repo, b"", Some(old), Some(new), &mut out)?;
    Ok(out)
}

fn walk(
    repo: &Repository,
    prefix: &[u8],
    old: Option<&Tree<'_>>,
    new: Option<&Tree<'_>>,
    out: &mut Vec<Changed>,
) -> Result<(), git2::Error> {
    type Pair<'a> = (Option<TreeEntry<'a>>, Option<TreeEntry<'a>>);
    let mut names: BTreeMap<Vec<u8>, Pair<'_>> = BTreeMap::new();
    for e in old.into_iter().flat_map(|t| t.iter()) {
        let name = e.name_bytes().to_vec();
        names.entry(name).or_default().0 = Some(e);
    }
    for e in new.into_iter().flat_map(|t| t.iter()) {
        let name = e.name_bytes().to_vec();
        names.entry(name).or_default().1 = Some(e);
    }
    for (name, (o, n)) in names {
        if let (Some(o), Some(n)) = (&o, &n) {
            if o.id() == n.id() && o.filemode() == n.filemode() {
                continue;
            }
        }
        let path = join(prefix, &name);
        let sub = |e: &Option<TreeEntry<'_>>| -> Result<Option<Tree<'_>>, git2::Error> {
            match e {
                Some(e) if is_tree(e) => repo.find_tree(e.id()).map(Some),
                _ => Ok(None),
            }
        };
        let (old_sub, new_sub) = (sub(&o)?, sub(&n)?);
        if old_sub.is_some() || new_sub.is_some() {
            walk(repo, &path, old_sub.as_ref(), new_sub.as_ref(), out)?;
        }
        let leaf = |e: &Option<TreeEntry<'_>>| {
            e.as_ref()
                .filter(|e| !is_tree(e))
                .map(|e| (e.id(), e.filemode()))
        };
        let (old_leaf, new_leaf) = (leaf(&o), leaf(&n));
        if old_leaf.is_some() || new_leaf.is_some() {
            out.push(Changed {
                path,
                old: old_leaf,
                new: new_leaf,
            });
        }
    }
    Ok(())
}

/// Limits a diff to the `changes`' paths, matched exactly (no patterns); with no changes, to
/// a path no tree holds (an empty list would mean every path).
pub fn limit_to(opts: &mut git2::DiffOptions, changes: &[Changed]) {
    opts.disable_pathspec_match(true);
    if changes.is_empty() {
        opts.pathspec(".git");
    }
    for c in changes {
        opts.pathspec(bytes_path(&c.path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::file_mode;

    fn tree(repo: &Repository, files: &[(&str, &[u8], i32)]) -> Oid {
        let empty = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let mut u = git2::build::TreeUpdateBuilder::new();
        for (p, content, mode) in files {
            let id = repo.blob(content).unwrap();
            u.upsert(*p, id, file_mode(*mode as u32));
        }
        u.create_updated(repo, &empty).unwrap()
    }

    #[test]
    fn the_walk_and_the_pruned_diff_agree_with_a_full_diff() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let old = tree(
            &repo,
            &[
                ("same/a.txt", b"a", 0o100644),
                ("same/deep/b.txt", b"b", 0o100644),
                ("mod.txt", b"one\n", 0o100644),
                ("gone/x.txt", b"x", 0o100644),
                ("f2d", b"file", 0o100644),
                ("exec.sh", b"#!", 0o100644),
                (
                    "moved.txt",
                    b"moved content that is long enough\n",
                    0o100644,
                ),
            ],
        );
        let new = tree(
            &repo,
            &[
                ("same/a.txt", b"a", 0o100644),
                ("same/deep/b.txt", b"b", 0o100644),
                ("mod.txt", b"two\n", 0o100644),
                ("new/y.txt", b"y", 0o100644),
                ("f2d/inner", b"i", 0o100644),
                ("exec.sh", b"#!", 0o100755),
                (
                    "sub/moved.txt",
                    b"moved content that is long enough\n",
                    0o100644,
                ),
            ],
        );
        let (old_t, new_t) = (repo.find_tree(old).unwrap(), repo.find_tree(new).unwrap());
        let changed = changed_paths(&repo, &old_t, &new_t).unwrap();
        let paths: Vec<String> = changed
            .iter()
            .map(|c| String::from_utf8_lossy(&c.path).into_owned())
            .collect();
        assert!(!paths.iter().any(|p| p.starts_with("same/")), "{paths:?}");
        // The deltas (renames found) of the diff of `a` and `b`, limited to the changes or not.
        let describe = |a: Oid, b: Oid, limit: bool| {
            let (a, b) = (repo.find_tree(a).unwrap(), repo.find_tree(b).unwrap());
            let mut opts = git2::DiffOptions::new();
            if limit {
                limit_to(&mut opts, &changed);
            }
            let mut diff = repo
                .diff_tree_to_tree(Some(&a), Some(&b), Some(&mut opts))
                .unwrap();
            let mut find = git2::DiffFindOptions::new();
            find.renames(true);
            diff.find_similar(Some(&mut find)).unwrap();
            let mut out: Vec<String> = diff
                .deltas()
                .map(|d| {
                    format!(
                        "{:?} {:?} {:?}",
                        d.status(),
                        d.old_file().path(),
                        d.new_file().path()
                    )
                })
                .collect();
            out.sort();
            out
        };
        assert_eq!(describe(old, new, true), describe(old, new, false));
        let mut none = git2::DiffOptions::new();
        limit_to(&mut none, &[]);
        let same = repo.find_tree(old).unwrap();
        let diff = repo
            .diff_tree_to_tree(Some(&same), Some(&same), Some(&mut none))
            .unwrap();
        assert_eq!(diff.deltas().count(), 0);
        assert!(describe(old, new, false)
            .iter()
            .any(|d| d.starts_with("Renamed")));
    }
}
