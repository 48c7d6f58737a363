//! The refs a hand-over uses: `refs/fanout/<run>/shard-<K>/task/<id>` for each verified commit,
//! `refs/fanout/<run>/shard-<K>/manifest` for a commit whose tree holds the manifest, the
//! shard's report and its event stream.

/// Where a shard's hand-over lives.
pub fn shard_prefix(run: &str, shard: u32) -> String {
    format!("refs/fanout/{run}/shard-{shard}")
}

pub fn task_ref(run: &str, shard: u32, task: &str) -> String {
    format!("{}/task/{task}", shard_prefix(run, shard))
}

pub fn manifest_ref(run: &str, shard: u32) -> String {
    format!("{}/manifest", shard_prefix(run, shard))
}

/// Where `combine --from-remote` fetches the remote's hand-overs to (`n` = 0), before it
/// chooses; bundles are unpacked without refs.
pub fn import_prefix(n: usize) -> String {
    format!("refs/fanout-import/{n}")
}

/// The files of the manifest commit's tree.
pub const MANIFEST_FILE: &str = "manifest.json";
pub const REPORT_FILE: &str = "report.json";
pub const EVENTS_FILE: &str = "events.jsonl";
