/*!
Walking a workspace after its agent ran. Everything in it is hostile data: every open goes
through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the workspace root, so nothing the
agent planted (a symlink to outside, a folder swapped for a link between two calls) makes fanout
read or change anything outside it. The `.git` entry at the root is never looked at.

What fanout (running as the same user as the agent) cannot read is made readable by adding the
owner's read (and, for folders, search) bits through a descriptor that cannot point outside; what
still cannot be read is reported, never treated as absent.
*/

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

/// Stat data of one entry, as git's index keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ctime: (i64, i64),
    pub mtime: (i64, i64),
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Device number of a device node (an overlay whiteout is a character device 0:0).
    pub rdev: u64,
}

impl From<&FileStat> for Stat {
    fn from(s: &FileStat) -> Stat {
        Stat {
            ctime: (s.st_ctime, s.st_ctime_nsec),
            mtime: (s.st_mtime, s.st_mtime_nsec),
            dev: s.st_dev,
            ino: s.st_ino,
            mode: s.st_mode,
            uid: s.st_uid,
            gid: s.st_gid,
            size: s.st_size.max(0) as u64,
            rdev: s.st_rdev,
        }
    }
}

/// What kind of entry a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File {
        executable: bool,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A FIFO, socket or device node: git cannot store it.
    Special(&'static str),
}

/// One entry found beneath the workspace root.
#[derive(Clone, Debug)]
pub struct Found {
    /// Slash-separated path relative to the root, as git stores it.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub stat: Stat,
}

/// Everything a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files, symlinks and special files, in no particular order.
    pub entries: Vec<Found>,
    /// Folders that hold a `.git` entry of their own (nested repositories).
    pub nested_repos: Vec<Vec<u8>>,
    /// Folders and files fanout made readable (owner bits added).
    pub made_readable: Vec<Vec<u8>>,
    /// Paths that could not be read, with the reason.
    pub unreadable: Vec<(Vec<u8>, String)>,
    /// Folders walked (not the root), for callers that look at folder markers.
    pub dirs: Vec<Vec<u8>>,
}

/// Errors that stop a scan altogether.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot open the workspace {path}: {source}")]
    Root { path: String, source: Errno },
}

/// Opens `rel` beneath `root` without following any symlink and without leaving it.
pub fn open_beneath(root: &OwnedFd, rel: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    // openat2 refuses O_PATH combined with anything but these three.
    let extra = if flags.contains(OFlag::O_PATH) {
        OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW
    } else {
        OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY
    };
    let how = OpenHow::new()
        .flags(flags | extra)
        .mode(Mode::empty())
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    openat2(root, OsStr::from_bytes(rel), how)
}

/// Opens the workspace root itself (refusing a symlink).
pub fn open_root(root: &Path) -> Result<OwnedFd, ScanError> {
    nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| ScanError::Root {
        path: root.display().to_string(),
        source,
    })
}

