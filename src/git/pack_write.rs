/*!
Writes the integration's objects as a pack, in O(what it writes).

libgit2's pack builder was most of the integration's time: it looks for deltas among every
pair of objects in a window (a quarter of the integration), and before it writes a pack it lists
every reference of the repository, reading each loose one from disk, to put tagged objects first
(another quarter at 10 000 tasks, whose branches are 10 000 loose references; it grows with the
run, once per pack). The integration knows better which object resembles which: a tree it
rewrites is the tree it replaces at the same path, one entry changed. So this writer stores each
object whole, or a tree as a delta against the tree it replaced when that one is in the same
pack: a copy of their common start, the new middle, a copy of their common end — one pass, no
search. Chains stay short ([`MAX_DEPTH`]) so reading the newest root tree stays cheap.

The format is git's pack v2 (`Documentation/gitformat-pack.txt`): a header, entries of a type
and size then zlib-compressed data (`OFS_DELTA` entries name their base by its distance back),
and the SHA-1 of all of it. libgit2's indexer reads it back and writes the index.
*/

use std::collections::HashMap;
use std::io::Write;

use git2::{ObjectType, Oid};

/// The longest chain of deltas; git's default for `pack.depth` is 50.
const MAX_DEPTH: u8 = 16;
/// A delta is kept only when it is at most this fraction of the whole object.
const DELTA_AT_MOST: (usize, usize) = (1, 2);

/// Where an object went in the pack.
struct Placed {
    offset: usize,
    depth: u8,
}

/// A pack being written in memory.
pub struct PackBuf {
    data: Vec<u8>,
    count: u32,
    placed: HashMap<Oid, Placed>,
}

impl Default for PackBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuf {
    pub fn new() -> PackBuf {
        let mut data = Vec::with_capacity(64 * 1024);
        data.extend_from_slice(b"PACK");
        data.extend_from_slice(&2u32.to_be_bytes());
        // The object count, filled in by `finish`.
        data.extend_from_slice(&0u32.to_be_bytes());
        PackBuf {
            data,
            count: 0,
            placed: HashMap::new(),
        }
    }

    /// Whether `id` is in the pack already.
    pub fn has(&self, id: Oid) -> bool {
        self.placed.contains_key(&id)
    }

    /// Adds an object whole. Adding one twice adds it once.
    pub fn add(&mut self, id: Oid, kind: ObjectType, content: &[u8]) -> std::io::Result<()> {
        if self.has(id) {
            return Ok(());
        }
        let offset = self.data.len();
        entry_header(&mut self.data, type_code(kind), content.len());
        self.compress(content)?;
        self.placed.insert(id, Placed { offset, depth: 0 });
        self.count += 1;
        Ok(())
    }

    /// Adds an object as a delta against `base` (whose content is `base_content`) when `base`
    /// is in this pack, the chain is short enough and the delta small; whole otherwise.
    pub fn add_against(
        &mut self,
        id: Oid,
        kind: ObjectType,
        content: &[u8],
        base: Oid,
        base_content: &[u8],
    ) -> std::io::Result<()> {
        if self.has(id) {
            return Ok(());
        }
        let Some(&Placed {
            offset: base_offset,
            depth,
        }) = self.placed.get(&base)
        else {
            return self.add(id, kind, content);
        };
        if depth >= MAX_DEPTH {
            return self.add(id, kind, content);
        }
        let delta = delta(base_content, content);
        if delta.len() * DELTA_AT_MOST.1 > content.len() * DELTA_AT_MOST.0 {
            return self.add(id, kind, content);
        }
        let offset = self.data.len();
        entry_header(&mut self.data, OFS_DELTA, delta.len());
        ofs_distance(&mut self.data, offset - base_offset);
        self.compress(&delta)?;
        self.placed.insert(
            id,
            Placed {
                offset,
                depth: depth + 1,
            },
        );
        self.count += 1;
        Ok(())
    }

    /// How many objects the pack holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The whole pack: the count filled in and the checksum appended.
    pub fn finish(mut self) -> Vec<u8> {
        self.data[8..12].copy_from_slice(&self.count.to_be_bytes());
        let sum = sha1_smol::Sha1::from(&self.data).digest().bytes();
        self.data.extend_from_slice(&sum);
        self.data
    }

    fn compress(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // Fast: the integration's trees are mostly object ids, which do not compress.
        let mut z = flate2::write::ZlibEncoder::new(&mut self.data, flate2::Compression::fast());
        z.write_all(bytes)?;
        z.finish()?;
        Ok(())
    }
}

