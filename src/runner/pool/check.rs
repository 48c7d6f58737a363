/*!
The check after a pooled worktree's reset: the worktree must be what a fresh checkout of the
start commit gives, or it is not reused. git's reset trusts stat data (a file hard-linked to
another or to a folder outside keeps its inode, and its stat data was refreshed by the last
collection), does not look at permission bits beyond the executable one, and never lists
extended attributes. So fanout itself, after the sandboxed reset, walks the worktree and
compares every entry with the start tree:

- every entry is in the tree, and every tree entry is there, with its kind (file, link,
  folder); the content of every file and link is hashed (git's blob id, streamed), never
  trusted from stat data;
- files have one link; owner and group are those of a fresh checkout (the agent uid as root);
- no extended attribute but the `security.*` ones the system sets (`security.capability`
  excluded): no `user.*`, `trusted.*` or ACL;
- permission bits are set to a fresh checkout's (`0644`/`0755` for files, `0777` for folders,
  `0666` for `.git`, less the umask): nothing setuid, setgid, sticky or writable by others
  survives. Only this is repaired; any other difference is an error naming the path.

Everything is opened beneath the worktree without following links (`openat2` with
`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, as collections do), so what the last agent planted
cannot point fanout (root, or the invoking user) anywhere else. No process of any task runs in
the worktree meanwhile: its last agent's processes are gone and the next one has not started.
*/

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fchmod, fstat, FileStat, Mode, SFlag};
use rayon::prelude::*;

use crate::git::checkout::Listing;
use crate::git::scan;

/// Whom a fresh checkout's entries belong to, and which permission bits they get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fresh {
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
    /// Folders inherit the setgid bit of the worktrees folder (group inheritance).
    pub setgid_dirs: bool,
}

impl Fresh {
    /// What a fresh checkout into a new folder of `parent` gives: the agent's uid and gid when
    /// fanout hands worktrees over (`run_as`), else this process's, with the group of a setgid
    /// `parent`; this process's umask.
    pub fn for_parent(parent: &Path, run_as: Option<(u32, u32)>) -> Fresh {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(parent).ok();
        let setgid_dirs = meta.as_ref().is_some_and(|m| m.mode() & libc::S_ISGID != 0);
        let (uid, gid) = run_as.unwrap_or_else(|| {
            let gid = match &meta {
                Some(m) if setgid_dirs => m.gid(),
                _ => nix::unistd::getegid().as_raw(),
            };
            (nix::unistd::geteuid().as_raw(), gid)
        });
        Fresh {
            uid,
            gid,
            umask: process_umask(),
            setgid_dirs,
        }
    }

    pub(super) fn file_mode(&self, executable: bool) -> u32 {
        (if executable { 0o755 } else { 0o644 }) & !self.umask
    }

    pub(super) fn dir_mode(&self) -> u32 {
        (0o777 & !self.umask) | if self.setgid_dirs { libc::S_ISGID } else { 0 }
    }
}

/// This process's umask, read without changing it (`umask(2)` would, for every thread).
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// What the check repaired (counts, for tests and logs).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub files: usize,
    pub modes_repaired: usize,
}

/// A file or link found where the tree has one: checked (content, links, attributes) in
/// parallel once the walk is done.
struct ToHash {
    path: Vec<u8>,
    id: Oid,
    stat: scan::Stat,
    executable: bool,
}

/// Checks the worktree at `wt` against `listing` (the start commit's plain checkout) and its
/// `.git` file against `git_file` (its exact content); repairs permission bits. `Err` names
/// the first difference found.
/// A link of the tree: one link to it, owned as a fresh checkout's, the committed target.
fn check_link(
    root: &OwnedFd,
    rel: &[u8],
    st: &nix::sys::stat::FileStat,
    id: Oid,
    fresh: Fresh,
) -> Result<(), String> {
    owned_and_single(st, rel, fresh, false)?;
    // No extended attribute to look for: Linux refuses `user.*` ones on links, and the other
    // namespaces need privileges no agent has.
    let target = nix::fcntl::readlinkat(&open(root, rel, OFlag::O_PATH)?, "")
        .map_err(|e| format!("{}: cannot read the link: {e}", show(rel)))?;
    let got = Oid::hash_object(ObjectType::Blob, target.as_encoded_bytes())
        .map_err(|e| format!("{}: {e}", show(rel)))?;
    if got != id {
        return Err(format!("{}: the link's target differs", show(rel)));
    }
    Ok(())
}

