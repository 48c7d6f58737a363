//! Writing a shard's hand-over after its run: the refs of its verified commits and of its
//! manifest, then a bundle file (`--bundle`) or a push (`--push`).

use std::path::Path;

use super::engine::Shard;
use super::error::HandOverError;
use super::git_cli::git;
use super::manifest::{verified_commit, Manifest, ManifestTask, FORMAT};
use super::refs;
use crate::report::RunReport;

/// Who wrote the hand-over, and when.
pub struct Origin {
    pub host: String,
    pub attempt: u64,
    pub created_ms: u64,
}

/// Makes the hand-over refs of a finished shard run (from its report and event stream) and
/// returns the refs to hand over, the manifest ref last.
pub fn make_refs(
    repo_path: &Path,
    run_dir: &Path,
    shard: Shard,
    origin: Origin,
) -> Result<(Manifest, Vec<String>), HandOverError> {
    let layout = crate::run_dir::RunDir::new(run_dir);
    let report_bytes = std::fs::read(layout.report()).map_err(|e| HandOverError::Read {
        path: layout.report().display().to_string(),
        detail: e.to_string(),
    })?;
    let report: RunReport =
        serde_json::from_slice(&report_bytes).map_err(|e| HandOverError::Read {
            path: layout.report().display().to_string(),
            detail: e.to_string(),
        })?;
    let events_path = run_dir.join(crate::runner::events::RUN_EVENTS);
    let events = std::fs::read(&events_path).unwrap_or_default();
    let manifest = Manifest {
        format: FORMAT,
        run_id: report.run_id.clone(),
        shard,
        base: report.base.clone(),
        host: origin.host,
        created_ms: origin.created_ms,
        attempt: origin.attempt,
        tasks: report
            .tasks
            .iter()
            .map(|t| ManifestTask {
                id: t.id.clone(),
                status: t.status,
                commit: verified_commit(t),
            })
            .collect(),
    };
    let repo = git2::Repository::open(repo_path).map_err(HandOverError::git2)?;
    let mut names = Vec::new();
    for t in &manifest.tasks {
        let Some(c) = &t.commit else { continue };
        let oid = git2::Oid::from_str(c).map_err(HandOverError::git2)?;
        let name = refs::task_ref(&manifest.run_id, shard.index, &t.id);
        repo.reference(&name, oid, true, "fanout hand-over")
            .map_err(HandOverError::git2)?;
        names.push(name);
    }
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| HandOverError::Read {
        path: "manifest".into(),
        detail: e.to_string(),
    })?;
    let commit = manifest_commit(
        &repo,
        &[
            (refs::MANIFEST_FILE, &json),
            (refs::REPORT_FILE, &report_bytes),
            (refs::EVENTS_FILE, &events),
        ],
        &format!("fanout hand-over: run {} shard {shard}", manifest.run_id),
    )?;
    let name = refs::manifest_ref(&manifest.run_id, shard.index);
    repo.reference(&name, commit, true, "fanout hand-over")
        .map_err(HandOverError::git2)?;
    names.push(name);
    Ok((manifest, names))
}

/// A parentless commit whose tree holds `files`.
fn manifest_commit(
    repo: &git2::Repository,
    files: &[(&str, &[u8])],
    message: &str,
) -> Result<git2::Oid, HandOverError> {
    let mut tree = repo.treebuilder(None).map_err(HandOverError::git2)?;
    for (name, bytes) in files {
        let blob = repo.blob(bytes).map_err(HandOverError::git2)?;
        tree.insert(name, blob, 0o100644)
            .map_err(HandOverError::git2)?;
    }
    let tree = tree.write().map_err(HandOverError::git2)?;
    let tree = repo.find_tree(tree).map_err(HandOverError::git2)?;
    let sig = git2::Signature::now("fanout", "fanout@localhost").map_err(HandOverError::git2)?;
    repo.commit(None, &sig, &sig, message, &tree, &[])
        .map_err(HandOverError::git2)
}

/// `--bundle PATH`: one git bundle of the hand-over refs holding only the objects not in the
/// base (written beside PATH, then renamed over it).
pub fn write_bundle(
    repo_path: &Path,
    base: &str,
    names: &[String],
    path: &Path,
) -> Result<u64, HandOverError> {
    let tmp = path.with_extension("partial");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| HandOverError::Write {
            path: dir.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    let target = std::path::absolute(&tmp).unwrap_or(tmp.clone());
    let revs = format!("{}\n^{base}\n", names.join("\n"));
    let tmp_str = target.to_string_lossy();
    git(
        repo_path,
        &["bundle", "create", "-q", &tmp_str, "--stdin"],
        Some(&revs),
    )?;
    std::fs::rename(&tmp, path).map_err(|e| HandOverError::Write {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}

/// `--push REMOTE`: the shard's refs pushed (forced: a re-run shard replaces its hand-over;
/// refs of an earlier attempt the new one no longer has are deleted).
pub fn push(repo_path: &Path, remote: &str, run: &str, shard: u32) -> Result<(), HandOverError> {
    let prefix = refs::shard_prefix(run, shard);
    let spec = format!("+{prefix}/*:{prefix}/*");
    git(
        repo_path,
        &["push", "-q", "--prune", "--no-verify", remote, &spec],
        None,
    )?;
    Ok(())
}
