/*!
Turning a scanned workspace into index entries: what is tracked, what is ignored, what can be
reused from the stat cache, what must be hashed (streamed into the object store), and what
fanout refuses to commit — each refusal names the path.

What fanout supports: regular files (executable or not), symlinks (stored as links, never
followed), deletions. Submodules stay as they are in the base: a task that writes inside, removes
or replaces a submodule folder fails naming it. Nested repositories, FIFOs, sockets and device
nodes fail the task naming them; so do files over the task's size limits and paths stored through
a filter driver fanout does not run (unless allowed).
*/

use super::bytes_path;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::SystemTime;

use git2::{AttrCheckFlags, AttrValue, IndexEntry, IndexTime, ObjectType, Oid, Repository};

use super::collect_options::CollectOptions;
use super::scan::{self, Found, Kind, Stat};
use super::GitError;

const MODE_FILE: u32 = 0o100644;
const MODE_EXEC: u32 = 0o100755;
const MODE_LINK: u32 = 0o120000;
const MODE_GITLINK: u32 = 0o160000;

pub(super) struct Workspace<'a> {
    pub repo: &'a Repository,
    pub root: &'a Path,
    /// The index fanout wrote: the start commit's entries with their stat data.
    pub known: &'a BTreeMap<Vec<u8>, IndexEntry>,
    /// Files modified at or after the index was written are hashed again (racy git).
    pub racy_after: Option<SystemTime>,
    /// Whether the index's stat data can be trusted at all.
    pub trust_stat: bool,
    pub opts: &'a CollectOptions,
}

/// What to do with one found entry.
pub(super) enum Decision {
    Entry(IndexEntry),
    /// Ignored and untracked.
    Skip,
    Problem(String),
    /// A problem after which nothing more is hashed (a size budget is spent).
    Stop(String),
}