pub fn check_worktree(
    wt: &Path,
    listing: &Listing,
    git_file: &[u8],
    fresh: Fresh,
) -> Result<Checked, String> {
    let root = scan::open_root(wt).map_err(|e| e.to_string())?;
    let files: HashMap<&[u8], (Oid, u32)> = listing
        .items
        .iter()
        .map(|i| (i.path.as_slice(), (i.id, i.mode)))
        .collect();
    let dirs: HashSet<&[u8]> = listing.dirs.iter().map(Vec::as_slice).collect();
    let mut out = Checked::default();
    let mut to_hash = Vec::with_capacity(files.len());
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    let mut dirs_seen = 0usize;
    while let Some(dir) = stack.pop() {
        let fd = open(&root, &dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let st = stat_of(&fd, &dir)?;
        owned_and_single(&st, &dir, fresh, true)?;
        no_xattrs(&fd, &dir)?;
        out.modes_repaired += usize::from(set_mode(&fd, &st, fresh.dir_mode(), &dir)?);
        let dir_fd = fd.try_clone().map_err(|e| format!("{}: {e}", show(&dir)))?;
        let names = list_dir(fd, &dir)?;
        for name in names {
            let rel = join(&dir, &name);
            if dir.is_empty() && name == b".git" {
                check_git_file(&root, git_file, fresh, &mut out)?;
                continue;
            }
            // Through the folder's descriptor, the name itself not followed.
            let st = nix::sys::stat::fstatat(
                &dir_fd,
                std::ffi::OsStr::from_bytes(&name),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| format!("{}: cannot stat: {e}", show(&rel)))?;
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            match (kind, files.get(rel.as_slice())) {
                (SFlag::S_IFDIR, _) if dirs.contains(rel.as_slice()) => {
                    dirs_seen += 1;
                    stack.push(rel);
                }
                (SFlag::S_IFREG, Some(&(id, mode))) if mode & 0o170000 == 0o100000 => {
                    to_hash.push(ToHash {
                        path: rel,
                        id,
                        stat: scan::Stat::from(&st),
                        executable: mode == 0o100755,
                    })
                }
                (SFlag::S_IFLNK, Some(&(id, 0o120000))) => {
                    check_link(&root, &rel, &st, id, fresh)?;
                    out.files += 1;
                }
                _ => return Err(format!("{}: not in the tree as it is", show(&rel))),
            }
        }
    }
    let checked: Vec<Result<bool, String>> = to_hash
        .par_iter()
        .map(|f| check_file(&root, f, fresh))
        .collect();
    for c in checked {
        out.modes_repaired += usize::from(c?);
        out.files += 1;
    }
    if out.files != files.len() || dirs_seen != dirs.len() {
        return Err(format!(
            "{} of the tree's {} files and {} of its {} folders are there",
            out.files,
            files.len(),
            dirs_seen,
            dirs.len()
        ));
    }
    Ok(out)
}

/// Files up to this size are read into memory to be hashed; larger ones are streamed.
const SMALL: u64 = 1 << 20;

/// One regular file: one link, the fresh owner, no extended attribute, the blob's content;
/// `true` when its permission bits were repaired.
fn check_file(root: &OwnedFd, f: &ToHash, fresh: Fresh) -> Result<bool, String> {
    let file =
        scan::open_file(root, &f.path, &f.stat).map_err(|e| format!("{}: {e}", show(&f.path)))?;
    let st = stat_of(&file, &f.path)?;
    owned_and_single(&st, &f.path, fresh, false)?;
    no_xattrs(&file, &f.path)?;
    let got = if st.st_size as u64 <= SMALL {
        // Read whole through the descriptor (most files of a repository are small).
        let mut buf = Vec::with_capacity(st.st_size as usize + 1);
        (&file)
            .take(SMALL + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{}: cannot read: {e}", show(&f.path)))?;
        Oid::hash_object(ObjectType::Blob, &buf)
    } else {
        // Streamed by libgit2 through the descriptor fanout opened (the magic link names
        // exactly that file; no path inside the worktree is resolved again).
        Oid::hash_file(
            ObjectType::Blob,
            format!("/proc/self/fd/{}", file.as_raw_fd()),
        )
    }
    .map_err(|e| format!("{}: cannot hash: {}", show(&f.path), e.message()))?;
    if got != f.id {
        return Err(format!(
            "{}: the content differs from the tree",
            show(&f.path)
        ));
    }
    set_mode(&file, &st, fresh.file_mode(f.executable), &f.path)
}

/// The root's `.git` file: what the reset wrote, and nothing else.
fn check_git_file(
    root: &OwnedFd,
    expected: &[u8],
    fresh: Fresh,
    out: &mut Checked,
) -> Result<(), String> {
    let rel = b".git";
    let fd = open(root, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let st = stat_of(&fd, rel)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(".git is not a file".into());
    }
    owned_and_single(&st, rel, fresh, false)?;
    no_xattrs(&fd, rel)?;
    let mut content = Vec::new();
    std::fs::File::from(fd.try_clone().map_err(|e| format!(".git: {e}"))?)
        .take(expected.len() as u64 + 1)
        .read_to_end(&mut content)
        .map_err(|e| format!(".git: {e}"))?;
    if content != expected {
        return Err(".git is not the file fanout writes".into());
    }
    out.modes_repaired += usize::from(set_mode(&fd, &st, 0o666 & !fresh.umask, rel)?);
    Ok(())
}

fn open(root: &OwnedFd, rel: &[u8], flags: OFlag) -> Result<OwnedFd, String> {
    scan::open_beneath(root, rel, flags).map_err(|e| format!("{}: cannot open: {e}", show(rel)))
}

fn stat_of(fd: &impl AsFd, rel: &[u8]) -> Result<FileStat, String> {
    fstat(fd).map_err(|e| format!("{}: cannot stat: {e}", show(rel)))
}

/// The owner and group of a fresh checkout; one link (files and links).
fn owned_and_single(st: &FileStat, rel: &[u8], fresh: Fresh, dir: bool) -> Result<(), String> {
    if st.st_uid != fresh.uid || st.st_gid != fresh.gid {
        return Err(format!(
            "{}: owned by {}:{}, not {}:{}",
            show(rel),
            st.st_uid,
            st.st_gid,
            fresh.uid,
            fresh.gid
        ));
    }
    if !dir && st.st_nlink != 1 {
        return Err(format!("{}: {} hard links", show(rel), st.st_nlink));
    }
    Ok(())
}

/// Sets the permission bits to `want` when they differ: `true` when it did.
fn set_mode(fd: &impl AsFd, st: &FileStat, want: u32, rel: &[u8]) -> Result<bool, String> {
    if st.st_mode & 0o7777 == want {
        return Ok(false);
    }
    fchmod(fd, Mode::from_bits_truncate(want))
        .map_err(|e| format!("{}: cannot set its mode: {e}", show(rel)))?;
    Ok(true)
}

/// No extended attribute but those the system itself sets (`security.*`, which agents cannot
/// set, `security.capability` excepted).
fn no_xattrs(fd: &impl AsFd, rel: &[u8]) -> Result<(), String> {
    let names = xattr_names(fd).map_err(|e| format!("{}: cannot list xattrs: {e}", show(rel)))?;
    match names
        .iter()
        .find(|n| !n.starts_with(b"security.") || n.as_slice() == b"security.capability")
    {
        Some(n) => Err(format!(
            "{}: extended attribute {}",
            show(rel),
            String::from_utf8_lossy(n)
        )),
        None => Ok(()),
    }
}

/// The names of a file's extended attributes (`flistxattr`).
#[allow(unsafe_code)]
pub(super) fn xattr_names(fd: &impl AsFd) -> std::io::Result<Vec<Vec<u8>>> {
    let raw = fd.as_fd().as_raw_fd();
    loop {
        // SAFETY: a null buffer of size 0 only asks for the list's length.
        let len = unsafe { libc::flistxattr(raw, std::ptr::null_mut(), 0) };
        if len < 0 {
            return match Errno::last() {
                Errno::ENOTSUP => Ok(Vec::new()),
                e => Err(e.into()),
            };
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let got = unsafe { libc::flistxattr(raw, buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            match Errno::last() {
                Errno::ERANGE => continue, // the list grew meanwhile: ask again
                e => return Err(e.into()),
            }
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

/// The names in a folder (`.` and `..` left out).
fn list_dir(fd: OwnedFd, rel: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut dir =
        nix::dir::Dir::from_fd(fd).map_err(|e| format!("{}: cannot list: {e}", show(rel)))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| format!("{}: cannot list: {e}", show(rel)))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        return "the worktree's root".into();
    }
    String::from_utf8_lossy(rel).into_owned()
}

/// The `.git` file a worktree registered at `admin` gets (what the reset and a fresh checkout
/// write).
pub fn git_file_content(admin: &Path) -> Vec<u8> {
    format!("gitdir: {}\n", admin.display()).into_bytes()
}

/// The repository's common folder, from a worktree's admin folder (`<common>/worktrees/<name>`).
pub fn common_dir_of(admin: &Path) -> Option<PathBuf> {
    admin.parent()?.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A repository with a few files, a link and a folder, its listing, and a fresh checkout
    /// of it (with its `.git` file) in `wt`.
    fn checked_out() -> (tempfile::TempDir, PathBuf, Listing, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path().join("r")).unwrap();
        let mut u = git2::build::TreeUpdateBuilder::new();
        let empty = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        for (p, c, m) in [
            ("a.txt", &b"a\n"[..], git2::FileMode::Blob),
            ("b.txt", b"same\n", git2::FileMode::Blob),
            ("c.txt", b"same\n", git2::FileMode::Blob),
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
        let wt = dir.path().join("wt");
        std::fs::create_dir(&wt).unwrap();
        let index = dir.path().join("index");
        assert!(crate::git::checkout::checkout_plain(&repo, c, &wt, &index).unwrap());
        let git_file = git_file_content(&dir.path().join("admin"));
        std::fs::write(wt.join(".git"), &git_file).unwrap();
        let listing = crate::git::checkout::plain_listing(&repo, c)
            .unwrap()
            .unwrap();
        (dir, wt, listing, git_file)
    }

    fn check(wt: &Path, listing: &Listing, git_file: &[u8]) -> Result<Checked, String> {
        check_worktree(
            wt,
            listing,
            git_file,
            Fresh::for_parent(wt.parent().unwrap(), None),
        )
    }

    #[test]
    fn a_fresh_checkout_passes_unchanged() {
        let (_d, wt, listing, git_file) = checked_out();
        let got = check(&wt, &listing, &git_file).unwrap();
        assert_eq!(
            got,
            Checked {
                files: 5,
                modes_repaired: 0
            }
        );
    }

    /// Spoils a fresh checkout in one way.
    type Spoil = fn(&Path);

    #[test]
    fn shared_inodes_extra_entries_and_changed_content_are_found() {
        let cases: [(&str, Spoil); 7] = [
            ("hard links", |wt| {
                std::fs::remove_file(wt.join("c.txt")).unwrap();
                std::fs::hard_link(wt.join("b.txt"), wt.join("c.txt")).unwrap();
            }),
            ("hard links", |wt| {
                std::fs::hard_link(wt.join("a.txt"), wt.parent().unwrap().join("cache")).unwrap();
            }),
            ("not in the tree", |wt| {
                std::fs::write(wt.join("new"), "x").unwrap()
            }),
            ("not in the tree", |wt| {
                std::fs::create_dir(wt.join("d/empty")).unwrap()
            }),
            ("content differs", |wt| {
                // Same size, same times: only the content tells.
                let before = std::fs::metadata(wt.join("a.txt")).unwrap();
                std::fs::write(wt.join("a.txt"), "b\n").unwrap();
                let f = std::fs::File::options()
                    .write(true)
                    .open(wt.join("a.txt"))
                    .unwrap();
                f.set_modified(before.modified().unwrap()).unwrap();
            }),
            ("link's target", |wt| {
                std::fs::remove_file(wt.join("link")).unwrap();
                std::os::unix::fs::symlink("b.txt", wt.join("link")).unwrap();
            }),
            ("files and", |wt| {
                std::fs::remove_file(wt.join("d/e/x.sh")).unwrap()
            }),
        ];
        for (want, spoil) in cases {
            let (_d, wt, listing, git_file) = checked_out();
            spoil(&wt);
            let err = check(&wt, &listing, &git_file).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn a_forged_git_file_is_found() {
        let (_d, wt, listing, git_file) = checked_out();
        std::fs::write(wt.join(".git"), "gitdir: /elsewhere\n").unwrap();
        let err = check(&wt, &listing, &git_file).unwrap_err();
        assert!(err.contains(".git"), "{err}");
        std::fs::remove_file(wt.join(".git")).unwrap();
        std::fs::create_dir(wt.join(".git")).unwrap();
        assert!(check(&wt, &listing, &git_file).is_err());
    }

    #[test]
    #[allow(unsafe_code)]
    fn user_xattrs_on_a_file_or_a_folder_are_found() {
        for target in ["a.txt", "d", ""] {
            let (_d, wt, listing, git_file) = checked_out();
            let path =
                std::ffi::CString::new(wt.join(target).into_os_string().into_encoded_bytes())
                    .unwrap();
            // SAFETY: valid NUL-terminated strings and a 1-byte value.
            let r = unsafe {
                libc::setxattr(
                    path.as_ptr(),
                    c"user.fanout-test".as_ptr(),
                    b"x".as_ptr().cast(),
                    1,
                    0,
                )
            };
            if r != 0 {
                eprintln!("no user xattrs here: {}", std::io::Error::last_os_error());
                return;
            }
            let err = check(&wt, &listing, &git_file).unwrap_err();
            assert!(err.contains("user.fanout-test"), "{target}: {err}");
        }
    }

    #[test]
    fn special_and_writable_modes_are_set_back_to_a_fresh_checkouts() {
        let (_d, wt, listing, git_file) = checked_out();
        let fresh = Fresh::for_parent(wt.parent().unwrap(), None);
        let set = |p: &str, m: u32| {
            std::fs::set_permissions(wt.join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        set("d", 0o1777);
        set("a.txt", 0o2666);
        set("d/e/x.sh", 0o4777);
        set(".git", 0o600);
        let got = check(&wt, &listing, &git_file).unwrap();
        assert_eq!(got.modes_repaired, 4);
        let mode = |p: &str| std::fs::metadata(wt.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("d"), fresh.dir_mode());
        assert_eq!(mode("a.txt"), 0o644 & !fresh.umask);
        assert_eq!(mode("d/e/x.sh"), 0o755 & !fresh.umask);
        assert_eq!(mode(".git"), 0o666 & !fresh.umask);
        assert_eq!(check(&wt, &listing, &git_file).unwrap().modes_repaired, 0);
    }

    #[test]
    fn the_umask_is_read_without_changing_it() {
        let m = process_umask();
        assert_eq!(m & !0o777, 0);
        assert_eq!(process_umask(), m);
    }
}
