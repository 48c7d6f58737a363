/*!
The packs a combine's bundles brought, made one. Each `git bundle unbundle` leaves a pack of
its own; with a hundred bundles every object lookup that misses asks each pack's index in turn,
and every object libgit2 writes (a merged tree, an integration commit) first rescans the pack
folder. Measured: 10 000 tasks combined from 100 bundles took twice as long as from one bundle
holding the same commits. So the new packs are packed again as one (`git pack-objects` of just
their objects: O(what the shards handed over), not O(repository)) and then removed.

This only saves time: where anything of it fails, the packs stay as they are.
*/

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::git_cli::git;

/// The `pack-*.idx` files of the repository's pack folder.
pub fn indexes(pack_dir: &Path) -> BTreeSet<PathBuf> {
    let Ok(dir) = std::fs::read_dir(pack_dir) else {
        return BTreeSet::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pack-") && n.ends_with(".idx"))
        })
        .collect()
}

/// Packs the objects of the packs whose indexes are `new` as one pack, then removes them.
/// Returns how many packs were merged (0 when it did nothing).
pub fn merge_new(repo_path: &Path, pack_dir: &Path, new: &BTreeSet<PathBuf>) -> usize {
    if new.len() < 2 {
        return 0;
    }
    let mut ids = String::new();
    for idx in new {
        let Some(listed) = std::fs::read(idx).ok().and_then(|b| object_ids(&b)) else {
            return 0;
        };
        for id in listed {
            ids.push_str(&id);
            ids.push('\n');
        }
    }
    let base = pack_dir.join("pack");
    let Ok(out) = git(
        repo_path,
        &["pack-objects", "-q", &base.to_string_lossy()],
        Some(&ids),
    ) else {
        return 0;
    };
    let made = pack_dir.join(format!("pack-{}.idx", out.trim()));
    if !made.is_file() || new.contains(&made) {
        return 0;
    }
    for idx in new {
        for ext in ["pack", "rev", "bitmap", "mtimes", "keep", "promisor", "idx"] {
            let _ = std::fs::remove_file(idx.with_extension(ext));
        }
    }
    new.len()
}

/// The object ids a version-2 pack index lists (SHA-1), or `None` for any other format.
fn object_ids(idx: &[u8]) -> Option<Vec<String>> {
    const HEADER: usize = 8;
    const FANOUT: usize = 256 * 4;
    if idx.len() < HEADER + FANOUT || idx[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return None;
    }
    let last = &idx[HEADER + FANOUT - 4..HEADER + FANOUT];
    let count = u32::from_be_bytes(last.try_into().ok()?) as usize;
    let ids = idx.get(HEADER + FANOUT..HEADER + FANOUT + count.checked_mul(20)?)?;
    Some(
        ids.chunks_exact(20)
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_SYSTEM", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn two_unbundled_packs_become_one_with_every_object() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        run(&src, &["init", "-q", "-b", "main"]);
        let commit = |name: &str| {
            std::fs::write(src.join(name), name).unwrap();
            run(&src, &["add", name]);
            run(
                &src,
                &[
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@e",
                    "commit",
                    "-qm",
                    name,
                ],
            );
            run(&src, &["rev-parse", "HEAD"]).trim().to_string()
        };
        let base = commit("base");
        run(tmp.path(), &["clone", "-q", "src", "dst"]);
        let mut bundles = Vec::new();
        let mut heads = Vec::new();
        for k in 0..2 {
            let head = commit(&format!("f{k}"));
            let b = tmp.path().join(format!("{k}.bundle"));
            let range = format!("{}..main", if k == 0 { &base } else { &heads[0] });
            run(
                &src,
                &["bundle", "create", "-q", b.to_str().unwrap(), &range],
            );
            bundles.push(b);
            heads.push(head);
        }
        let pack_dir = dst.join(".git/objects/pack");
        let before = indexes(&pack_dir);
        for b in &bundles {
            run(&dst, &["bundle", "unbundle", b.to_str().unwrap()]);
        }
        let new: BTreeSet<PathBuf> = indexes(&pack_dir).difference(&before).cloned().collect();
        assert_eq!(new.len(), 2);
        assert_eq!(merge_new(&dst, &pack_dir, &new), 2);
        let after: BTreeSet<PathBuf> = indexes(&pack_dir).difference(&before).cloned().collect();
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(new
            .iter()
            .all(|i| !i.exists() && !i.with_extension("pack").exists()));
        for h in &heads {
            run(&dst, &["cat-file", "-e", &format!("{h}^{{tree}}")]);
        }
        run(
            &dst,
            &["fsck", "--connectivity-only", "--no-dangling", &heads[1]],
        );
        // One pack is left alone.
        assert_eq!(merge_new(&dst, &pack_dir, &after), 0);
    }

    #[test]
    fn an_index_of_another_format_is_not_read() {
        assert_eq!(object_ids(b"not an index"), None);
        let mut v1 = vec![0u8; 8 + 1024];
        v1[..4].copy_from_slice(&[0xff, b't', b'O', b'c']);
        v1[7] = 1;
        assert_eq!(object_ids(&v1), None);
    }
}