pub(super) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// `dir` is `path` or one of its parent folders.
fn is_within(path: &[u8], dir: &[u8]) -> bool {
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

impl Workspace<'_> {
    /// The index entries of the workspace as it is, or every problem that stops fanout from
    /// committing it faithfully.
    pub fn entries(&self) -> Result<Vec<IndexEntry>, GitError> {
        let gitlinks: Vec<&Vec<u8>> = self
            .known
            .iter()
            .filter(|(_, e)| e.mode == MODE_GITLINK)
            .map(|(p, _)| p)
            .collect();
        // Folders that hold tracked entries are always walked, ignored or not.
        let mut tracked_dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
        for path in self.known.keys() {
            for (i, b) in path.iter().enumerate() {
                if *b == b'/' {
                    tracked_dirs.insert(path[..i].to_vec());
                }
            }
        }
        for g in &gitlinks {
            tracked_dirs.insert(g.to_vec());
        }
        let mut descend = |dir: &[u8]| tracked_dirs.contains(dir) || !self.ignored(dir, true);
        let scan = scan::scan(self.root, &mut descend)?;
        let root_fd = scan::open_root(self.root)?;

        let mut problems: Vec<String> = Vec::new();
        for (path, why) in &scan.unreadable {
            problems.push(format!("{}: cannot be read ({why})", show(path)));
        }
        for nested in &scan.nested_repos {
            if gitlinks.iter().any(|g| is_within(nested, g)) {
                problems.push(format!(
                    "{}: the task made a repository inside the submodule folder; fanout does not change submodules",
                    show(nested)
                ));
            } else if !self.ignored(nested, true) {
                problems.push(format!(
                    "{}: holds a git repository of its own; fanout does not commit nested repositories (remove its .git, or ignore the folder)",
                    show(nested)
                ));
            }
        }

        let file_mode_cfg = self
            .repo
            .config()
            .and_then(|c| c.get_bool("core.filemode"))
            .unwrap_or(true);
        let mut out = Vec::with_capacity(scan.entries.len());
        let mut change_bytes: u64 = 0;
        for found in &scan.entries {
            if let Some(g) = gitlinks.iter().find(|g| is_within(&found.path, g)) {
                problems.push(format!(
                    "{}: the task wrote {} inside the submodule folder; fanout does not change submodules",
                    show(g),
                    show(&found.path)
                ));
                continue;
            }
            if let Some(bad) = bad_component(&found.path) {
                problems.push(format!(
                    "{}: a path component {bad:?} is not allowed in git",
                    show(&found.path)
                ));
                continue;
            }
            let tracked = self.known.get(&found.path);
            match self.entry_for(&root_fd, found, tracked, file_mode_cfg, &mut change_bytes) {
                Decision::Entry(e) => out.push(e),
                Decision::Skip => {}
                Decision::Problem(p) => problems.push(p),
                Decision::Stop(p) => {
                    problems.push(p);
                    break;
                }
            }
        }
        // Submodules: the gitlink stays as it is in the base while its folder is there, empty.
        for g in &gitlinks {
            let seen_as_entry = scan.entries.iter().any(|e| e.path == **g);
            let is_dir = std::fs::symlink_metadata(self.root.join(bytes_path(g)))
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if seen_as_entry || !is_dir {
                problems.push(format!(
                    "{}: the task removed or replaced the submodule folder; fanout does not change submodules",
                    show(g)
                ));
            } else if let Some(e) = self.known.get(*g) {
                out.push(clone_entry(e));
            }
        }
        if !problems.is_empty() {
            return Err(GitError::Refused(problems));
        }
        Ok(out)
    }

    /// The index entry for one found file or link (`tracked`: its entry in the start commit),
    /// hashing it unless the stat cache says it is unchanged; `change_bytes` sums new content.
    pub(super) fn entry_for(
        &self,
        root_fd: &OwnedFd,
        found: &Found,
        tracked: Option<&IndexEntry>,
        file_mode_cfg: bool,
        change_bytes: &mut u64,
    ) -> Decision {
        if tracked.is_none() && self.ignored(&found.path, false) {
            return Decision::Skip;
        }
        let entry = match &found.kind {
            Kind::Special(what) => {
                let verb = if tracked.is_some() {
                    "was replaced by"
                } else {
                    "is"
                };
                return Decision::Problem(format!(
                    "{}: {verb} {what}, which git cannot store",
                    show(&found.path)
                ));
            }
            Kind::Symlink { target } => {
                let oid = match tracked.filter(|t| self.unchanged(t, found, MODE_LINK)) {
                    Some(t) => t.id,
                    None => match self.repo.blob(target) {
                        Ok(oid) => oid,
                        Err(e) => {
                            return Decision::Problem(format!(
                                "{}: cannot store the link: {e}",
                                show(&found.path)
                            ))
                        }
                    },
                };
                entry_of(found, MODE_LINK, oid)
            }
            Kind::File { executable } => {
                let mode = if file_mode_cfg {
                    if *executable {
                        MODE_EXEC
                    } else {
                        MODE_FILE
                    }
                } else {
                    tracked
                        .map(|t| t.mode)
                        .filter(|m| *m == MODE_EXEC || *m == MODE_FILE)
                        .unwrap_or(MODE_FILE)
                };
                let oid = match tracked.filter(|t| self.unchanged(t, found, mode)) {
                    Some(t) => t.id,
                    None => {
                        let size = found.stat.size;
                        if size > self.opts.limits.max_file_bytes {
                            return Decision::Problem(format!(
                                "{}: {size} bytes is over the task's max_file_bytes ({})",
                                show(&found.path),
                                self.opts.limits.max_file_bytes
                            ));
                        }
                        *change_bytes = change_bytes.saturating_add(size);
                        if *change_bytes > self.opts.limits.max_change_bytes {
                            return Decision::Stop(format!(
                                    "{}: the task's new and changed files pass its max_change_bytes ({}) here",
                                    show(&found.path),
                                    self.opts.limits.max_change_bytes
                                ));
                        }
                        if let Some(driver) = self.filter_driver(&found.path) {
                            if !self.opts.allow_unfiltered {
                                return Decision::Problem(format!(
                                        "{}: the repository stores it through the `{driver}` filter, which fanout does not run (--allow-unfiltered commits the raw content)",
                                        show(&found.path)
                                    ));
                            }
                        }
                        match self.hash_file(root_fd, found) {
                            Ok(oid) => oid,
                            Err(e) => {
                                return Decision::Problem(format!("{}: {e}", show(&found.path)));
                            }
                        }
                    }
                };
                entry_of(found, mode, oid)
            }
        };
        Decision::Entry(entry)
    }

    pub(super) fn ignored(&self, path: &[u8], is_dir: bool) -> bool {
        let mut p = path.to_vec();
        if is_dir {
            p.push(b'/');
        }
        self.repo.is_path_ignored(bytes_path(&p)).unwrap_or(false)
    }

    /// Whether the stat cache says the entry still holds what the index recorded.
    fn unchanged(&self, known: &IndexEntry, found: &Found, mode: u32) -> bool {
        let st = &found.stat;
        let racy = self.racy_after.is_some_and(|t| {
            let mtime = SystemTime::UNIX_EPOCH
                + std::time::Duration::new(st.mtime.0.max(0) as u64, st.mtime.1.max(0) as u32);
            mtime >= t
        });
        self.trust_stat
            && !racy
            && known.mode == mode
            && known.mtime.seconds() as i64 == st.mtime.0
            && known.mtime.nanoseconds() as i64 == st.mtime.1
            && known.ctime.seconds() as i64 == st.ctime.0
            && known.ctime.nanoseconds() as i64 == st.ctime.1
            && known.file_size == st.size as u32
            && known.ino == st.ino as u32
    }

    /// The filter driver the repository's attributes name for `path` (in the base's index or
    /// in the workspace's `.gitattributes`), if any.
    fn filter_driver(&self, path: &[u8]) -> Option<String> {
        for flags in [AttrCheckFlags::INDEX_ONLY, AttrCheckFlags::FILE_THEN_INDEX] {
            let value = self
                .repo
                .get_attr_bytes(bytes_path(path), "filter", flags)
                .ok()
                .flatten();
            match AttrValue::from_bytes(value) {
                AttrValue::String(s) => return Some(s.to_string()),
                AttrValue::Bytes(b) => return Some(show(b)),
                _ => {}
            }
        }
        None
    }

    /// Whether git would turn CRLF into LF for `path` when adding it.
    fn converts_line_endings(&self, path: &[u8]) -> Option<bool> {
        let attr = |name: &str| {
            let v = self
                .repo
                .get_attr_bytes(bytes_path(path), name, AttrCheckFlags::FILE_THEN_INDEX)
                .ok()
                .flatten()
                .map(<[u8]>::to_vec);
            v
        };
        let text = attr("text");
        match AttrValue::from_bytes(text.as_deref()) {
            AttrValue::False => return None,
            AttrValue::True => return Some(true),
            AttrValue::String("auto") => return Some(false),
            _ => {}
        }
        if !matches!(
            AttrValue::from_bytes(attr("eol").as_deref()),
            AttrValue::Unspecified
        ) {
            return Some(true);
        }
        let autocrlf = self
            .repo
            .config()
            .and_then(|c| c.get_string("core.autocrlf"))
            .unwrap_or_default();
        matches!(autocrlf.as_str(), "true" | "input").then_some(false)
    }

    /// Streams a file into the object store (after CRLF normalisation where git would do it).
    fn hash_file(&self, root: &OwnedFd, found: &Found) -> Result<Oid, String> {
        let mut file = scan::open_file(root, &found.path, &found.stat)
            .map_err(|e| format!("cannot open: {e}"))?;
        let size = found.stat.size;
        if let Some(always) = self.converts_line_endings(&found.path) {
            let mut buf = Vec::with_capacity(size as usize);
            (&mut file)
                .take(size)
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read: {e}"))?;
            let text = always || !buf.iter().take(8000).any(|b| *b == 0);
            if text && buf.windows(2).any(|w| w == b"\r\n") {
                buf = crlf_to_lf(&buf);
            }
            return self
                .repo
                .blob(&buf)
                .map_err(|e| format!("cannot store: {}", e.message()));
        }
        let odb = self
            .repo
            .odb()
            .map_err(|e| format!("cannot open the object store: {}", e.message()))?;
        let mut writer = odb
            .writer(size as usize, ObjectType::Blob)
            .map_err(|e| format!("cannot store: {}", e.message()))?;
        let copied = std::io::copy(&mut (&mut file).take(size), &mut writer)
            .map_err(|e| format!("cannot store: {e}"))?;
        if copied != size {
            return Err("the file changed while fanout was reading it".into());
        }
        writer.flush().map_err(|e| format!("cannot store: {e}"))?;
        writer
            .finalize()
            .map_err(|e| format!("cannot store: {}", e.message()))
    }
}

