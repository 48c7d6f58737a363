/*!
A read-only copy of a commit's files, written by fanout from the object store (never copied
from a workspace), for the processes that judge the commit (read-back, review, diagnosis).

Only the paths asked for are written ([`Which::Paths`]: the changed files, for read-back) or the
whole tree ([`Which::All`]: review and diagnosis read around the change). Files get mode 0444
(0555 when executable), folders 0555 once filled; symbolic links stay links (whoever reads the
snapshot is confined: a link out of it leads nowhere readable); submodules are empty folders;
`.git` entries are left out. Creation never follows a link: every folder is made by this code
in a fresh destination, and files are created with `O_EXCL | O_NOFOLLOW`.
*/

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot open the repository")]
    Repo(#[source] git2::Error),
    #[error("cannot read the committed {path}")]
    Object {
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("the committed path {0:?} cannot be written safely")]
    BadPath(String),
    #[error("cannot write the snapshot at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What of the tree a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Which {
    /// These paths (relative, `/`-separated); paths not in the tree are left out.
    Paths(Vec<String>),
    /// Every file of the tree.
    All,
}

/// Writes `which` of `tree` (in the repository at `repo_path`) beneath `dest`, a folder that
/// must not exist yet. Returns the number of entries written.
pub fn materialise(
    repo_path: &Path,
    tree: git2::Oid,
    which: &Which,
    dest: &Path,
) -> Result<usize, SnapshotError> {
    let repo = git2::Repository::open(repo_path).map_err(SnapshotError::Repo)?;
    let tree = repo
        .find_tree(tree)
        .map_err(|source| SnapshotError::Object {
            path: "(tree)".into(),
            source,
        })?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { path, source }
    };
    std::fs::create_dir(dest).map_err(io(dest))?;
    let mut writer = Writer {
        repo: &repo,
        dest,
        dirs: vec![dest.to_path_buf()],
        written: 0,
    };
    match which {
        Which::All => writer.tree(&tree, "")?,
        Which::Paths(paths) => {
            for p in paths {
                if p.split('/').any(|c| c == ".git") {
                    continue;
                }
                let Ok(entry) = tree.get_path(Path::new(p)) else {
                    continue;
                };
                writer.entry(p, entry.id(), entry.filemode())?;
            }
        }
    }
    let written = writer.written;
    // Read-only folders once filled, deepest first.
    let mut dirs = writer.dirs;
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).map_err(io(&d))?;
    }
    Ok(written)
}

struct Writer<'a> {
    repo: &'a git2::Repository,
    dest: &'a Path,
    dirs: Vec<PathBuf>,
    written: usize,
}

impl Writer<'_> {
    fn tree(&mut self, tree: &git2::Tree<'_>, prefix: &str) -> Result<(), SnapshotError> {
        for e in tree.iter() {
            let Some(name) = e.name() else {
                return Err(SnapshotError::BadPath(format!(
                    "{prefix}{}",
                    String::from_utf8_lossy(e.name_bytes())
                )));
            };
            let path = format!("{prefix}{name}");
            if e.filemode() == 0o040000 {
                if name == ".git" {
                    continue;
                }
                self.folder(&path)?;
                let sub = self
                    .repo
                    .find_tree(e.id())
                    .map_err(|source| SnapshotError::Object {
                        path: path.clone(),
                        source,
                    })?;
                self.tree(&sub, &format!("{path}/"))?;
            } else {
                // Its folder was made above: no need to look at the parents again.
                self.write(&path, e.id(), e.filemode())?;
            }
        }
        Ok(())
    }

    /// The checked place of a relative path beneath `dest`.
    fn place(&self, rel: &str) -> Result<PathBuf, SnapshotError> {
        let p = Path::new(rel);
        let ok = !rel.is_empty()
            && p.components().all(|c| match c {
                Component::Normal(n) => n != ".git",
                _ => false,
            });
        if !ok {
            return Err(SnapshotError::BadPath(rel.to_string()));
        }
        Ok(self.dest.join(p))
    }

    /// Makes the folder `rel` and its parents (each created here, never a link).
    fn folder(&mut self, rel: &str) -> Result<(), SnapshotError> {
        let full = self.place(rel)?;
        let mut at = self.dest.to_path_buf();
        for c in Path::new(rel).components() {
            at.push(c);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => return Err(SnapshotError::BadPath(rel.to_string())),
                Err(_) => {}
            }
            std::fs::create_dir(&at).map_err(|source| SnapshotError::Io {
                path: at.clone(),
                source,
            })?;
            self.dirs.push(at.clone());
        }
        debug_assert_eq!(at, full);
        Ok(())
    }

    /// Writes one entry, making its parent folders first.
    fn entry(&mut self, rel: &str, id: git2::Oid, mode: i32) -> Result<(), SnapshotError> {
        if let Some(parent) = Path::new(rel).parent().and_then(Path::to_str) {
            if !parent.is_empty() {
                self.folder(parent)?;
            }
        }
        self.write(rel, id, mode)
    }

    /// Writes one entry whose parent folder exists.
    fn write(&mut self, rel: &str, id: git2::Oid, mode: i32) -> Result<(), SnapshotError> {
        let full = self.place(rel)?;
        let object = |source| SnapshotError::Object {
            path: rel.to_string(),
            source,
        };
        let io = |source| SnapshotError::Io {
            path: full.clone(),
            source,
        };
        match mode {
            0o160000 => {
                // A submodule: its folder, empty (as in a checkout without `submodule update`).
                self.folder(rel)?;
            }
            0o040000 => {
                let sub = self.repo.find_tree(id).map_err(object)?;
                self.folder(rel)?;
                self.tree(&sub, &format!("{rel}/"))?;
            }
            0o120000 => {
                let blob = self.repo.find_blob(id).map_err(object)?;
                let target =
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(blob.content());
                std::os::unix::fs::symlink(target, &full).map_err(io)?;
                self.written += 1;
            }
            _ => {
                let blob = self.repo.find_blob(id).map_err(object)?;
                let perm = if mode == 0o100755 { 0o555 } else { 0o444 };
                // Created read-only: the descriptor may still write (the mode applies to
                // later opens). The umask only removes bits.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(perm)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&full)
                    .map_err(io)?;
                f.write_all(blob.content()).map_err(io)?;
                self.written += 1;
            }
        }
        Ok(())
    }
}

