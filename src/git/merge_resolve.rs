//! Resolves the conflicts of an in-memory merge index that the task file's `merge` rules
//! cover: a content conflict in a matching file becomes its union (or ours, or theirs).

use git2::{Index, IndexConflict, IndexEntry, Oid, Repository};

use super::line_merge::union_merge;
use super::merge_rules::{MergeRules, MergeStrategy};
use super::{GitContext, GitError};

/// Stage bits of an index entry's flags (0: merged; 1–3: ancestor, ours, theirs).
const STAGE_MASK: u16 = 0x3000;

/// Resolves what `rules` cover in `index`; the paths still in conflict, sorted.
pub fn resolve(
    repo: &Repository,
    index: &mut Index,
    rules: &MergeRules,
) -> Result<Vec<String>, GitError> {
    let conflicts: Vec<IndexConflict> = index
        .conflicts()
        .ctx(|| "cannot list conflicts".into())?
        .collect::<Result<_, _>>()
        .ctx(|| "cannot read a conflict".into())?;
    let mut left = Vec::new();
    for c in conflicts {
        let paths = conflict_paths(&c);
        let resolved = match (paths.as_slice(), &c.our, &c.their) {
            ([path], Some(ours), Some(theirs)) => match rules.strategy(path) {
                Some(strategy) => merged_entry(repo, strategy, &c, ours, theirs)?,
                None => None,
            },
            _ => None,
        };
        match resolved {
            Some(entry) => {
                let path = entry.path.clone();
                index
                    .conflict_remove(std::path::Path::new(&String::from_utf8_lossy(&path)[..]))
                    .ctx(|| "cannot resolve a conflict".into())?;
                index
                    .add(&entry)
                    .ctx(|| "cannot resolve a conflict".into())?;
            }
            None => left.extend(paths),
        }
    }
    left.sort();
    left.dedup();
    Ok(left)
}

/// The paths a conflict names (one unless a rename is involved).
fn conflict_paths(c: &IndexConflict) -> Vec<String> {
    let mut paths: Vec<String> = [&c.our, &c.their, &c.ancestor]
        .into_iter()
        .flatten()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The resolved entry of a content conflict (both sides hold a file), or `None` when the
/// strategy cannot resolve it (a binary file, a link, a submodule).
fn merged_entry(
    repo: &Repository,
    strategy: MergeStrategy,
    c: &IndexConflict,
    ours: &IndexEntry,
    theirs: &IndexEntry,
) -> Result<Option<IndexEntry>, GitError> {
    let is_file = |e: &IndexEntry| e.mode == 0o100644 || e.mode == 0o100755;
    if !is_file(ours) || !is_file(theirs) {
        return Ok(None);
    }
    let id = match strategy {
        MergeStrategy::Ours => ours.id,
        MergeStrategy::Theirs => theirs.id,
        MergeStrategy::Union => {
            let read = |id: Oid| -> Result<Vec<u8>, GitError> {
                let blob = repo
                    .find_blob(id)
                    .ctx(|| format!("cannot read blob {id}"))?;
                Ok(blob.content().to_vec())
            };
            let base = match &c.ancestor {
                Some(a) if is_file(a) => read(a.id)?,
                Some(_) => return Ok(None),
                None => Vec::new(),
            };
            let (o, t) = (read(ours.id)?, read(theirs.id)?);
            if [&base, &o, &t].iter().any(|b| b.contains(&0)) {
                return Ok(None);
            }
            repo.blob(&union_merge(&base, &o, &t))
                .ctx(|| "cannot write the merged file".into())?
        }
    };
    // Theirs's mode when it changed it, else ours.
    let mode = match (&c.ancestor, strategy) {
        (_, MergeStrategy::Ours) => ours.mode,
        (_, MergeStrategy::Theirs) => theirs.mode,
        (Some(a), _) if a.mode != theirs.mode => theirs.mode,
        _ => ours.mode,
    };
    Ok(Some(super::index_entry(
        ours.path.clone(),
        mode,
        id,
        ours.flags & !STAGE_MASK,
    )))
}
