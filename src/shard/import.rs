//! Reading hand-overs into the combining repository: each bundle's objects unpacked (the
//! remote's refs of a run fetched under a namespace of their own), the manifests read, and
//! per shard the newest hand-over chosen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::HandOverError;
use super::git_cli::git;
use super::manifest::Manifest;
use super::refs;
use crate::report::RunReport;

/// Where hand-overs come from.
pub enum Sources {
    Bundles(Vec<PathBuf>),
    Remote { remote: String, run: String },
}

/// One shard's hand-over, fetched.
pub struct Fetched {
    pub manifest: Manifest,
    /// The shard's own report (each task's entry: gates, attempts, durations).
    pub report: Option<RunReport>,
    pub events: Vec<u8>,
    /// The bundle file or remote it came from, for messages.
    pub origin: String,
}

/// What the hand-overs say together: one run on one base in N shards, the newest hand-over
/// of each shard, and notes on what was superseded.
pub struct Gathered {
    pub run_id: String,
    pub base: String,
    pub count: u32,
    pub shards: BTreeMap<u32, Fetched>,
    pub notes: Vec<String>,
}

/// Bundle files named by `--from`: files as given; a folder's `*.bundle` files (sorted).
pub fn expand_from(from: &[PathBuf]) -> Result<Vec<PathBuf>, HandOverError> {
    let mut out = Vec::new();
    for p in from {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| HandOverError::Read {
                path: p.display().to_string(),
                detail: e.to_string(),
            })?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "bundle") && f.is_file())
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Brings every hand-over's objects into the repository and reads its manifests.
pub fn fetch(repo_path: &Path, sources: &Sources) -> Result<Vec<Fetched>, HandOverError> {
    let repo = git2::Repository::open(repo_path).map_err(HandOverError::git2)?;
    let mut out = Vec::new();
    match sources {
        Sources::Bundles(files) => {
            let pack_dir = repo.commondir().join("objects/pack");
            let before = super::packs::indexes(&pack_dir);
            for file in files {
                out.extend(unbundle(&repo, repo_path, file)?);
            }
            let new = super::packs::indexes(&pack_dir)
                .difference(&before)
                .cloned()
                .collect();
            super::packs::merge_new(repo_path, &pack_dir, &new);
        }
        Sources::Remote { remote, run } => {
            let spec = format!("+refs/fanout/{run}/*:{}/{run}/*", refs::import_prefix(0));
            git(
                repo_path,
                &[
                    "fetch",
                    "-q",
                    "--no-tags",
                    "--no-write-fetch-head",
                    remote,
                    &spec,
                ],
                None,
            )?;
            let glob = format!("{}/*", refs::import_prefix(0));
            let mut heads = Vec::new();
            for r in repo.references_glob(&glob).map_err(HandOverError::git2)? {
                let r = r.map_err(HandOverError::git2)?;
                if let (Some(name), Some(oid)) = (r.name(), r.target()) {
                    heads.push((oid, name.to_string()));
                }
            }
            out.extend(read_manifests(&repo, &heads, remote)?);
        }
    }
    Ok(out)
}

/// A bundle's objects unpacked into the repository (no refs: the manifest names the commits,
/// and the combined run's task branches will hold them), and its manifests read.
fn unbundle(
    repo: &git2::Repository,
    repo_path: &Path,
    file: &Path,
) -> Result<Vec<Fetched>, HandOverError> {
    let origin = file.display().to_string();
    let abs = std::path::absolute(file).unwrap_or(file.to_path_buf());
    let listed = git(
        repo_path,
        &["bundle", "unbundle", &abs.to_string_lossy()],
        None,
    )
    .map_err(|e| HandOverError::Bundle {
        path: origin.clone(),
        detail: e.to_string(),
    })?;
    let heads: Vec<(git2::Oid, String)> = listed
        .lines()
        .filter_map(|l| {
            let (oid, name) = l.split_once(' ')?;
            Some((git2::Oid::from_str(oid).ok()?, name.to_string()))
        })
        .collect();
    read_manifests(repo, &heads, &origin)
}

/// The manifests among `heads` (object id, ref name).
fn read_manifests(
    repo: &git2::Repository,
    heads: &[(git2::Oid, String)],
    origin: &str,
) -> Result<Vec<Fetched>, HandOverError> {
    let mut out = Vec::new();
    for (oid, name) in heads {
        if !name.starts_with("refs/fanout/") && !name.starts_with("refs/fanout-import/") {
            continue;
        }
        if !name.ends_with("/manifest") {
            continue;
        }
        let tree = repo
            .find_commit(*oid)
            .and_then(|c| c.tree())
            .map_err(HandOverError::git2)?;
        let file = |name: &str| -> Option<Vec<u8>> {
            let e = tree.get_name(name)?;
            let blob = repo.find_blob(e.id()).ok()?;
            Some(blob.content().to_vec())
        };
        let bad = |detail: String| HandOverError::Bundle {
            path: origin.to_string(),
            detail,
        };
        let bytes = file(refs::MANIFEST_FILE).ok_or_else(|| bad("no manifest.json".into()))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("unreadable manifest: {e}")))?;
        if manifest.format != super::manifest::FORMAT {
            return Err(bad(format!("manifest format {} is not 1", manifest.format)));
        }
        let report = file(refs::REPORT_FILE).and_then(|b| serde_json::from_slice(&b).ok());
        out.push(Fetched {
            manifest,
            report,
            events: file(refs::EVENTS_FILE).unwrap_or_default(),
            origin: origin.to_string(),
        });
    }
    Ok(out)
}