/// Removes a snapshot (its folders are read-only: made writable first, never following links).
pub fn remove(dest: &Path) -> std::io::Result<()> {
    fn open_up(dir: &Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            open_up(dest);
            std::fs::remove_dir_all(dest)
        }
        Ok(_) => std::fs::remove_file(dest),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn repo_with(files: &[(&str, &[u8], i32)]) -> (tempfile::TempDir, git2::Oid) {
        let d = tempfile::tempdir().expect("tmp");
        let repo = git2::Repository::init(d.path()).expect("init");
        let mut idx = repo.index().expect("index");
        for (path, content, mode) in files {
            let id = repo.blob(content).expect("blob");
            idx.add(&git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: *mode as u32,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            })
            .expect("add");
        }
        let tree = idx.write_tree().expect("tree");
        (d, tree)
    }

    #[test]
    fn writes_only_what_is_asked_read_only() {
        let (d, tree) = repo_with(&[
            ("a/b/c.txt", b"one\r\n", 0o100644),
            ("a/run.sh", b"#!/bin/sh\n", 0o100755),
            ("top.txt", b"top\n", 0o100644),
            ("link", b"/etc/passwd", 0o120000),
        ]);
        let out = tempfile::tempdir().expect("out");
        let dest = out.path().join("snap");
        let n = materialise(
            d.path(),
            tree,
            &Which::Paths(vec!["a/b/c.txt".into(), "gone.txt".into()]),
            &dest,
        )
        .expect("materialise");
        assert_eq!(n, 1);
        assert_eq!(
            std::fs::read(dest.join("a/b/c.txt")).expect("read"),
            b"one\r\n"
        );
        assert!(!dest.join("top.txt").exists());
        let mode = |p: &str| {
            std::fs::symlink_metadata(dest.join(p))
                .expect("meta")
                .mode()
                & 0o777
        };
        assert_eq!(mode("a/b/c.txt"), 0o444);
        assert_eq!(mode("a/b"), 0o555);
        assert_eq!(mode(""), 0o555);
        remove(&dest).expect("remove");
        assert!(!dest.exists());

        let all = out.path().join("all");
        assert_eq!(
            materialise(d.path(), tree, &Which::All, &all).expect("all"),
            4
        );
        assert_eq!(
            std::fs::symlink_metadata(all.join("a/run.sh"))
                .expect("m")
                .mode()
                & 0o777,
            0o555
        );
        assert_eq!(
            std::fs::read_link(all.join("link")).expect("link"),
            Path::new("/etc/passwd")
        );
        // An existing destination is refused: a snapshot is always written fresh.
        assert!(materialise(d.path(), tree, &Which::All, &all).is_err());
        remove(&all).expect("remove");
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// The cost of a whole-tree snapshot of a 50 000-file repository against the changed
    /// files alone (run with `--ignored --nocapture`; a measurement, slow to set up).
    #[test]
    #[ignore]
    fn whole_tree_against_changed_files_on_50k_files() {
        let d = tempfile::tempdir().expect("tmp");
        let repo = git2::Repository::init(d.path()).expect("init");
        let mut root = repo.treebuilder(None).expect("builder");
        for dir in 0..500 {
            let mut sub = repo.treebuilder(None).expect("builder");
            for f in 0..100 {
                let body = format!("dir {dir} file {f}\n").repeat(20);
                let id = repo.blob(body.as_bytes()).expect("blob");
                sub.insert(format!("f{f:03}.txt"), id, 0o100644)
                    .expect("insert");
            }
            let sub = sub.write().expect("tree");
            root.insert(format!("d{dir:03}"), sub, 0o040000)
                .expect("insert");
        }
        let tree = root.write().expect("tree");
        let out = tempfile::tempdir().expect("out");
        let t = std::time::Instant::now();
        let n = materialise(d.path(), tree, &Which::All, &out.path().join("all")).expect("all");
        let whole = t.elapsed();
        assert_eq!(n, 50_000);
        let paths: Vec<String> = (0..10).map(|i| format!("d{i:03}/f001.txt")).collect();
        let t = std::time::Instant::now();
        let n = materialise(
            d.path(),
            tree,
            &Which::Paths(paths),
            &out.path().join("some"),
        )
        .expect("some");
        let some = t.elapsed();
        assert_eq!(n, 10);
        let t = std::time::Instant::now();
        remove(&out.path().join("all")).expect("remove");
        let removal = t.elapsed();
        eprintln!(
            "50 000 files: whole tree {whole:?}, 10 changed files {some:?}, removal {removal:?}"
        );
    }
}
