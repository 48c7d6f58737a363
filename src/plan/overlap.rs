/*!
Tasks whose declared `paths` overlap, found before anything runs (`fanout validate`, the start
of a run, the lanes of `overlap: serialize`).

Two patterns overlap when some path could match both, as the scope gate matches them
(`verify::scope::variants`: a name without `/` at any depth, a folder covering what is beneath
it). The test is decided on the globs themselves, not on the files that exist: it is exact for
literals, `*`, `?` and `**`; a character class meets any character of the other side unless
both are plain lists, and a pattern too large to expand (`{…}` alternatives beyond a bound)
meets everything — so the test may name an overlap that no path can have, never miss one.
Two rules keep names apart that only odd trees would join: a pattern whose last name has an
extension (`a.txt`, `*.md`) names files, not a folder to look beneath; and what lies beneath
two different named places is not compared (`src` and `lib` both allow `src/lib/x`).
A task without `paths` may touch anything, but it declared nothing: it overlaps nothing.
*/

use std::collections::BTreeMap;

/// Tasks whose `paths` overlap, directly or through one another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlapGroup {
    /// Task indices, in task-file order.
    pub tasks: Vec<usize>,
    /// The declared patterns that meet another task's, each once, in task-file order.
    pub paths: Vec<String>,
}

/// The groups of overlapping tasks (two or more each), ordered by their first task.
/// `tasks[i]` is task i's `paths`.
pub fn overlap_groups(tasks: &[&[String]]) -> Vec<OverlapGroup> {
    let mut sets = UnionFind::new(tasks.len());
    // Which (task, pattern) met another task's pattern.
    let mut met: Vec<Vec<bool>> = tasks.iter().map(|p| vec![false; p.len()]).collect();
    // Every variant seen so far, by its literal folder prefix ("src/lib/", "" for none).
    let mut index: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (t, patterns) in tasks.iter().enumerate() {
        for (k, raw) in patterns.iter().enumerate() {
            let variants = crate::verify::scope::variants(raw);
            for variant in &variants {
                let beneath = is_beneath(raw, variant, &variants);
                if beneath && names_files(raw) {
                    continue;
                }
                for mut pattern in Pattern::expand(variant) {
                    pattern.beneath = beneath;
                    // Met at once, so a task already joined to a pattern's group skips the
                    // rest of it (many tasks under one folder: one check each, not all pairs).
                    for (u, l, q) in candidates(&index, &pattern.prefix) {
                        let (u, l) = (*u, *l);
                        if u == t
                            || (q.beneath && pattern.beneath)
                            || (met[u][l] && met[t][k] && sets.same(u, t))
                            || !pattern.meets(q)
                        {
                            continue;
                        }
                        sets.join(u, t);
                        met[u][l] = true;
                        met[t][k] = true;
                    }
                    index
                        .entry(pattern.prefix.clone())
                        .or_default()
                        .push((t, k, pattern));
                }
            }
        }
    }
    groups(tasks, &mut sets, &met)
}

type Entry = (usize, usize, Pattern);

/// Whether `variant` of `raw` is what lies beneath the place `raw` names, not that place
/// itself. Two such never meet (`src` and `lib` name different places, though both would allow
/// `src/lib/x`).
fn is_beneath(raw: &str, variant: &str, variants: &[String]) -> bool {
    !raw.ends_with('/')
        && variant
            .strip_suffix("/**")
            .is_some_and(|named| variants.iter().any(|v| v == named))
}

/// Whether a pattern names files: its last name has an extension (`a.txt`, `*.md`). What lies
/// beneath a folder of that name is left out of the test (`a.txt` and `*.md` would both allow
/// `a.txt/b.md`, which only a task turning a file into a folder could make).
fn names_files(raw: &str) -> bool {
    !raw.ends_with('/')
        && raw
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.') && !last.starts_with("**"))
}