/// Pack entry type of a delta against an earlier entry of the same pack.
const OFS_DELTA: u8 = 6;

fn type_code(kind: ObjectType) -> u8 {
    match kind {
        ObjectType::Commit => 1,
        ObjectType::Tree => 2,
        ObjectType::Blob => 3,
        ObjectType::Tag => 4,
        // `Any` and `Unknown` are never stored; a blob is the harmless reading.
        _ => 3,
    }
}

/// The entry header: the type in bits 4–6 of the first byte, the size in its low four bits and
/// then seven bits a byte, low bits first, the high bit saying another byte follows.
fn entry_header(out: &mut Vec<u8>, code: u8, size: usize) {
    let mut size = size as u64;
    let mut byte = (code << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// How far back an `OFS_DELTA`'s base starts: seven bits a byte, high bits first, each
/// continued byte standing for one more than its bits (git's encoding, no two spellings).
fn ofs_distance(out: &mut Vec<u8>, distance: usize) {
    let mut n = distance as u64;
    let mut bytes = vec![(n & 0x7f) as u8];
    n >>= 7;
    while n > 0 {
        n -= 1;
        bytes.push(0x80 | (n & 0x7f) as u8);
        n >>= 7;
    }
    bytes.reverse();
    out.extend_from_slice(&bytes);
}

/// A size in a delta's header: seven bits a byte, low bits first.
fn delta_size(out: &mut Vec<u8>, size: usize) {
    let mut n = size as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Largest size one copy instruction names (three size bytes).
const MAX_COPY: usize = 0xff_ffff;
/// Largest run one insert instruction carries.
const MAX_INSERT: usize = 0x7f;

/// A delta turning `base` into `target`: a copy of their common start, the target's middle
/// inserted, a copy of their common end.
fn delta(base: &[u8], target: &[u8]) -> Vec<u8> {
    let prefix = base.iter().zip(target).take_while(|(a, b)| a == b).count();
    let room = base.len().min(target.len()) - prefix;
    let suffix = base
        .iter()
        .rev()
        .zip(target.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = Vec::with_capacity(16 + target.len() - prefix - suffix);
    delta_size(&mut out, base.len());
    delta_size(&mut out, target.len());
    copy(&mut out, 0, prefix);
    for chunk in target[prefix..target.len() - suffix].chunks(MAX_INSERT) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    copy(&mut out, base.len() - suffix, suffix);
    out
}

/// Copy instructions for `len` bytes of the base from `offset`: a flag byte, then only the
/// offset's and size's non-zero bytes.
fn copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let n = len.min(MAX_COPY);
        let at = out.len();
        out.push(0x80);
        for i in 0..4 {
            let b = ((offset >> (8 * i)) & 0xff) as u8;
            if b != 0 {
                out[at] |= 1 << i;
                out.push(b);
            }
        }
        for i in 0..3 {
            let b = ((n >> (8 * i)) & 0xff) as u8;
            if b != 0 {
                out[at] |= 1 << (4 + i);
                out.push(b);
            }
        }
        offset += n;
        len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a delta as git does: the check that the format above is git's.
    fn apply(base: &[u8], delta: &[u8]) -> Vec<u8> {
        fn size(d: &[u8], at: &mut usize) -> usize {
            let (mut n, mut shift) = (0usize, 0);
            loop {
                let b = d[*at];
                *at += 1;
                n |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    return n;
                }
            }
        }
        let mut at = 0;
        assert_eq!(size(delta, &mut at), base.len());
        let want = size(delta, &mut at);
        let mut out = Vec::new();
        while at < delta.len() {
            let op = delta[at];
            at += 1;
            if op & 0x80 != 0 {
                let (mut off, mut len) = (0usize, 0usize);
                for i in 0..4 {
                    if op & (1 << i) != 0 {
                        off |= (delta[at] as usize) << (8 * i);
                        at += 1;
                    }
                }
                for i in 0..3 {
                    if op & (1 << (4 + i)) != 0 {
                        len |= (delta[at] as usize) << (8 * i);
                        at += 1;
                    }
                }
                if len == 0 {
                    len = 0x10000;
                }
                out.extend_from_slice(&base[off..off + len]);
            } else {
                let n = op as usize;
                out.extend_from_slice(&delta[at..at + n]);
                at += n;
            }
        }
        assert_eq!(out.len(), want);
        out
    }

    #[test]
    fn deltas_rebuild_their_target() {
        let cases: [(&[u8], &[u8]); 7] = [
            (b"abcdef", b"abcXdef"),
            (b"abcdef", b"abcdef"),
            (b"", b"new"),
            (b"old", b""),
            (b"aaaa", b"aaaaaa"),
            (b"prefix only", b"prefix"),
            (b"xyz", b"completely different and longer than the base"),
        ];
        for (base, target) in cases {
            assert_eq!(apply(base, &delta(base, target)), target, "{base:?}");
        }
        // Sizes and offsets past one byte, and an insert longer than one instruction.
        let base: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut target = base.clone();
        target.splice(40_000..40_010, std::iter::repeat_n(7u8, 300));
        assert_eq!(apply(&base, &delta(&base, &target)), target);
    }

    #[test]
    fn offsets_are_encoded_as_git_reads_them() {
        // git's reader: c = first; ofs = c & 127; while c & 128 { ofs += 1; c = next;
        // ofs = (ofs << 7) + (c & 127) }
        for distance in [1usize, 127, 128, 16_511, 16_512, 2_113_663, 9_999_999] {
            let mut out = Vec::new();
            ofs_distance(&mut out, distance);
            let mut it = out.iter();
            let mut c = *it.next().expect("a byte");
            let mut ofs = (c & 127) as usize;
            while c & 128 != 0 {
                ofs += 1;
                c = *it.next().expect("a byte");
                ofs = (ofs << 7) + (c & 127) as usize;
            }
            assert_eq!(ofs, distance);
            assert!(it.next().is_none());
        }
    }

    #[test]
    fn a_written_pack_is_indexed_and_read_back_by_git() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let odb = repo.odb().expect("odb");
        // Trees that each change one entry of the one before: deltas, then whole again past
        // the depth limit.
        let mut pack = PackBuf::new();
        let mut previous: Option<(Oid, Vec<u8>)> = None;
        let mut ids = Vec::new();
        for i in 0..40u32 {
            let mut content = Vec::new();
            for j in 0..30u32 {
                let text = if j == i % 30 {
                    format!("{i} {j}")
                } else {
                    format!("{j}")
                };
                let blob = Oid::hash_object(ObjectType::Blob, text.as_bytes()).expect("hash");
                content.extend_from_slice(format!("100644 f{j:02}\0").as_bytes());
                content.extend_from_slice(blob.as_bytes());
            }
            let id = Oid::hash_object(ObjectType::Tree, &content).expect("hash");
            match &previous {
                Some((base, base_content)) => pack
                    .add_against(id, ObjectType::Tree, &content, *base, base_content)
                    .expect("add"),
                None => pack.add(id, ObjectType::Tree, &content).expect("add"),
            }
            ids.push((id, content.clone()));
            previous = Some((id, content));
        }
        let blob = b"a blob\n".repeat(100);
        let blob_id = Oid::hash_object(ObjectType::Blob, &blob).expect("hash");
        pack.add(blob_id, ObjectType::Blob, &blob).expect("add");
        pack.add(blob_id, ObjectType::Blob, &blob)
            .expect("added once");
        assert_eq!(pack.len(), 41);
        let bytes = pack.finish();
        let mut writer = odb.packwriter().expect("writer");
        writer.write_all(&bytes).expect("write");
        writer.commit().expect("indexed");
        let odb = repo.odb().expect("odb again");
        for (id, content) in &ids {
            let read = odb.read(*id).expect("read back");
            assert_eq!(read.kind(), ObjectType::Tree);
            assert_eq!(read.data(), &content[..]);
        }
        assert_eq!(odb.read(blob_id).expect("blob").data(), &blob[..]);
        // git itself agrees.
        let out = std::process::Command::new("git")
            .args(["fsck", "--full", "--no-dangling"])
            .current_dir(dir.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let packs: Vec<_> = std::fs::read_dir(dir.path().join(".git/objects/pack"))
            .expect("pack dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .collect();
        assert_eq!(packs.len(), 1);
        let verify = std::process::Command::new("git")
            .args(["verify-pack", "-v"])
            .arg(packs[0].path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git runs");
        let said = String::from_utf8_lossy(&verify.stdout);
        assert!(verify.status.success(), "{said}");
        assert!(
            said.contains("chain length = 16"),
            "deltas chained up to the limit: {said}"
        );
        assert!(!said.contains("chain length = 17"), "{said}");
    }
}
