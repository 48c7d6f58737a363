/*!
The reset of a pooled worktree in O(what changed): compare the worktree's stat data with what
was recorded when it was last a fresh checkout ([`super::record`]), and rewrite only what
differs — plus what differs between the recorded commit and the next start commit (a tree diff
that never opens folders whose ids are equal).

Why nothing the last agent did can be missed. The recording was taken before any process of
the task ran, and then fanout waited until the file system's clock had passed every recorded
change time ([`super::tick`]). After that, on Linux:

- changing a file's content (write, truncate, a write through a shared mapping, fallocate), its
  mode, owner, link count (a hard link made anywhere, inside or outside) or extended attributes
  (ACLs included) sets its change time (ctime) to the current time; renaming it does too;
- creating, removing or renaming a name in a folder sets that folder's modification and change
  times; replacing an entry puts another inode (another `ino`) under the name;
- no unprivileged process can set a ctime: `utimensat` sets access and modification times
  only (and itself sets the ctime to now), and moving the clock back needs `CAP_SYS_TIME`. As
  root, fanout runs agents under a dedicated uid without capabilities; unprivileged, fanout
  and the agent are the same user, who has none either.

So an entry whose inode, mode, owner, link count, size and both times equal the recording is
the inode fanout recorded, unchanged — its content, mode, owner, single link and lack of
attributes are what they were, which was a fresh checkout's. A folder whose stat data is
unchanged holds exactly the names it held (only its entries' inodes need looking at); any
other folder is listed and everything not in the commit is removed. Everything is opened
through descriptors of folders opened beneath the worktree without following a link (`openat`
with `O_NOFOLLOW`, `fstatat`/`unlinkat` on names of such folders, new entries with `O_EXCL`),
so nothing planted (a link to outside, a FIFO) is ever followed or opened; no process of any
task runs in the worktree meanwhile. The root folder is always listed and checked (its rename
into and out of the pool changes its times), and its `.git` file is always written anew.

When in doubt the caller falls back to the full reset ([`Doubt`]): the `.git` entry was
touched, a folder carries an extended attribute or a foreign owner, the next commit brings
attributes, submodules or a path git refuses, or anything fails.
*/

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use git2::{Oid, Repository};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::check::Fresh;
use super::record::{join, list, open_dir, show, split, DirNode, Entry, Node, Rec, Recorded};
use crate::git::scan;

/// Why the fast reset was not used (the full reset runs instead).
#[derive(Debug)]
pub struct Doubt(pub String);

impl<E: std::fmt::Display> From<(&[u8], E)> for Doubt {
    fn from((path, e): (&[u8], E)) -> Doubt {
        Doubt(format!("{}: {e}", show(path)))
    }
}

/// What one fast reset did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Entries whose stat data matched the recording (kept as they are).
    pub kept: usize,
    /// Files and links written anew.
    pub written: usize,
    /// Names removed (a folder counts once).
    pub removed: usize,
    /// Folders listed (their stat data had changed, or they are new).
    pub listed: usize,
}

/// Deeper trees than this are not removed here (the full reset does it).
const MAX_DEPTH: usize = 256;

/// Where and how: the worktree, the repository its blobs come from, a fresh checkout's owner
/// and modes, and whether fanout (root) gives entries to that owner.
pub struct Job<'a> {
    pub wt: &'a Path,
    pub repo: &'a Repository,
    pub fresh: Fresh,
    pub chown: bool,
    /// The `.git` file's exact content.
    pub git_file: &'a [u8],
}