/// The variants seen so far at a prefix compatible with `prefix`: one of its folders (or
/// itself), or beneath it.
fn candidates<'a>(
    index: &'a BTreeMap<String, Vec<Entry>>,
    prefix: &'a str,
) -> impl Iterator<Item = &'a Entry> + 'a {
    let ancestors = std::iter::once(0)
        .chain(prefix.match_indices('/').map(|(i, _)| i + 1))
        .filter_map(move |end| index.get(&prefix[..end]));
    let beneath = index
        .range(prefix.to_string()..)
        .take_while(move |(key, _)| key.starts_with(prefix))
        .filter(move |(key, _)| key.as_str() != prefix)
        .map(|(_, v)| v);
    ancestors.chain(beneath).flatten()
}

fn groups(tasks: &[&[String]], sets: &mut UnionFind, met: &[Vec<bool>]) -> Vec<OverlapGroup> {
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for t in 0..tasks.len() {
        by_root.entry(sets.find(t)).or_default().push(t);
    }
    let mut out: Vec<OverlapGroup> = by_root
        .into_values()
        .filter(|members| members.len() > 1)
        .map(|members| {
            let mut paths: Vec<String> = Vec::new();
            for &t in &members {
                for (k, raw) in tasks[t].iter().enumerate() {
                    if met[t][k] && !paths.contains(raw) {
                        paths.push(raw.clone());
                    }
                }
            }
            OverlapGroup {
                tasks: members,
                paths,
            }
        })
        .collect();
    out.sort_by_key(|g| g.tasks[0]);
    out
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind((0..n).collect())
    }
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn same(&mut self, a: usize, b: usize) -> bool {
        self.find(a) == self.find(b)
    }
    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        // The smaller index stays the root, so groups keep task-file order cheaply.
        let (lo, hi) = (ra.min(rb), ra.max(rb));
        self.0[hi] = lo;
    }
}

/// One character position of a folder or file name pattern.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// `*`: any run of characters within a name.
    Star,
    /// `?`, or a class that is not a plain list: one character, any.
    Any,
    /// A class listing characters (`[abc]`).
    Set(Vec<char>),
    Lit(char),
}

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    /// `**`: any number of folders, none included.
    Deep,
    Name(Vec<Tok>),
}

/// A glob without alternatives, as folder segments, and its literal folder prefix.
#[derive(Clone, Debug)]
struct Pattern {
    segs: Vec<Seg>,
    /// The leading segments without wildcards, each followed by `/`: every path it matches
    /// starts with them.
    prefix: String,
    /// Only what lies beneath the place the task named (`x/**` of a pattern `x`).
    beneath: bool,
}

/// More `{…}` alternatives than this and a pattern meets everything (still sound).
const MAX_ALTERNATIVES: usize = 64;

impl Pattern {
    /// The alternatives of a glob (its `{a,b}` expanded); one that matches anything when the
    /// glob is too large to expand or holds a `/` inside a class.
    fn expand(glob: &str) -> Vec<Pattern> {
        match expand_braces(glob, MAX_ALTERNATIVES) {
            Some(all) => all
                .iter()
                .map(|g| Pattern::parse(g).unwrap_or_else(Pattern::anything))
                .collect(),
            None => vec![Pattern::anything()],
        }
    }

    fn anything() -> Pattern {
        Pattern {
            segs: vec![Seg::Deep],
            prefix: String::new(),
            beneath: false,
        }
    }

    fn parse(glob: &str) -> Option<Pattern> {
        let segs: Vec<Seg> = split_segments(glob)?
            .into_iter()
            .map(|s| match s.as_str() {
                "**" => Some(Seg::Deep),
                _ => parse_name(&s).map(Seg::Name),
            })
            .collect::<Option<_>>()?;
        let mut prefix = String::new();
        for seg in &segs {
            match seg {
                Seg::Name(toks) if toks.iter().all(|t| matches!(t, Tok::Lit(_))) => {
                    prefix.extend(toks.iter().filter_map(|t| match t {
                        Tok::Lit(c) => Some(*c),
                        _ => None,
                    }));
                    prefix.push('/');
                }
                _ => break,
            }
        }
        Some(Pattern {
            segs,
            prefix,
            beneath: false,
        })
    }

