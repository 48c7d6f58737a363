/*!
A parallel checkout of a whole commit into an empty folder, with the index that describes it:
how overlay lowers are made. libgit2's checkout writes one file after another behind a diff of
the whole tree against the (empty) folder; here the blobs are written by every core at once
(rayon, one repository handle per worker) and the index is built from the written files' own
stat data, so `git status` in a view of the lower is clean and fast.

Only plain content is written this way: a commit whose tree has a `.gitattributes` file, or a
repository whose configuration could change bytes on checkout (`core.autocrlf`, `core.eol`,
`core.symlinks = false`), is left to libgit2's checkout (`None`), which applies filters and
line-ending rules.
*/

use super::bytes_path;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use git2::{IndexEntry, IndexTime, ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use rayon::prelude::*;

use super::{GitContext, GitError};

/// One entry of a commit's tree (a file, link or gitlink) with its slash-separated path.
pub struct Item {
    pub path: Vec<u8>,
    pub id: Oid,
    pub mode: u32,
}

/// What a plain checkout of a commit writes: its entries and its folders.
pub struct Listing {
    pub items: Vec<Item>,
    pub dirs: Vec<Vec<u8>>,
}

/// Whether checking out could change a blob's bytes or kind (then libgit2 does it).
fn needs_filters(repo: &Repository, items: &[Item]) -> bool {
    converts_content(repo)
        || items
            .iter()
            .any(|i| i.path == b".gitattributes" || i.path.ends_with(b"/.gitattributes"))
}

/// Whether the repository's configuration makes a checkout write other bytes than the blobs'
/// (line endings) or links as files.
pub fn converts_content(repo: &Repository) -> bool {
    let config = repo.config().ok();
    let set = |key: &str| {
        config
            .as_ref()
            .and_then(|c| c.get_string(key).ok())
            .is_some_and(|v| !v.eq_ignore_ascii_case("false"))
    };
    let no_symlinks = config
        .as_ref()
        .and_then(|c| c.get_bool("core.symlinks").ok())
        == Some(false);
    no_symlinks || set("core.autocrlf") || set("core.eol")
}

/// A path component git refuses to check out (libgit2's checkout reports it).
fn bad_component(path: &[u8]) -> bool {
    path.split(|b| *b == b'/')
        .any(|c| c.is_empty() || c == b"." || c == b".." || c.eq_ignore_ascii_case(b".git"))
}

/// A commit's entries and folders, as [`checkout_plain`] writes them; `None` when the commit
/// needs libgit2's filtering checkout (see the module comment) or has a path git refuses.
pub fn plain_listing(repo: &Repository, commit: Oid) -> Result<Option<Listing>, GitError> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .ctx(|| format!("cannot read the tree of {commit}"))?;
    let mut items = Vec::new();
    let mut dirs: Vec<Vec<u8>> = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, e| {
        let mut path = dir.as_bytes().to_vec();
        path.extend_from_slice(e.name_bytes());
        match e.kind() {
            Some(ObjectType::Tree) => dirs.push(path),
            _ => items.push(Item {
                path,
                id: e.id(),
                mode: e.filemode() as u32,
            }),
        }
        TreeWalkResult::Ok
    })
    .ctx(|| format!("cannot list the tree of {commit}"))?;
    if needs_filters(repo, &items)
        || items.iter().any(|i| bad_component(&i.path))
        || dirs.iter().any(|d| bad_component(d))
    {
        return Ok(None);
    }
    Ok(Some(Listing { items, dirs }))
}

/// Writes `commit`'s files into the empty folder `dest` and their index to `index_path`;
/// `false` (nothing written) when the commit needs libgit2's filtering checkout (see the
/// module comment) or has a path git refuses.
pub fn checkout_plain(
    repo: &Repository,
    commit: Oid,
    dest: &Path,
    index_path: &Path,
) -> Result<bool, GitError> {
    let Some(Listing { items, dirs }) = plain_listing(repo, commit)? else {
        return Ok(false);
    };
    for d in &dirs {
        let p = dest.join(bytes_path(d));
        std::fs::create_dir_all(&p).ctx(|| format!("cannot create {}", p.display()))?;
    }
    let git_dir: PathBuf = repo.path().to_path_buf();
    let entries: Vec<Result<Option<IndexEntry>, GitError>> = items
        .par_iter()
        .map_init(
            || Repository::open_bare(&git_dir),
            |repo, item| {
                let repo = repo.as_ref().map_err(|e| GitError::Op {
                    what: "cannot open the repository".into(),
                    source: git2::Error::from_str(e.message()),
                })?;
                write_item(repo, dest, item)
            },
        )
        .collect();
    let mut index = git2::Index::open(index_path)
        .ctx(|| format!("cannot make the index {}", index_path.display()))?;
    let mut written: Vec<IndexEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        if let Some(e) = e? {
            written.push(e);
        }
    }
    // In the index's own order, so every add appends.
    written.sort_by(|a, b| a.path.cmp(&b.path));
    for e in &written {
        index
            .add(e)
            .ctx(|| format!("cannot record {}", bytes_path(&e.path).display()))?;
    }
    index
        .write()
        .ctx(|| format!("cannot write the index {}", index_path.display()))?;
    Ok(true)
}