/// Brings the worktree recorded in `recorded` to `start`; the recording of the result.
pub fn reset(
    job: &Job<'_>,
    mut recorded: Recorded,
    start: Oid,
) -> Result<(Recorded, Counts), Doubt> {
    if recorded.commit != start {
        apply_diff(job.repo, &mut recorded, start)?;
    }
    let root = scan::open_root(job.wt).map_err(|e| Doubt(e.to_string()))?;
    let git =
        fstatat(&root, ".git", AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| (&b".git"[..], e))?;
    if Rec::of(&git) != recorded.git_file {
        return Err(Doubt(".git was touched".into()));
    }
    let mut counts = Counts::default();
    let mut node = std::mem::take(&mut recorded.root);
    node.rec = None;
    sync_dir(job, &root, b"", &mut node, &mut counts)?;
    recorded.git_file = write_git_file(job, &root)?;
    // What was written or given to the new owner just now carries new change times: the clock
    // must pass those too before the task runs.
    recorded.newest = newest(&node).max(recorded.git_file.ctime);
    node.rec = None;
    recorded.root = node;
    recorded.commit = start;
    Ok((recorded, counts))
}

/// The latest change time recorded beneath `d` (`d` included).
fn newest(d: &DirNode) -> (i64, i64) {
    let mut out = d.rec.map_or((0, 0), |r| r.ctime);
    for n in d.children.values() {
        let t = match n {
            Node::Entry(e) => e.rec.map_or((0, 0), |r| r.ctime),
            Node::Dir(sub) => newest(sub),
        };
        out = out.max(t);
    }
    out
}

/// Marks what differs between the recorded commit and `start` as to be written or removed.
fn apply_diff(repo: &Repository, recorded: &mut Recorded, start: Oid) -> Result<(), Doubt> {
    let tree = |c: Oid| repo.find_commit(c).and_then(|c| c.tree());
    let doubt = |e: git2::Error| Doubt(format!("cannot compare the commits: {e}"));
    let (old, new) = (
        tree(recorded.commit).map_err(doubt)?,
        tree(start).map_err(doubt)?,
    );
    let changes = crate::git::tree_diff::changed_paths(repo, &old, &new).map_err(doubt)?;
    if crate::git::checkout::converts_content(repo) {
        return Err(Doubt(
            "the repository's configuration converts content".into(),
        ));
    }
    for c in &changes {
        let name = split(&c.path).1;
        let refused = c
            .path
            .split(|b| *b == b'/')
            .any(|p| p.is_empty() || p == b"." || p == b".." || p.eq_ignore_ascii_case(b".git"));
        if refused || name == b".gitattributes" || c.new.is_some_and(|(_, m)| m == 0o160000) {
            return Err(Doubt(format!("{}: not pooled", show(&c.path))));
        }
    }
    // Removals first, so a file that becomes a folder (or back) finds its place free.
    for c in changes.iter().filter(|c| c.old.is_some()) {
        let (dir, name) = split(&c.path);
        let d = recorded
            .root
            .dir_mut(dir)
            .ok_or_else(|| Doubt(format!("{}: not recorded", show(&c.path))))?;
        d.children.remove(name);
        d.gone.push(name.to_vec());
    }
    prune(&mut recorded.root);
    for c in &changes {
        let Some((id, mode)) = c.new else { continue };
        let (dir, name) = split(&c.path);
        let d = recorded
            .root
            .dir_mut(dir)
            .ok_or_else(|| Doubt(format!("{}: a file under a file", show(&c.path))))?;
        let entry = Entry {
            rec: None,
            id,
            mode: mode as u32,
        };
        d.children.insert(name.to_vec(), Node::Entry(entry));
    }
    Ok(())
}

/// Removes folders left empty by the diff's removals (git has no empty folders).
fn prune(d: &mut DirNode) {
    let mut emptied = Vec::new();
    for (name, n) in d.children.iter_mut() {
        if let Node::Dir(sub) = n {
            prune(sub);
            if sub.children.is_empty() {
                emptied.push(name.clone());
            }
        }
    }
    for name in emptied {
        d.children.remove(&name);
        d.gone.push(name);
    }
}