/// Checks that the hand-overs belong to one run (`run` when given), one base and one shard
/// count, and keeps the newest hand-over of each shard.
pub fn gather(fetched: Vec<Fetched>, run: Option<&str>) -> Result<Gathered, HandOverError> {
    let mismatch = |what: &str, a: &Fetched, want: &str, got: &str| HandOverError::Mismatch {
        origin: a.origin.clone(),
        detail: format!("its {what} is {got}, the others' {want}"),
    };
    let Some(first) = fetched.first() else {
        return Err(HandOverError::Nothing);
    };
    let run_id = run.unwrap_or(&first.manifest.run_id).to_string();
    let (base, count) = (first.manifest.base.clone(), first.manifest.shard.count);
    let mut shards: BTreeMap<u32, Fetched> = BTreeMap::new();
    let mut notes = Vec::new();
    for f in fetched {
        let m = &f.manifest;
        if m.run_id != run_id {
            return Err(mismatch("run id", &f, &run_id, &m.run_id));
        }
        if m.base != base {
            return Err(mismatch("base commit", &f, &base, &m.base));
        }
        if m.shard.count != count {
            return Err(mismatch(
                "shard count",
                &f,
                &count.to_string(),
                &m.shard.count.to_string(),
            ));
        }
        let k = m.shard.index;
        match shards.get(&k) {
            Some(old) if old.manifest.order_key() >= m.order_key() => {
                notes.push(superseded(&f, old));
            }
            Some(old) => {
                notes.push(superseded(old, &f));
                shards.insert(k, f);
            }
            None => {
                shards.insert(k, f);
            }
        }
    }
    Ok(Gathered {
        run_id,
        base,
        count,
        shards,
        notes,
    })
}

fn superseded(old: &Fetched, new: &Fetched) -> String {
    format!(
        "shard {}: the hand-over of {} (attempt {}, host {}) supersedes the one of {} (attempt {}, host {})",
        new.manifest.shard,
        new.origin,
        new.manifest.attempt,
        new.manifest.host,
        old.origin,
        old.manifest.attempt,
        old.manifest.host
    )
}

/// Removes every import ref (the chosen commits then live on the run's task branches).
pub fn drop_imports(repo_path: &Path) {
    let Ok(repo) = git2::Repository::open(repo_path) else {
        return;
    };
    let names: Vec<String> = repo
        .references_glob("refs/fanout-import/*")
        .map(|it| {
            it.flatten()
                .filter_map(|r| r.name().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for n in names {
        if let Ok(mut r) = repo.find_reference(&n) {
            let _ = r.delete();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::engine::Shard;

    fn handed(index: u32, attempt: u64, created_ms: u64, base: &str) -> Fetched {
        Fetched {
            manifest: Manifest {
                format: 1,
                run_id: "r".into(),
                shard: Shard { index, count: 2 },
                base: base.into(),
                host: "h".into(),
                created_ms,
                attempt,
                tasks: Vec::new(),
            },
            report: None,
            events: Vec::new(),
            origin: format!("s{index}-a{attempt}-t{created_ms}"),
        }
    }

    #[test]
    fn the_newest_hand_over_of_a_shard_wins_in_any_order() {
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let all = [
                handed(1, 2, 10, "b"),
                handed(1, 1, 99, "b"),
                handed(2, 0, 5, "b"),
            ];
            let picked: Vec<Fetched> = order
                .iter()
                .map(|&i| {
                    handed(
                        all[i].manifest.shard.index,
                        all[i].manifest.attempt,
                        all[i].manifest.created_ms,
                        "b",
                    )
                })
                .collect();
            let g = gather(picked, None).expect("one run");
            assert_eq!(g.shards[&1].manifest.attempt, 2, "{order:?}");
            assert_eq!(g.shards.len(), 2);
            assert_eq!(g.notes.len(), 1);
        }
        let g = gather(vec![handed(1, 0, 10, "b"), handed(1, 0, 20, "b")], None).expect("one run");
        assert_eq!(g.shards[&1].manifest.created_ms, 20);
    }

    #[test]
    fn other_bases_runs_and_counts_are_refused() {
        assert!(matches!(
            gather(vec![handed(1, 0, 1, "a"), handed(2, 0, 1, "b")], None),
            Err(HandOverError::Mismatch { .. })
        ));
        assert!(matches!(
            gather(vec![handed(1, 0, 1, "a")], Some("other")),
            Err(HandOverError::Mismatch { .. })
        ));
        let mut three = handed(2, 0, 1, "a");
        three.manifest.shard.count = 3;
        assert!(gather(vec![handed(1, 0, 1, "a"), three], None).is_err());
        assert!(matches!(
            gather(Vec::new(), None),
            Err(HandOverError::Nothing)
        ));
    }
}
