//! `fanout retry`: the new integration as a descendant of the run's earlier one, so a branch
//! that `fanout merge` already brought the earlier one into fast-forwards to it.

use git2::{Oid, Repository};

use super::shared::{RunError, Shared};
use crate::git::GitContext;

/// The commit the integration branch gets: `head` itself, or — when the run had an earlier
/// integration that `head` does not descend from — a commit whose parents are the earlier
/// head and `head`, and whose tree is `head`'s (the integration built again replaces the
/// earlier one's content, retried tasks' changes included).
pub(crate) fn onto_earlier(shared: &Shared, repo: &Repository, head: Oid) -> Result<Oid, RunError> {
    let Some(earlier) = shared.earlier_integration.filter(|&e| e != head) else {
        return Ok(head);
    };
    // Gone (collected after `fanout clean`): the new integration stands alone.
    let Ok(earlier) = repo.find_commit(earlier) else {
        return Ok(head);
    };
    let new = repo
        .find_commit(head)
        .ctx(|| format!("cannot read the integration commit {head}"))?;
    if earlier.tree_id() == new.tree_id() {
        return Ok(earlier.id());
    }
    let tree = new
        .tree()
        .ctx(|| "cannot read the integration tree".into())?;
    let message = format!(
        "fanout: retry of run {run}\n\nThe run's integration built again with the tasks that ran again.\n\nFanout-Run: {run}\n",
        run = shared.run_id
    );
    let sig = crate::git::fanout_signature()?;
    let commit = repo
        .commit(None, &sig, &sig, &message, &tree, &[&earlier, &new])
        .ctx(|| "cannot create the retry's integration commit".into())?;
    Ok(commit)
}