    /// Whether some path matches both.
    fn meets(&self, other: &Pattern) -> bool {
        meet(&self.segs, &other.segs, |a, b| match (a, b) {
            (Seg::Name(x), Seg::Name(y)) => names_meet(x, y),
            _ => false,
        })
    }
}

/// The common core of both dynamic programs: whether sequences `p` and `q`, where a "star"
/// element matches any run of elements (none included), can match one sequence.
fn meet<T: StarLike>(p: &[T], q: &[T], one: impl Fn(&T, &T) -> bool) -> bool {
    let (n, m) = (p.len(), q.len());
    let w = m + 1;
    let mut dp = vec![false; (n + 1) * w];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            dp[i * w + j] = if i == n && j == m {
                true
            } else if i < n && p[i].is_star() {
                dp[(i + 1) * w + j] || (j < m && dp[i * w + j + 1])
            } else if j < m && q[j].is_star() {
                dp[i * w + j + 1] || (i < n && dp[(i + 1) * w + j])
            } else if i < n && j < m {
                one(&p[i], &q[j]) && dp[(i + 1) * w + j + 1]
            } else {
                false
            };
        }
    }
    dp[0]
}

trait StarLike {
    fn is_star(&self) -> bool;
}

impl StarLike for Seg {
    fn is_star(&self) -> bool {
        matches!(self, Seg::Deep)
    }
}

impl StarLike for Tok {
    fn is_star(&self) -> bool {
        matches!(self, Tok::Star)
    }
}

fn names_meet(x: &[Tok], y: &[Tok]) -> bool {
    meet(x, y, |a, b| match (a, b) {
        (Tok::Lit(c), Tok::Lit(d)) => c == d,
        (Tok::Lit(c), Tok::Set(s)) | (Tok::Set(s), Tok::Lit(c)) => s.contains(c),
        (Tok::Set(s), Tok::Set(t)) => s.iter().any(|c| t.contains(c)),
        _ => true,
    })
}

/// The folder segments of a glob; `None` when a class holds a `/`.
fn split_segments(glob: &str) -> Option<Vec<String>> {
    let mut segs = vec![String::new()];
    let mut chars = glob.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        let cur = segs.last_mut()?;
        match c {
            '\\' => {
                cur.push(c);
                cur.push(chars.next()?);
            }
            '[' if !in_class => {
                in_class = true;
                cur.push(c);
            }
            ']' if in_class => {
                in_class = false;
                cur.push(c);
            }
            '/' if in_class => return None,
            '/' => segs.push(String::new()),
            _ => cur.push(c),
        }
    }
    Some(segs.into_iter().filter(|s| !s.is_empty()).collect())
}

/// One name pattern's characters; `None` when it cannot be read (it then meets everything).
fn parse_name(s: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' => {
                // `**` inside a name is a `*` to the scope's matcher.
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                Tok::Star
            }
            '?' => Tok::Any,
            '\\' => Tok::Lit(chars.next()?),
            '[' => {
                let mut body = String::new();
                loop {
                    match chars.next()? {
                        ']' if !body.is_empty() => break,
                        ch => body.push(ch),
                    }
                }
                let plain =
                    !body.starts_with(['!', '^']) && !body.contains('-') && !body.contains('\\');
                if plain {
                    Tok::Set(body.chars().collect())
                } else {
                    Tok::Any
                }
            }
            c => Tok::Lit(c),
        });
    }
    Some(out)
}