/// Brings the folder `fd` (at `path`) to what `node` says, and records it.
fn sync_dir(
    job: &Job<'_>,
    fd: &OwnedFd,
    path: &[u8],
    node: &mut DirNode,
    counts: &mut Counts,
) -> Result<(), Doubt> {
    let st = fstat(fd).map_err(|e| (path, e))?;
    let unchanged = node.rec.is_some_and(|r| r == Rec::of(&st));
    if unchanged {
        for name in std::mem::take(&mut node.gone) {
            remove(fd, path, &name, counts)?;
        }
        if job.chown {
            own(job, fd, &st, path)?;
        }
    } else {
        counts.listed += 1;
        node.gone.clear();
        own(job, fd, &st, path)?;
        no_xattrs(fd, path)?;
        if st.st_mode & 0o7777 != job.fresh.dir_mode() {
            fchmod(fd, Mode::from_bits_truncate(job.fresh.dir_mode())).map_err(|e| (path, e))?;
        }
        for name in list(fd, path).map_err(Doubt)? {
            let keep = node.children.contains_key(&name) || (path.is_empty() && name == b".git");
            if !keep {
                remove(fd, path, &name, counts)?;
            }
        }
    }
    for (name, child) in node.children.iter_mut() {
        let rel = join(path, name);
        let found = match fstatat(fd, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err((rel.as_slice(), e).into()),
        };
        match child {
            Node::Entry(e) => sync_entry(job, fd, &rel, name, e, found, counts)?,
            Node::Dir(d) => {
                let is_dir = found.as_ref().is_some_and(|s| {
                    SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                });
                if !is_dir {
                    if found.is_some() {
                        remove(fd, path, name, counts)?;
                    }
                    nix::sys::stat::mkdirat(
                        fd,
                        OsStr::from_bytes(name),
                        Mode::from_bits_truncate(0o777),
                    )
                    .map_err(|e| (rel.as_slice(), e))?;
                    d.rec = None;
                }
                let sub = open_dir(fd, name).map_err(|e| (rel.as_slice(), e))?;
                sync_dir(job, &sub, &rel, d, counts)?;
            }
        }
    }
    node.rec = Some(Rec::of(&fstat(fd).map_err(|e| (path, e))?));
    Ok(())
}

/// One file or link: kept when its stat data is the recorded one, else written anew.
fn sync_entry(
    job: &Job<'_>,
    dir: &OwnedFd,
    rel: &[u8],
    name: &[u8],
    e: &mut Entry,
    found: Option<FileStat>,
    counts: &mut Counts,
) -> Result<(), Doubt> {
    if let (Some(rec), Some(st)) = (e.rec, &found) {
        if rec == Rec::of(st) {
            counts.kept += 1;
            if job.chown && (st.st_uid, st.st_gid) != (job.fresh.uid, job.fresh.gid) {
                chown_at(job, dir, name).map_err(|e| (rel, e))?;
                e.rec = Some(stat_at(dir, name).map_err(|e| (rel, e))?);
            }
            return Ok(());
        }
    }
    if found.is_some() {
        let (parent, _) = split(rel);
        remove(dir, parent, name, counts)?;
    }
    write_entry(job, dir, rel, name, e)?;
    counts.written += 1;
    Ok(())
}

/// Writes the blob of `e` as `name` in `dir` (a new inode), with a fresh checkout's owner and
/// mode; records it.
fn write_entry(
    job: &Job<'_>,
    dir: &OwnedFd,
    rel: &[u8],
    name: &[u8],
    e: &mut Entry,
) -> Result<(), Doubt> {
    let blob = job.repo.find_blob(e.id).map_err(|err| (rel, err))?;
    let os = OsStr::from_bytes(name);
    if e.mode == 0o120000 {
        nix::unistd::symlinkat(OsStr::from_bytes(blob.content()), dir, os)
            .map_err(|err| (rel, err))?;
        if job.chown {
            chown_at(job, dir, name).map_err(|err| (rel, err))?;
        }
    } else {
        let perm = if e.mode == 0o100755 { 0o755 } else { 0o644 };
        let fd = nix::fcntl::openat(
            dir,
            os,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(perm),
        )
        .map_err(|err| (rel, err))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(blob.content()).map_err(|err| (rel, err))?;
        if job.chown {
            fchown(
                &f,
                Some(Uid::from_raw(job.fresh.uid)),
                Some(Gid::from_raw(job.fresh.gid)),
            )
            .map_err(|err| (rel, err))?;
        }
    }
    e.rec = Some(stat_at(dir, name).map_err(|err| (rel, err))?);
    Ok(())
}

