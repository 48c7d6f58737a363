/*!
What a pooled worktree looked like when it was last known to be a fresh checkout: for every
entry of its commit (and its `.git` file) the stat data that any change to it would alter —
inode, mode, owner, link count, size, modification and change times. Taken by fanout right
after a checkout or a reset, before any process of the task runs, then kept by the pool (in
fanout's memory, nowhere a task can write) with the parked worktree, so the next reset knows
what changed by comparing stat data (see [`super::fast`] for why that cannot miss a change).
*/

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use git2::Oid;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, SFlag};

use crate::git::checkout::Listing;
use crate::git::scan;

/// The stat data of one entry that any change to it (content, mode, owner, links, attributes,
/// replacement by another inode) alters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: i64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Rec {
    pub fn of(st: &FileStat) -> Rec {
        Rec {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    pub fn kind(&self) -> SFlag {
        SFlag::from_bits_truncate(self.mode) & SFlag::S_IFMT
    }
}

/// A file or link of the commit: its blob, git mode and (once on disk) stat data. `rec: None`:
/// not known to be on disk as it should (to be written).
#[derive(Clone, Debug)]
pub struct Entry {
    pub rec: Option<Rec>,
    pub id: Oid,
    pub mode: u32,
}

/// A folder of the commit. `rec: None`: its names are not known (to be listed). `gone`: names
/// the recorded folder held that the next commit has not (to be removed).
#[derive(Clone, Debug, Default)]
pub struct DirNode {
    pub rec: Option<Rec>,
    pub gone: Vec<Vec<u8>>,
    pub children: BTreeMap<Vec<u8>, Node>,
}

#[derive(Clone, Debug)]
pub enum Node {
    Entry(Entry),
    Dir(DirNode),
}

/// A worktree as a fresh checkout of `commit` left it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub commit: Oid,
    pub root: DirNode,
    /// The `.git` file's stat data.
    pub git_file: Rec,
    /// The latest change time among the entries (the clock must pass it before a task runs).
    pub newest: (i64, i64),
}

impl DirNode {
    /// The node at `path` (slash-separated, relative), creating folders on the way; `None` when
    /// a component is a file.
    pub fn dir_mut(&mut self, path: &[u8]) -> Option<&mut DirNode> {
        let mut d = self;
        for c in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            let n = d
                .children
                .entry(c.to_vec())
                .or_insert_with(|| Node::Dir(DirNode::default()));
            d = match n {
                Node::Dir(sub) => sub,
                Node::Entry(_) => return None,
            };
        }
        Some(d)
    }

    /// Every entry beneath, with its full path (folders not included).
    pub fn entries(&self, prefix: &[u8], out: &mut Vec<(Vec<u8>, Entry)>) {
        for (name, n) in &self.children {
            let path = join(prefix, name);
            match n {
                Node::Entry(e) => out.push((path, e.clone())),
                Node::Dir(d) => d.entries(&path, out),
            }
        }
    }
}

/// The tree of `listing` with no stat data yet.
pub fn tree_of(listing: &Listing) -> Result<DirNode, String> {
    let mut root = DirNode::default();
    for d in &listing.dirs {
        root.dir_mut(d)
            .ok_or_else(|| format!("{}: a folder under a file", show(d)))?;
    }
    for i in &listing.items {
        let (dir, name) = split(&i.path);
        let node = Node::Entry(Entry {
            rec: None,
            id: i.id,
            mode: i.mode,
        });
        root.dir_mut(dir)
            .ok_or_else(|| format!("{}: a file under a file", show(&i.path)))?
            .children
            .insert(name.to_vec(), node);
    }
    Ok(root)
}

/// Records the worktree at `wt`, which must be exactly a fresh checkout of `commit` (`listing`)
/// plus its `.git` file: every folder holds exactly the commit's names, every entry has the
/// commit's kind and one link. Called only when fanout knows the content is right (it wrote
/// it, or checked it); `Err` when the names or kinds say otherwise.
pub fn record(wt: &Path, commit: Oid, listing: &Listing) -> Result<Recorded, String> {
    let root_fd = scan::open_root(wt).map_err(|e| e.to_string())?;
    let mut root = tree_of(listing)?;
    let mut newest = (0, 0);
    record_dir(&root_fd, b"", &mut root, &mut newest)?;
    root.rec = None; // the root is always looked at: its rename into and out of the pool
    let st = fstatat(&root_fd, ".git", AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| format!(".git: {e}"))?;
    let git_file = Rec::of(&st);
    if git_file.kind() != SFlag::S_IFREG || git_file.nlink != 1 {
        return Err(".git is not a plain file".into());
    }
    newest = newest.max(git_file.ctime);
    Ok(Recorded {
        commit,
        root,
        git_file,
        newest,
    })
}