/// `a{b,c}d` → `abd`, `acd` (nested too); `None` past `max` alternatives.
fn expand_braces(glob: &str, max: usize) -> Option<Vec<String>> {
    let bytes: Vec<char> = glob.chars().collect();
    let mut depth = 0usize;
    let mut open = None;
    let mut commas = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            '\\' => i += 1,
            '{' => {
                if depth == 0 {
                    open = Some(i);
                    commas.clear();
                }
                depth += 1;
            }
            ',' if depth == 1 => commas.push(i),
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let start = open?;
                    let head: String = bytes[..start].iter().collect();
                    let tail: String = bytes[i + 1..].iter().collect();
                    let mut bounds = vec![start];
                    bounds.extend(&commas);
                    bounds.push(i);
                    let mut out = Vec::new();
                    for w in bounds.windows(2) {
                        let alt: String = bytes[w[0] + 1..w[1]].iter().collect();
                        for rest in expand_braces(&format!("{head}{alt}{tail}"), max)? {
                            out.push(rest);
                            if out.len() > max {
                                return None;
                            }
                        }
                    }
                    return Some(out);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Some(vec![glob.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(a: &str, b: &str) -> bool {
        let (a, b) = (vec![a.to_string()], vec![b.to_string()]);
        !overlap_groups(&[&a, &b]).is_empty()
    }

    #[test]
    fn literal_paths_overlap_only_when_equal_or_nested() {
        assert!(overlap("src/x.rs", "src/x.rs"));
        assert!(!overlap("src/x.rs", "src/y.rs"));
        // A folder covers what is beneath it.
        assert!(overlap("src", "src/x.rs"));
        assert!(overlap("src/", "src/deep/x.rs"));
        assert!(!overlap("src/", "srcs/x.rs"));
        assert!(!overlap("/a/x.rs", "b/x.rs"));
    }

    #[test]
    fn wildcards_overlap_when_some_path_matches_both() {
        assert!(overlap("src/*.rs", "src/lib.rs"));
        assert!(!overlap("src/*.rs", "src/lib.ts"));
        assert!(
            !overlap("src/*.rs", "src/a/lib.rs"),
            "* stays in its folder"
        );
        assert!(overlap("src/**/*.rs", "src/a/b/lib.rs"));
        assert!(
            overlap("*.md", "docs/guide/intro.md"),
            "a bare name at any depth"
        );
        assert!(!overlap("*.md", "docs/guide/intro.rs"));
        assert!(overlap("a*", "*b"), "ab");
        assert!(!overlap("/a?", "/abc"));
        // A bare name is at any depth: it meets every folder.
        assert!(overlap("a.txt", "c/**"));
        assert!(!overlap("a.txt", "other.txt"));
        assert!(overlap("x[ab].rs", "x[bc].rs"));
        assert!(!overlap("x[ab].rs", "x[cd].rs"));
        assert!(overlap("src/{a,b}.rs", "src/b.rs"));
        assert!(!overlap("src/{a,b}.rs", "src/c.rs"));
        assert!(overlap("**", "anything/at/all"));
        assert!(!overlap("lib/**/*.rs", "src/**/*.rs"));
    }

    #[test]
    fn groups_join_through_a_shared_neighbour_in_task_file_order() {
        let t: Vec<Vec<String>> = [
            vec!["/a.txt"],
            vec!["/other.txt"],
            vec!["/a.txt", "/b.txt"],
            vec![],
            vec!["/b.txt"],
            vec!["c/**"],
            vec!["c/d.txt"],
        ]
        .iter()
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .collect();
        let refs: Vec<&[String]> = t.iter().map(|v| v.as_slice()).collect();
        let g = overlap_groups(&refs);
        assert_eq!(
            g,
            vec![
                OverlapGroup {
                    tasks: vec![0, 2, 4],
                    paths: vec!["/a.txt".into(), "/b.txt".into()]
                },
                OverlapGroup {
                    tasks: vec![5, 6],
                    paths: vec!["c/**".into(), "c/d.txt".into()]
                },
            ]
        );
    }

    #[test]
    fn many_tasks_under_one_folder_make_one_group_quickly() {
        let t: Vec<Vec<String>> = (0..3000)
            .map(|i| vec!["src/**".to_string(), format!("src/f{i}.rs")])
            .collect();
        let refs: Vec<&[String]> = t.iter().map(|v| v.as_slice()).collect();
        let started = std::time::Instant::now();
        let g = overlap_groups(&refs);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].tasks.len(), 3000);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn many_distinct_files_are_checked_quickly() {
        let t: Vec<Vec<String>> = (0..5000)
            .map(|i| vec![format!("src/m{}/f{i}.rs", i % 50)])
            .collect();
        let refs: Vec<&[String]> = t.iter().map(|v| v.as_slice()).collect();
        let started = std::time::Instant::now();
        assert!(overlap_groups(&refs).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