/// Writes one entry; its index entry with the file's stat data (a gitlink's folder stays
/// empty, its entry has none).
fn write_item(repo: &Repository, dest: &Path, item: &Item) -> Result<Option<IndexEntry>, GitError> {
    let target = dest.join(bytes_path(&item.path));
    match item.mode {
        0o160000 => {
            std::fs::create_dir_all(&target)
                .ctx(|| format!("cannot create {}", target.display()))?;
            return Ok(Some(entry(item, None)));
        }
        0o120000 => {
            let blob = repo
                .find_blob(item.id)
                .ctx(|| format!("cannot read the link {}", target.display()))?;
            use std::os::unix::ffi::OsStrExt;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(blob.content()), &target)
                .ctx(|| format!("cannot create the link {}", target.display()))?;
        }
        mode => {
            let blob = repo
                .find_blob(item.id)
                .ctx(|| format!("cannot read {}", target.display()))?;
            let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(perm)
                .open(&target)
                .ctx(|| format!("cannot create {}", target.display()))?;
            use std::io::Write;
            f.write_all(blob.content())
                .ctx(|| format!("cannot write {}", target.display()))?;
        }
    }
    let meta =
        std::fs::symlink_metadata(&target).ctx(|| format!("cannot stat {}", target.display()))?;
    Ok(Some(entry(item, Some(&meta))))
}

fn entry(item: &Item, meta: Option<&std::fs::Metadata>) -> IndexEntry {
    let time = |s: i64, ns: i64| IndexTime::new(s as i32, ns as u32);
    let m = meta;
    IndexEntry {
        ctime: m.map_or(time(0, 0), |m| time(m.ctime(), m.ctime_nsec())),
        mtime: m.map_or(time(0, 0), |m| time(m.mtime(), m.mtime_nsec())),
        dev: m.map_or(0, |m| m.dev() as u32),
        ino: m.map_or(0, |m| m.ino() as u32),
        mode: item.mode,
        uid: m.map_or(0, |m| m.uid()),
        gid: m.map_or(0, |m| m.gid()),
        file_size: m.map_or(0, |m| m.size() as u32),
        id: item.id,
        flags: 0,
        flags_extended: 0,
        path: item.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_checkout_matches_the_tree_and_git_sees_it_clean() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path().join("r")).unwrap();
        let mut u = git2::build::TreeUpdateBuilder::new();
        let empty = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        for (p, c, m) in [
            ("a.txt", &b"a\n"[..], git2::FileMode::Blob),
            ("d/e/x.sh", b"#!/bin/sh\n", git2::FileMode::BlobExecutable),
            ("link", b"a.txt", git2::FileMode::Link),
        ] {
            u.upsert(p, repo.blob(c).unwrap(), m);
        }
        let tree = repo
            .find_tree(u.create_updated(&repo, &empty).unwrap())
            .unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let c = repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let index_path = dir.path().join("index");
        assert!(checkout_plain(&repo, c, &dest, &index_path).unwrap());
        let mut index = git2::Index::open(&index_path).unwrap();
        assert_eq!(index.write_tree_to(&repo).unwrap(), tree.id());
        assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"a\n");
        let mode = std::fs::metadata(dest.join("d/e/x.sh")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("a.txt")
        );
        let e = index.get_path(Path::new("a.txt"), 0).unwrap();
        assert_eq!(e.file_size, 2);
        assert_ne!(e.ino, 0);
    }

    #[test]
    fn attributes_leave_the_checkout_to_libgit2() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path().join("r")).unwrap();
        let mut b = repo.treebuilder(None).unwrap();
        b.insert(
            ".gitattributes",
            repo.blob(b"* text=auto\n").unwrap(),
            0o100644,
        )
        .unwrap();
        let tree = repo.find_tree(b.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let c = repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        assert!(!checkout_plain(&repo, c, &dest, &dir.path().join("index")).unwrap());
    }
}
