/*!
In-memory integration: task commits are cherry-picked one after another onto a head that
starts at the base, each as a tree merge in memory (no checkout, no index file, no working
tree). A commit that conflicts with what is already integrated is skipped and its conflicting
paths returned as data.
*/

use git2::{MergeOptions, Oid, Repository};

use super::{fanout_signature, GitContext, GitError};

#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// Integrated; the new head.
    Merged(Oid),
    /// Nothing was applied; these paths conflict.
    Conflict(Vec<String>),
}

/// A moving integration head.
pub struct Integrator<'r> {
    repo: &'r Repository,
    head: Oid,
}

impl<'r> Integrator<'r> {
    pub fn new(repo: &'r Repository, start: Oid) -> Self {
        Integrator { repo, head: start }
    }

    pub fn head(&self) -> Oid {
        self.head
    }

    /// Cherry-picks `commit` (its change against its first parent) onto the head.
    pub fn apply(&mut self, commit: Oid, message: &str) -> Result<Applied, GitError> {
        let repo = self.repo;
        let pick = repo
            .find_commit(commit)
            .ctx(|| format!("commit {commit} not found"))?;
        let ours = repo
            .find_commit(self.head)
            .ctx(|| format!("integration head {} not found", self.head))?;
        let mut opts = MergeOptions::new();
        opts.find_renames(true).fail_on_conflict(false);
        let mut index = repo
            .cherrypick_commit(&pick, &ours, 0, Some(&opts))
            .ctx(|| format!("cannot merge commit {commit}"))?;
        if index.has_conflicts() {
            let mut paths = Vec::new();
            for c in index.conflicts().ctx(|| "cannot list conflicts".into())? {
                let c = c.ctx(|| "cannot read a conflict".into())?;
                for entry in [c.our, c.their, c.ancestor].into_iter().flatten() {
                    paths.push(String::from_utf8_lossy(&entry.path).into_owned());
                }
            }
            paths.sort();
            paths.dedup();
            return Ok(Applied::Conflict(paths));
        }
        let tree_id = index
            .write_tree_to(repo)
            .ctx(|| "cannot write the merged tree".into())?;
        if tree_id == ours.tree_id() {
            // The change is already integrated (e.g. two tasks made the same edit).
            return Ok(Applied::Merged(self.head));
        }
        let tree = repo
            .find_tree(tree_id)
            .ctx(|| "merged tree vanished".into())?;
        let sig = fanout_signature()?;
        let author = pick.author();
        let new = repo
            .commit(None, &author, &sig, message, &tree, &[&ours])
            .ctx(|| "cannot create the integration commit".into())?;
        self.head = new;
        Ok(Applied::Merged(new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn commit_file(repo: &Repository, parent: Option<Oid>, files: &[(&str, &str)]) -> Oid {
        let mut builder = match parent {
            Some(p) => {
                let tree = repo.find_commit(p).unwrap().tree().unwrap();
                repo.treebuilder(Some(&tree)).unwrap()
            }
            None => repo.treebuilder(None).unwrap(),
        };
        for (name, content) in files {
            let blob = repo.blob(content.as_bytes()).unwrap();
            builder.insert(Path::new(name), blob, 0o100644).unwrap();
        }
        let tree = repo.find_tree(builder.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let parents: Vec<_> = parent
            .map(|p| repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "m", &tree, &refs).unwrap()
    }

    #[test]
    fn integrates_disjoint_changes_and_reports_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let base = commit_file(&repo, None, &[("a.txt", "one\n"), ("b.txt", "two\n")]);
        let t1 = commit_file(&repo, Some(base), &[("a.txt", "ONE\n")]);
        let t2 = commit_file(&repo, Some(base), &[("b.txt", "TWO\n")]);
        let t3 = commit_file(&repo, Some(base), &[("a.txt", "uno\n")]);
        let mut integ = Integrator::new(&repo, base);
        assert!(matches!(integ.apply(t1, "t1").unwrap(), Applied::Merged(_)));
        assert!(matches!(integ.apply(t2, "t2").unwrap(), Applied::Merged(_)));
        assert_eq!(
            integ.apply(t3, "t3").unwrap(),
            Applied::Conflict(vec!["a.txt".into()])
        );
        let tree = repo.find_commit(integ.head()).unwrap().tree().unwrap();
        let read = |p: &str| {
            let e = tree.get_path(Path::new(p)).unwrap();
            String::from_utf8(repo.find_blob(e.id()).unwrap().content().to_vec()).unwrap()
        };
        assert_eq!(read("a.txt"), "ONE\n");
        assert_eq!(read("b.txt"), "TWO\n");
    }
}