/// Opens a regular file beneath `root` for reading; it must still be the entry `expected`
/// describes (same inode and size), so a swap after the scan is detected, not followed.
pub fn open_file(root: &OwnedFd, rel: &[u8], expected: &Stat) -> std::io::Result<File> {
    let fd = open_beneath(root, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let st = fstat(&fd)?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG || st.st_ino != expected.ino || st.st_size as u64 != expected.size {
        return Err(std::io::Error::other(
            "the file changed while fanout was reading it",
        ));
    }
    Ok(File::from(fd))
}

/// Adds `bits` to the mode of `rel` through a descriptor that cannot point outside the root.
fn add_mode_bits(root: &OwnedFd, rel: &[u8], bits: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fd = open_beneath(root, rel, OFlag::O_PATH)?;
    let st = fstat(&fd)?;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(
        proc_path,
        std::fs::Permissions::from_mode((st.st_mode & 0o7777) | bits),
    )
}

/// Walks the workspace at `root`. `descend(dir)` says whether to look into a folder (fanout
/// skips ignored folders that hold no tracked file); the root's `.git` is skipped.
pub fn scan(root: &Path, descend: &mut dyn FnMut(&[u8]) -> bool) -> Result<Scan, ScanError> {
    let root_fd = open_root(root)?;
    let euid_root = nix::unistd::geteuid().is_root();
    let mut out = Scan::default();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let mut handle = match open_dir(&root_fd, &dir) {
            Ok(d) => d,
            Err(Errno::EACCES) if !euid_root => {
                match add_mode_bits(&root_fd, &dir, 0o700).map_err(|e| e.to_string()) {
                    Ok(()) => {
                        out.made_readable.push(dir.clone());
                        match open_dir(&root_fd, &dir) {
                            Ok(d) => d,
                            Err(e) => {
                                out.unreadable.push((dir, e.desc().to_string()));
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        out.unreadable.push((dir, e));
                        continue;
                    }
                }
            }
            Err(e) => {
                out.unreadable.push((dir, e.desc().to_string()));
                continue;
            }
        };
        let mut children: Vec<Vec<u8>> = Vec::new();
        for entry in handle.iter() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    out.unreadable.push((dir.clone(), e.desc().to_string()));
                    break;
                }
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            children.push(name.to_vec());
        }
        drop(handle);
        if !dir.is_empty() && children.iter().any(|n| n == b".git") {
            out.nested_repos.push(dir);
            continue;
        }
        for name in children {
            if dir.is_empty() && name.as_slice() == b".git" {
                continue;
            }
            let rel = if dir.is_empty() {
                name
            } else {
                let mut p = dir.clone();
                p.push(b'/');
                p.extend_from_slice(&name);
                p
            };
            let st = match open_beneath(&root_fd, &rel, OFlag::O_PATH).and_then(|fd| fstat(&fd)) {
                Ok(st) => st,
                Err(e) => {
                    out.unreadable.push((rel, e.desc().to_string()));
                    continue;
                }
            };
            let stat = Stat::from(&st);
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            match kind {
                SFlag::S_IFDIR => {
                    if descend(&rel) {
                        out.dirs.push(rel.clone());
                        stack.push(rel);
                    }
                }
                SFlag::S_IFREG => {
                    if !euid_root && st.st_mode & 0o400 == 0 {
                        match add_mode_bits(&root_fd, &rel, 0o400) {
                            Ok(()) => out.made_readable.push(rel.clone()),
                            Err(e) => {
                                out.unreadable.push((rel, e.to_string()));
                                continue;
                            }
                        }
                    }
                    // The stat after a permission change has the new ctime.
                    let stat = match open_beneath(&root_fd, &rel, OFlag::O_PATH)
                        .and_then(|fd| fstat(&fd))
                    {
                        Ok(st) => Stat::from(&st),
                        Err(_) => stat,
                    };
                    out.entries.push(Found {
                        path: rel,
                        kind: Kind::File {
                            executable: st.st_mode & 0o100 != 0,
                        },
                        stat,
                    });
                }
                SFlag::S_IFLNK => {
                    let target = match read_link_beneath(&root_fd, &rel) {
                        Ok(t) => t,
                        Err(e) => {
                            out.unreadable.push((rel, e.to_string()));
                            continue;
                        }
                    };
                    out.entries.push(Found {
                        path: rel,
                        kind: Kind::Symlink { target },
                        stat,
                    });
                }
                other => {
                    let what = match other {
                        SFlag::S_IFIFO => "a FIFO",
                        SFlag::S_IFSOCK => "a socket",
                        SFlag::S_IFCHR => "a character device",
                        SFlag::S_IFBLK => "a block device",
                        _ => "an unknown kind of file",
                    };
                    out.entries.push(Found {
                        path: rel,
                        kind: Kind::Special(what),
                        stat,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn open_dir(root: &OwnedFd, rel: &[u8]) -> nix::Result<Dir> {
    let fd = open_beneath(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    Dir::from_fd(fd)
}

/// Reads a symlink's target: the link is opened with `O_PATH | O_NOFOLLOW` beneath the root,
/// then read through its descriptor (`readlinkat(fd, "")`), never resolved.
fn read_link_beneath(root: &OwnedFd, rel: &[u8]) -> std::io::Result<Vec<u8>> {
    let fd = open_beneath(root, rel, OFlag::O_PATH)?;
    let target = nix::fcntl::readlinkat(&fd, "")?;
    Ok(target.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn paths(scan: &Scan) -> Vec<String> {
        let mut v: Vec<String> = scan
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn finds_files_links_and_specials_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f.txt"), "x").unwrap();
        std::fs::write(root.join(".git"), "gitdir: /somewhere\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let scan = scan(root, &mut |_| true).unwrap();
        assert_eq!(paths(&scan), vec!["a/b/f.txt", "etc", "fifo"]);
        let link = scan.entries.iter().find(|e| e.path == b"etc").unwrap();
        assert_eq!(
            link.kind,
            Kind::Symlink {
                target: b"/etc".to_vec()
            }
        );
        let fifo = scan.entries.iter().find(|e| e.path == b"fifo").unwrap();
        assert_eq!(fifo.kind, Kind::Special("a FIFO"));
    }

    #[test]
    fn nested_repositories_are_reported_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("vendor/dep/.git")).unwrap();
        std::fs::write(root.join("vendor/dep/lib.rs"), "x").unwrap();
        let scan = scan(root, &mut |_| true).unwrap();
        assert_eq!(scan.nested_repos, vec![b"vendor/dep".to_vec()]);
        assert!(scan.entries.is_empty());
    }

    #[test]
    fn unreadable_entries_are_made_readable_or_reported() {
        if nix::unistd::geteuid().is_root() {
            return; // root reads everything; the unprivileged pass is in the integration tests
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.txt"), "x").unwrap();
        std::fs::write(root.join("locked"), "y").unwrap();
        std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        std::fs::set_permissions(root.join("src"), std::fs::Permissions::from_mode(0o000)).unwrap();
        let scan = scan(root, &mut |_| true).unwrap();
        assert_eq!(paths(&scan), vec!["locked", "src/a.txt"]);
        assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
        assert_eq!(scan.made_readable.len(), 2);
    }

    #[test]
    fn skipped_folders_are_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("node_modules/x")).unwrap();
        std::fs::write(root.join("node_modules/x/i.js"), "x").unwrap();
        std::fs::write(root.join("keep.txt"), "x").unwrap();
        let scan = scan(root, &mut |d| d != b"node_modules").unwrap();
        assert_eq!(paths(&scan), vec!["keep.txt"]);
    }
}
