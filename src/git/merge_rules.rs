//! The task file's `merge` rules: which files (globs) resolve a content conflict of the
//! integration by a strategy of their own instead of ending the task `conflict`.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// How a content conflict in a matching file is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeStrategy {
    /// Both sides' lines, removals of either applied (see [`super::line_merge`]).
    Union,
    /// What is already integrated stays; the task's change to the file is dropped.
    Ours,
    /// The task's version of the file replaces what is integrated.
    Theirs,
}

impl MergeStrategy {
    pub const NAMES: [&'static str; 3] = ["union", "ours", "theirs"];

    pub fn parse(s: &str) -> Option<MergeStrategy> {
        match s {
            "union" => Some(MergeStrategy::Union),
            "ours" => Some(MergeStrategy::Ours),
            "theirs" => Some(MergeStrategy::Theirs),
            _ => None,
        }
    }
}

/// The rules, first match wins.
#[derive(Clone, Debug, Default)]
pub struct MergeRules {
    rules: Vec<(GlobSet, MergeStrategy)>,
}

impl MergeRules {
    /// Rules from (globs, strategy) pairs, in order; a glob that does not compile is an error
    /// naming it (the task file's validation has already said so).
    pub fn new(rules: &[(Vec<String>, MergeStrategy)]) -> Result<MergeRules, String> {
        let mut out = Vec::new();
        for (globs, strategy) in rules {
            let mut set = GlobSetBuilder::new();
            for g in globs {
                set.add(glob(g)?);
            }
            let set = set
                .build()
                .map_err(|e| format!("invalid merge glob: {e}"))?;
            out.push((set, *strategy));
        }
        Ok(MergeRules { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The strategy for `path` (relative to the repository root), if a rule names it.
    pub fn strategy(&self, path: &str) -> Option<MergeStrategy> {
        self.rules
            .iter()
            .find(|(set, _)| set.is_match(path))
            .map(|(_, s)| *s)
    }
}

/// A merge glob: `*` does not cross `/`; a glob without `/` matches the file name in any
/// folder (like a `.gitattributes` pattern).
pub fn glob(pattern: &str) -> Result<Glob, String> {
    let full = if pattern.contains('/') {
        pattern.trim_start_matches('/').to_string()
    } else {
        format!("{{{pattern},**/{pattern}}}")
    };
    globset::GlobBuilder::new(&full)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("invalid glob {pattern:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_gitattributes_and_the_first_rule_wins() {
        let rules = MergeRules::new(&[
            (vec!["allowlist.txt".into()], MergeStrategy::Union),
            (vec!["config/*.json".into()], MergeStrategy::Theirs),
            (vec!["*.txt".into()], MergeStrategy::Ours),
        ])
        .unwrap();
        assert_eq!(rules.strategy("allowlist.txt"), Some(MergeStrategy::Union));
        assert_eq!(
            rules.strategy("deep/dir/allowlist.txt"),
            Some(MergeStrategy::Union)
        );
        assert_eq!(rules.strategy("config/a.json"), Some(MergeStrategy::Theirs));
        assert_eq!(rules.strategy("config/sub/a.json"), None);
        assert_eq!(rules.strategy("notes/x.txt"), Some(MergeStrategy::Ours));
        assert_eq!(rules.strategy("src/main.rs"), None);
        assert!(MergeRules::new(&[(vec!["[".into()], MergeStrategy::Union)]).is_err());
    }
}