fn record_dir(
    fd: &OwnedFd,
    path: &[u8],
    node: &mut DirNode,
    newest: &mut (i64, i64),
) -> Result<(), String> {
    let st = fstat(fd).map_err(|e| format!("{}: {e}", show(path)))?;
    node.rec = Some(Rec::of(&st));
    *newest = (*newest).max(node.rec.map_or((0, 0), |r| r.ctime));
    let names = list(fd, path)?;
    let known = |n: &Vec<u8>| node.children.contains_key(n) || (path.is_empty() && n == b".git");
    let extra = names.iter().find(|n| !known(n));
    if let Some(n) = extra {
        return Err(format!("{}: not in the commit", show(&join(path, n))));
    }
    for (name, child) in node.children.iter_mut() {
        let rel = join(path, name);
        let st = fstatat(fd, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| format!("{}: {e}", show(&rel)))?;
        let rec = Rec::of(&st);
        *newest = (*newest).max(rec.ctime);
        match child {
            Node::Dir(d) => {
                if rec.kind() != SFlag::S_IFDIR {
                    return Err(format!("{}: not a folder", show(&rel)));
                }
                let sub = open_dir(fd, name).map_err(|e| format!("{}: {e}", show(&rel)))?;
                record_dir(&sub, &rel, d, newest)?;
            }
            Node::Entry(e) => {
                let want = if e.mode == 0o120000 {
                    SFlag::S_IFLNK
                } else {
                    SFlag::S_IFREG
                };
                if rec.kind() != want || rec.nlink != 1 {
                    return Err(format!("{}: not as the commit has it", show(&rel)));
                }
                e.rec = Some(rec);
            }
        }
    }
    Ok(())
}

/// Opens the folder `name` of `dir`, never following a link.
pub fn open_dir(dir: &impl AsFd, name: &[u8]) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        OsStr::from_bytes(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// The names in the folder `fd` (`.` and `..` left out).
pub fn list(fd: &OwnedFd, path: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let dup = fd.try_clone().map_err(|e| format!("{}: {e}", show(path)))?;
    let mut dir = nix::dir::Dir::from_fd(dup).map_err(|e| format!("{}: {e}", show(path)))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| format!("{}: {e}", show(path)))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// A path's folder and name.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}

pub fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        return "the worktree's root".into();
    }
    String::from_utf8_lossy(rel).into_owned()
}

impl Recorded {
    /// Writes the index of this worktree to `path`: the commit's entries with their recorded
    /// stat data, as a fresh checkout's index has them (`git status` trusts it).
    pub fn write_index(&self, path: &Path) -> Result<(), String> {
        let mut entries = Vec::new();
        self.root.entries(b"", &mut entries);
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let new = path.with_extension("fanout-new");
        let _ = std::fs::remove_file(&new);
        let fail = |e: git2::Error| format!("cannot write the index: {e}");
        let mut index = git2::Index::open(&new).map_err(fail)?;
        for (p, e) in entries {
            let Some(r) = e.rec else {
                return Err(format!("{}: not recorded", show(&p)));
            };
            let time = |(s, ns): (i64, i64)| git2::IndexTime::new(s as i32, ns as u32);
            index
                .add(&git2::IndexEntry {
                    ctime: time(r.ctime),
                    mtime: time(r.mtime),
                    dev: r.dev as u32,
                    ino: r.ino as u32,
                    mode: e.mode,
                    uid: r.uid,
                    gid: r.gid,
                    file_size: r.size as u32,
                    id: e.id,
                    flags: 0,
                    flags_extended: 0,
                    path: p,
                })
                .map_err(fail)?;
        }
        index.write().map_err(fail)?;
        std::fs::rename(&new, path).map_err(|e| format!("cannot install the index: {e}"))
    }
}