fn crlf_to_lf(buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\r' && buf.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(buf[i]);
        i += 1;
    }
    out
}

/// A component git refuses (`.git` in any case, `.` or `..`).
pub(super) fn bad_component(path: &[u8]) -> Option<String> {
    path.split(|b| *b == b'/')
        .find(|c| c.eq_ignore_ascii_case(b".git") || *c == b"." || *c == b".." || c.is_empty())
        .map(show)
}

fn clone_entry(e: &IndexEntry) -> IndexEntry {
    IndexEntry {
        ctime: e.ctime,
        mtime: e.mtime,
        dev: e.dev,
        ino: e.ino,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        file_size: e.file_size,
        id: e.id,
        flags: e.flags,
        flags_extended: e.flags_extended,
        path: e.path.clone(),
    }
}

fn entry_of(found: &Found, mode: u32, id: Oid) -> IndexEntry {
    let st: &Stat = &found.stat;
    let len = found.path.len().min(0xfff) as u16;
    IndexEntry {
        ctime: IndexTime::new(st.ctime.0 as i32, st.ctime.1 as u32),
        mtime: IndexTime::new(st.mtime.0 as i32, st.mtime.1 as u32),
        dev: st.dev as u32,
        ino: st.ino as u32,
        mode,
        uid: st.uid,
        gid: st.gid,
        file_size: st.size as u32,
        id,
        flags: len,
        flags_extended: 0,
        path: found.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_becomes_lf_and_lone_cr_stays() {
        assert_eq!(crlf_to_lf(b"a\r\nb\rc\r\n"), b"a\nb\rc\n");
    }

    #[test]
    fn git_components_are_refused_in_any_case() {
        assert_eq!(bad_component(b"a/.GIT/config").as_deref(), Some(".GIT"));
        assert_eq!(bad_component(b"a/.gitignore"), None);
        assert!(is_within(b"sub/x", b"sub"));
        assert!(!is_within(b"subx", b"sub"));
    }
}
