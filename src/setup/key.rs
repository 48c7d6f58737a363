//! The key of a setup layer: what decides whether a layer made once may serve another start
//! tree. The command, and the content of the `inputs` files at the start tree — or, without
//! `inputs`, the start tree itself.

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

use super::SetupError;

/// Hex digits of the key kept in folder and log names.
const KEY_LEN: usize = 16;

/// The key of the layer `command` makes at `start` (a commit).
pub fn layer_key(
    repo: &Repository,
    start: Oid,
    command: &[String],
    inputs: Option<&[String]>,
) -> Result<String, SetupError> {
    let tree = repo
        .find_commit(start)
        .and_then(|c| c.tree())
        .map_err(|e| SetupError::Key(format!("cannot read the tree of {start}: {e}")))?;
    let mut text = String::from("fanout setup layer 1\n");
    for arg in command {
        // Length-prefixed: no two argv lists give the same text.
        text.push_str(&format!("arg {} {arg}\n", arg.len()));
    }
    match inputs {
        None => text.push_str(&format!("tree {}\n", tree.id())),
        Some(globs) => {
            let set = glob_set(globs)?;
            let mut found: Vec<String> = Vec::new();
            tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
                if entry.kind() != Some(ObjectType::Tree) {
                    let path = format!("{dir}{}", String::from_utf8_lossy(entry.name_bytes()));
                    if set.is_match(&path) {
                        found.push(format!(
                            "input {:o} {} {} {path}\n",
                            entry.filemode(),
                            entry.id(),
                            path.len()
                        ));
                    }
                }
                TreeWalkResult::Ok
            })
            .map_err(|e| SetupError::Key(format!("cannot walk the tree of {start}: {e}")))?;
            found.sort();
            for g in globs {
                text.push_str(&format!("glob {} {g}\n", g.len()));
            }
            text.extend(found);
        }
    }
    let id = Oid::hash_object(ObjectType::Blob, text.as_bytes())
        .map_err(|e| SetupError::Key(format!("cannot hash the setup key: {e}")))?;
    Ok(id.to_string()[..KEY_LEN].to_string())
}

/// The `inputs` globs, matched like task `paths`: `*` stays within a folder.
fn glob_set(globs: &[String]) -> Result<globset::GlobSet, SetupError> {
    let mut b = globset::GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| SetupError::Key(format!("setup input {g:?}: {e}")))?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| SetupError::Key(format!("setup inputs: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &Repository, files: &[(&str, &str)]) -> Oid {
        let mut b = repo.treebuilder(None).expect("builder");
        for (name, content) in files {
            let blob = repo.blob(content.as_bytes()).expect("blob");
            b.insert(name, blob, 0o100644).expect("insert");
        }
        let tree = repo.find_tree(b.write().expect("tree")).expect("tree");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        repo.commit(None, &sig, &sig, "c", &tree, &[])
            .expect("commit")
    }

    #[test]
    fn inputs_decide_the_key_and_the_rest_of_the_tree_does_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = Repository::init(dir.path()).expect("init");
        let a = commit(&repo, &[("package-lock.json", "1"), ("src.js", "a")]);
        let b = commit(&repo, &[("package-lock.json", "1"), ("src.js", "b")]);
        let c = commit(&repo, &[("package-lock.json", "2"), ("src.js", "a")]);
        let cmd = vec!["npm".to_string(), "ci".to_string()];
        let inputs = vec!["package-lock.json".to_string()];
        let key = |at, inputs: Option<&[String]>| layer_key(&repo, at, &cmd, inputs).expect("key");
        assert_eq!(key(a, Some(&inputs)), key(b, Some(&inputs)));
        assert_ne!(key(a, Some(&inputs)), key(c, Some(&inputs)));
        // Without inputs, every distinct tree has its own layer.
        assert_ne!(key(a, None), key(b, None));
        assert_eq!(key(a, None), key(a, None));
        let other = vec!["npm".to_string(), "install".to_string()];
        assert_ne!(
            key(a, Some(&inputs)),
            layer_key(&repo, a, &other, Some(&inputs)).expect("key")
        );
    }
}
