/*!
The scope gate: a task's `paths` globs bound what its diff may touch.

Matching is gitignore-like, on paths relative to the repository root: `*` and `?` never cross
a `/`, `**` crosses any number of folders, a pattern with no `/` matches a name at any depth
(`*.rs`), a pattern ending in `/` (or naming a folder) covers everything beneath it, and a
leading `/` anchors at the root. No `paths` means no limit.
*/

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

pub struct Scope {
    set: Option<GlobSet>,
}

impl Scope {
    pub fn new(patterns: &[String]) -> Result<Scope, globset::Error> {
        if patterns.is_empty() {
            return Ok(Scope { set: None });
        }
        let mut builder = GlobSetBuilder::new();
        for raw in patterns {
            for variant in variants(raw) {
                builder.add(GlobBuilder::new(&variant).literal_separator(true).build()?);
            }
        }
        Ok(Scope {
            set: Some(builder.build()?),
        })
    }

    pub fn allows(&self, path: &str) -> bool {
        match &self.set {
            None => true,
            Some(set) => set.is_match(path),
        }
    }

    /// The paths outside the scope.
    pub fn violations<'a>(&self, paths: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        paths
            .into_iter()
            .filter(|p| !self.allows(p))
            .cloned()
            .collect()
    }
}

/// The globs a `paths` pattern stands for, as the scope gate matches them (also read by
/// `plan::overlap`, so overlap and scope agree on what a pattern covers).
pub fn variants(raw: &str) -> Vec<String> {
    let anchored = raw.starts_with('/');
    let p = raw.trim_start_matches('/');
    let dir_only = p.ends_with('/');
    let p = p.trim_end_matches('/');
    let mut out = Vec::new();
    let floating = !anchored && !p.contains('/');
    let bases = if floating {
        vec![p.to_string(), format!("**/{p}")]
    } else {
        vec![p.to_string()]
    };
    for b in bases {
        if !dir_only {
            out.push(b.clone());
        }
        out.push(format!("{b}/**"));
    }
    out
}

/// Whether the task's `paths` name `path` explicitly.
pub fn named_explicitly(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| {
        let literal: String = p
            .trim_start_matches('/')
            .chars()
            .take_while(|c| !matches!(c, '*' | '?' | '[' | '{'))
            .collect();
        !literal.is_empty()
            && Scope::new(std::slice::from_ref(p))
                .map(|s| s.allows(path))
                .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(p: &[&str]) -> Scope {
        Scope::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn gitignore_like_matching() {
        let s = scope(&[
            "src/routes/users.ts",
            "src/api/**",
            "*.md",
            "docs/",
            "/Makefile",
        ]);
        assert!(s.allows("src/routes/users.ts"));
        assert!(!s.allows("src/routes/admin.ts"));
        assert!(s.allows("src/api/v1/x.ts"));
        assert!(s.allows("README.md") && s.allows("a/b/NOTES.md"));
        assert!(s.allows("docs/a/b.txt"));
        assert!(s.allows("Makefile") && !s.allows("sub/Makefile"));
        assert!(!s.allows("src/main.rs"));
        let single = scope(&["src/*.rs"]);
        assert!(single.allows("src/a.rs") && !single.allows("src/x/a.rs"));
    }

    #[test]
    fn empty_scope_allows_everything() {
        assert!(scope(&[]).allows("anything/at/all"));
    }

    #[test]
    fn only_literal_patterns_name_a_path() {
        let pats = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(named_explicitly(
            &pats(&[".github/workflows/*.yml"]),
            ".github/workflows/ci.yml"
        ));
        assert!(named_explicitly(&pats(&["scripts/"]), "scripts/run.sh"));
        assert!(!named_explicitly(&pats(&["**"]), ".gitattributes"));
        assert!(!named_explicitly(&pats(&["*"]), ".gitattributes"));
        assert!(!named_explicitly(&pats(&["**/*.sh"]), "run.sh"));
        assert!(named_explicitly(
            &pats(&[".gitattributes"]),
            ".gitattributes"
        ));
    }
}