/// The root's `.git` file written anew with the next task's admin folder.
fn write_git_file(job: &Job<'_>, root: &OwnedFd) -> Result<Rec, Doubt> {
    let mut counts = Counts::default();
    remove(root, b"", b".git", &mut counts)?;
    let fd = nix::fcntl::openat(
        root,
        ".git",
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )
    .map_err(|e| (&b".git"[..], e))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(job.git_file).map_err(|e| (&b".git"[..], e))?;
    if job.chown {
        fchown(
            &f,
            Some(Uid::from_raw(job.fresh.uid)),
            Some(Gid::from_raw(job.fresh.gid)),
        )
        .map_err(|e| (&b".git"[..], e))?;
    }
    Ok(Rec::of(&fstat(&f).map_err(|e| (&b".git"[..], e))?))
}

fn stat_at(dir: &OwnedFd, name: &[u8]) -> nix::Result<Rec> {
    fstatat(dir, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW).map(|s| Rec::of(&s))
}

fn chown_at(job: &Job<'_>, dir: &OwnedFd, name: &[u8]) -> nix::Result<()> {
    fchownat(
        dir,
        OsStr::from_bytes(name),
        Some(Uid::from_raw(job.fresh.uid)),
        Some(Gid::from_raw(job.fresh.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// A folder gets a fresh checkout's owner: given (fanout is root) or a doubt.
fn own(job: &Job<'_>, fd: &OwnedFd, st: &FileStat, path: &[u8]) -> Result<(), Doubt> {
    if (st.st_uid, st.st_gid) == (job.fresh.uid, job.fresh.gid) {
        return Ok(());
    }
    if !job.chown {
        return Err(Doubt(format!(
            "{}: owned by {}:{}",
            show(path),
            st.st_uid,
            st.st_gid
        )));
    }
    fchown(
        fd,
        Some(Uid::from_raw(job.fresh.uid)),
        Some(Gid::from_raw(job.fresh.gid)),
    )
    .map_err(|e| (path, e).into())
}

/// A listed folder carries no extended attribute but those the system sets.
fn no_xattrs(fd: &OwnedFd, path: &[u8]) -> Result<(), Doubt> {
    let names = super::check::xattr_names(fd).map_err(|e| (path, e))?;
    match names
        .iter()
        .find(|n| !n.starts_with(b"security.") || n.as_slice() == b"security.capability")
    {
        Some(n) => Err(Doubt(format!(
            "{}: extended attribute {}",
            show(path),
            String::from_utf8_lossy(n)
        ))),
        None => Ok(()),
    }
}

/// Removes `name` from the folder `dir` (at `path`), whatever it is; a folder with everything
/// in it. Nothing is followed or opened but folders (never a FIFO or device).
fn remove(dir: &OwnedFd, path: &[u8], name: &[u8], counts: &mut Counts) -> Result<(), Doubt> {
    let rel = join(path, name);
    match remove_at(dir, name, 0) {
        Ok(()) => {
            counts.removed += 1;
            Ok(())
        }
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err((rel.as_slice(), e).into()),
    }
}

fn remove_at(dir: &OwnedFd, name: &[u8], depth: usize) -> nix::Result<()> {
    let os = OsStr::from_bytes(name);
    let st = fstatat(dir, os, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return unlinkat(dir, os, UnlinkatFlags::NoRemoveDir);
    }
    if depth > MAX_DEPTH {
        return Err(Errno::ELOOP);
    }
    let sub = open_for_removal(dir, name, &st)?;
    for child in list(&sub, name).map_err(|_| Errno::EIO)? {
        remove_at(&sub, &child, depth + 1)?;
    }
    unlinkat(dir, os, UnlinkatFlags::RemoveDir)
}

/// A folder opened to empty it: its owner's rights given back first when it took them away
/// (through an `O_PATH` descriptor of that very folder, never a path).
fn open_for_removal(dir: &OwnedFd, name: &[u8], st: &FileStat) -> nix::Result<OwnedFd> {
    if st.st_mode & 0o700 != 0o700 && !nix::unistd::geteuid().is_root() {
        let p = nix::fcntl::openat(
            dir,
            OsStr::from_bytes(name),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&p));
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            proc.as_str(),
            Mode::from_bits_truncate((st.st_mode & 0o7777) | 0o700),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
    }
    open_dir(dir, name)
}

#[cfg(test)]
mod tests {
    use super::super::record;
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    /// A repository with two commits (the second edits, adds, removes, turns a file into a
    /// folder) and a fresh checkout of the first in `wt`, recorded.
    struct Fixture {
        _dir: tempfile::TempDir,
        repo: Repository,
        wt: PathBuf,
        first: Oid,
        second: Oid,
        git_file: Vec<u8>,
    }

    fn commit(repo: &Repository, files: &[(&str, &[u8], git2::FileMode)]) -> Oid {
        let empty = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let mut u = git2::build::TreeUpdateBuilder::new();
        for (p, c, m) in files {
            u.upsert(*p, repo.blob(c).unwrap(), *m);
        }
        let tree = repo
            .find_tree(u.create_updated(repo, &empty).unwrap())
            .unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap()
    }

    fn fixture() -> Fixture {
        use git2::FileMode::{Blob, BlobExecutable, Link};
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path().join("r")).unwrap();
        let first = commit(
            &repo,
            &[
                ("a.txt", b"a\n", Blob),
                ("b.txt", b"b\n", Blob),
                ("d/e/x.sh", b"#!/bin/sh\n", BlobExecutable),
                ("d/f.txt", b"f\n", Blob),
                ("g/h.txt", b"h\n", Blob),
                ("turn", b"a file\n", Blob),
                ("link", b"a.txt", Link),
            ],
        );
        let second = commit(
            &repo,
            &[
                ("a.txt", b"a, edited\n", Blob),
                ("b.txt", b"b\n", Blob),
                ("d/e/x.sh", b"#!/bin/sh\n", Blob),
                ("d/f.txt", b"f\n", Blob),
                ("new/deep/n.txt", b"n\n", Blob),
                ("turn/inner.txt", b"now a folder\n", Blob),
                ("link", b"b.txt", Link),
            ],
        );
        let wt = dir.path().join("worktrees/wt");
        std::fs::create_dir_all(&wt).unwrap();
        let git_file = super::super::check::git_file_content(&dir.path().join("admin"));
        checkout(&repo, first, &wt, &git_file);
        Fixture {
            _dir: dir,
            repo,
            wt,
            first,
            second,
            git_file,
        }
    }

    fn checkout(repo: &Repository, c: Oid, wt: &Path, git_file: &[u8]) {
        let index = wt.parent().unwrap().join(format!("{}.index", c));
        assert!(crate::git::checkout::checkout_plain(repo, c, wt, &index).unwrap());
        std::fs::write(wt.join(".git"), git_file).unwrap();
    }

    fn recorded(f: &Fixture, c: Oid) -> Recorded {
        let listing = crate::git::checkout::plain_listing(&f.repo, c)
            .unwrap()
            .unwrap();
        let r = record::record(&f.wt, c, &listing).unwrap();
        super::super::tick::wait_past(f.wt.parent().unwrap(), r.newest).unwrap();
        r
    }

    fn job<'a>(f: &'a Fixture) -> Job<'a> {
        Job {
            wt: &f.wt,
            repo: &f.repo,
            fresh: Fresh::for_parent(f.wt.parent().unwrap(), None),
            chown: false,
            git_file: &f.git_file,
        }
    }

    /// Every entry beneath `root` with its kind, permission bits, link count, link target and
    /// content: what tells two worktrees apart.
    fn listing(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let what = if m.file_type().is_symlink() {
                    format!("link {}", std::fs::read_link(&p).unwrap().display())
                } else if m.is_dir() {
                    stack.push(p.clone());
                    "dir".to_string()
                } else if m.is_file() {
                    format!("file {:?}", std::fs::read(&p).unwrap())
                } else {
                    "special".to_string()
                };
                let perm = if m.file_type().is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                };
                out.push(format!("{rel} {what} mode {perm:o} links {}", m.nlink()));
            }
        }
        out.sort();
        out
    }

    /// `wt` reset from `from` to `to` after `spoil`, against a fresh checkout of `to`; the
    /// worktree's recording after the reset must allow another fast reset that keeps all.
    fn reset_equals_fresh(from_second: bool, spoil: &dyn Fn(&Path)) -> Counts {
        let f = fixture();
        let (from, to) = if from_second {
            (f.second, f.first)
        } else {
            (f.first, f.second)
        };
        if from_second {
            std::fs::remove_dir_all(&f.wt).unwrap();
            std::fs::create_dir(&f.wt).unwrap();
            checkout(&f.repo, from, &f.wt, &f.git_file);
        }
        let rec = recorded(&f, from);
        spoil(&f.wt);
        let (rec, counts) = reset(&job(&f), rec, to).unwrap();
        // git's own checkout of the same commit, its `.git` file aside.
        let fresh = f.wt.parent().unwrap().join("fresh");
        let git = std::process::Command::new("git")
            .arg("-C")
            .arg(f.repo.path())
            .args(["worktree", "add", "--quiet", "--detach"])
            .arg(&fresh)
            .arg(to.to_string())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(git.success());
        std::fs::write(fresh.join(".git"), &f.git_file).unwrap();
        assert_eq!(listing(&f.wt), listing(&fresh));
        // The new recording is right: a reset with nothing changed keeps everything.
        super::super::tick::wait_past(f.wt.parent().unwrap(), rec.newest).unwrap();
        let (_, again) = reset(&job(&f), rec, to).unwrap();
        assert_eq!(again.written + again.removed, 0, "{again:?}");
        counts
    }

    #[test]
    fn nothing_changed_keeps_everything_and_lists_only_the_root() {
        let c = reset_equals_fresh(false, &|_| {});
        // The diff's paths are written (a.txt, x.sh's mode, link, two new files), the rest kept.
        assert_eq!(c.written, 5, "{c:?}");
        let f = fixture();
        let rec = recorded(&f, f.first);
        let (_, c) = reset(&job(&f), rec, f.first).unwrap();
        assert_eq!(
            c,
            Counts {
                kept: 7,
                written: 0,
                removed: 0,
                listed: 1
            }
        );
    }

    fn set_mtime(p: &Path, t: std::time::SystemTime) {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn hostile_changes_are_all_undone() {
        type Spoil = (&'static str, fn(&Path));
        let spoils: [Spoil; 12] = [
            ("content changed, mtime set back", |wt| {
                let p = wt.join("d/f.txt");
                let before = std::fs::metadata(&p).unwrap().modified().unwrap();
                std::fs::write(&p, "F\n").unwrap();
                set_mtime(&p, before);
            }),
            ("renamed within a folder", |wt| {
                std::fs::rename(wt.join("a.txt"), wt.join("a2.txt")).unwrap();
            }),
            ("two files swapped", |wt| {
                std::fs::rename(wt.join("a.txt"), wt.join("tmp")).unwrap();
                std::fs::rename(wt.join("b.txt"), wt.join("a.txt")).unwrap();
                std::fs::rename(wt.join("tmp"), wt.join("b.txt")).unwrap();
            }),
            ("a file swapped for a link", |wt| {
                std::fs::remove_file(wt.join("d/f.txt")).unwrap();
                std::os::unix::fs::symlink("/etc/passwd", wt.join("d/f.txt")).unwrap();
            }),
            ("ignored and untracked files, an empty folder", |wt| {
                std::fs::write(wt.join("d/e/ignored.o"), "x").unwrap();
                std::fs::create_dir_all(wt.join("d/empty/deeper")).unwrap();
                std::fs::write(wt.join(".gitattributes"), "* eol=crlf\n").unwrap();
            }),
            ("modes", |wt| {
                let set = |p: &str, m| {
                    std::fs::set_permissions(wt.join(p), std::fs::Permissions::from_mode(m))
                        .unwrap()
                };
                set("b.txt", 0o4755);
                set("d/e", 0o1777);
                set("d/e/x.sh", 0o644);
            }),
            ("a hard link to a file outside", |wt| {
                let outside = wt.parent().unwrap().join("outside");
                std::fs::write(&outside, "outside\n").unwrap();
                std::fs::remove_file(wt.join("b.txt")).unwrap();
                std::fs::hard_link(&outside, wt.join("b.txt")).unwrap();
            }),
            ("a hard link from outside", |wt| {
                std::fs::hard_link(wt.join("d/f.txt"), wt.parent().unwrap().join("cache")).unwrap();
            }),
            ("a folder deleted", |wt| {
                std::fs::remove_dir_all(wt.join("d")).unwrap();
            }),
            ("a folder made unreadable with things in it", |wt| {
                std::fs::create_dir(wt.join("d/locked")).unwrap();
                std::fs::write(wt.join("d/locked/f"), "x").unwrap();
                std::fs::set_permissions(
                    wt.join("d/locked"),
                    std::fs::Permissions::from_mode(0o000),
                )
                .unwrap();
            }),
            ("a FIFO and a folder swapped for a link", |wt| {
                nix::unistd::mkfifo(&wt.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
                std::fs::remove_dir_all(wt.join("d")).unwrap();
                std::os::unix::fs::symlink("/tmp", wt.join("d")).unwrap();
            }),
            ("a file turned into a folder", |wt| {
                std::fs::remove_file(wt.join("a.txt")).unwrap();
                std::fs::create_dir(wt.join("a.txt")).unwrap();
                std::fs::write(wt.join("a.txt/x"), "x").unwrap();
            }),
        ];
        for (what, spoil) in spoils {
            for from_second in [false, true] {
                eprintln!(
                    "{what} (from the {} commit)",
                    if from_second { "second" } else { "first" }
                );
                reset_equals_fresh(from_second, &spoil);
            }
        }
        // Nothing outside was touched.
    }

    #[test]
    #[allow(unsafe_code)]
    fn a_touched_git_file_or_a_folder_xattr_is_a_doubt() {
        let f = fixture();
        let rec = recorded(&f, f.first);
        std::fs::write(f.wt.join(".git"), "gitdir: /elsewhere\n").unwrap();
        let err = reset(&job(&f), rec, f.first).unwrap_err();
        assert!(err.0.contains(".git"), "{err:?}");
        let f = fixture();
        let rec = recorded(&f, f.first);
        let path =
            std::ffi::CString::new(f.wt.join("d").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings and a 1-byte value.
        let r = unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"user.planted".as_ptr(),
                b"x".as_ptr().cast(),
                1,
                0,
            )
        };
        if r != 0 {
            eprintln!("no user xattrs here");
            return;
        }
        let err = reset(&job(&f), rec, f.first).unwrap_err();
        assert!(err.0.contains("user.planted"), "{err:?}");
    }

    /// Timing, not run by default: `FILES=50000 cargo test --lib pool::fast::tests::timing --
    /// --ignored --nocapture` prints the fast reset's time for a tree of FILES files (1 000
    /// to a folder) with nothing changed and with one file changed, and the index's write.
    #[test]
    #[ignore]
    fn timing() {
        let n: usize = std::env::var("FILES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path().join("r")).unwrap();
        let mut u = git2::build::TreeUpdateBuilder::new();
        for i in 0..n {
            let body = format!("export const v{i} = fetchUser({i});\n");
            let id = repo.blob(body.as_bytes()).unwrap();
            u.upsert(
                format!("src/d{}/f{i}.js", i / 1000),
                id,
                git2::FileMode::Blob,
            );
        }
        let empty = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let tree = repo
            .find_tree(u.create_updated(&repo, &empty).unwrap())
            .unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let c = repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap();
        let wt = dir.path().join("worktrees/wt");
        std::fs::create_dir_all(&wt).unwrap();
        let git_file = b"gitdir: /nowhere\n".to_vec();
        checkout(&repo, c, &wt, &git_file);
        let listing = crate::git::checkout::plain_listing(&repo, c)
            .unwrap()
            .unwrap();
        let t = std::time::Instant::now();
        let mut rec = record::record(&wt, c, &listing).unwrap();
        eprintln!("{n} files: record {} ms", t.elapsed().as_millis());
        let job = Job {
            wt: &wt,
            repo: &repo,
            fresh: Fresh::for_parent(wt.parent().unwrap(), None),
            chown: false,
            git_file: &git_file,
        };
        for changed in [false, true] {
            super::super::tick::wait_past(wt.parent().unwrap(), rec.newest).unwrap();
            if changed {
                std::fs::write(wt.join("src/d0/f1.js"), "changed\n").unwrap();
            }
            let t = std::time::Instant::now();
            let (r, counts) = reset(&job, rec, c).unwrap();
            let reset_ms = t.elapsed().as_millis();
            let t = std::time::Instant::now();
            r.write_index(&dir.path().join("index")).unwrap();
            eprintln!(
                "{n} files, {} changed: fast reset {reset_ms} ms ({counts:?}), index {} ms",
                usize::from(changed),
                t.elapsed().as_millis()
            );
            rec = r;
        }
    }

    #[test]
    fn the_new_recording_is_as_new_as_what_was_written() {
        let f = fixture();
        let rec = recorded(&f, f.first);
        let (rec, _) = reset(&job(&f), rec, f.second).unwrap();
        let m = std::fs::symlink_metadata(f.wt.join("new/deep/n.txt")).unwrap();
        assert!(rec.newest >= (m.ctime(), m.ctime_nsec()));
        let m = std::fs::symlink_metadata(f.wt.join(".git")).unwrap();
        assert!(rec.newest >= (m.ctime(), m.ctime_nsec()));
    }

    #[test]
    fn an_outside_file_linked_in_is_left_as_it_was() {
        let f = fixture();
        let rec = recorded(&f, f.first);
        let outside = f.wt.parent().unwrap().join("outside");
        std::fs::write(&outside, "outside\n").unwrap();
        std::fs::remove_file(f.wt.join("b.txt")).unwrap();
        std::fs::hard_link(&outside, f.wt.join("b.txt")).unwrap();
        std::fs::hard_link(f.wt.join("a.txt"), f.wt.parent().unwrap().join("cache")).unwrap();
        reset(&job(&f), rec, f.first).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"outside\n");
        assert_eq!(std::fs::metadata(&outside).unwrap().nlink(), 1);
        assert_eq!(std::fs::metadata(f.wt.join("a.txt")).unwrap().nlink(), 1);
        assert_eq!(std::fs::metadata(f.wt.join("b.txt")).unwrap().nlink(), 1);
    }
}
