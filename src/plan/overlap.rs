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
///
/// Identical patterns are checked once (10 000 tasks under `src/**` are one pattern), and a
/// pattern is compared only with those at a compatible place, found from the deeper of the two
/// (at its literal folders or theirs), and only with those whose last name could be its own.
pub fn overlap_groups(tasks: &[&[String]]) -> Vec<OverlapGroup> {
    let mut d = Distincts::default();
    for (t, patterns) in tasks.iter().enumerate() {
        for (k, raw) in patterns.iter().enumerate() {
            let variants = crate::verify::scope::variants(raw);
            for variant in &variants {
                let beneath = is_beneath(raw, variant, &variants);
                if beneath && names_files(raw) {
                    continue;
                }
                for pattern in Pattern::expand(variant) {
                    d.add(pattern, beneath, (t, k));
                }
            }
        }
    }
    let mut sets = UnionFind::new(tasks.len());
    // Which (task, pattern) met another task's pattern.
    let mut met: Vec<Vec<bool>> = tasks.iter().map(|p| vec![false; p.len()]).collect();
    let mut joined = vec![false; d.all.len()];
    for i in 0..d.all.len() {
        if !d.all[i].beneath && d.all[i].many_tasks() {
            d.join_members(i, &mut joined, &mut sets, &mut met);
        }
        for j in d.compatible(i) {
            let (a, b) = (&d.all[i], &d.all[j]);
            if (a.beneath && b.beneath) || a.single_task_with(b) || !a.pattern.meets(&b.pattern) {
                continue;
            }
            d.join_members(i, &mut joined, &mut sets, &mut met);
            d.join_members(j, &mut joined, &mut sets, &mut met);
            sets.join(a.members[0].0, b.members[0].0);
        }
    }
    groups(tasks, &mut sets, &met)
}

/// One distinct pattern and the (task, pattern index) pairs that have it.
struct Distinct {
    pattern: Pattern,
    /// Only what lies beneath the place the task named (`x/**` of a pattern `x`).
    beneath: bool,
    members: Vec<(usize, usize)>,
}

impl Distinct {
    fn many_tasks(&self) -> bool {
        self.members.iter().any(|m| m.0 != self.members[0].0)
    }

    /// Whether all members of both are of one task (a task does not overlap itself).
    fn single_task_with(&self, other: &Distinct) -> bool {
        let t = self.members[0].0;
        !self.many_tasks() && other.members.iter().all(|m| m.0 == t)
    }
}

#[derive(Default)]
struct Distincts {
    all: Vec<Distinct>,
    by_text: std::collections::HashMap<(String, bool), usize>,
    /// By literal folder prefix ("src/lib/", "" for none), then by literal last name (`None`:
    /// a wildcard or `**` last).
    index: BTreeMap<String, std::collections::HashMap<Option<String>, Vec<usize>>>,
}

impl Distincts {
    fn add(&mut self, pattern: Pattern, beneath: bool, member: (usize, usize)) {
        let key = (pattern.text.clone(), beneath);
        if let Some(&i) = self.by_text.get(&key) {
            self.all[i].members.push(member);
            return;
        }
        let i = self.all.len();
        self.index
            .entry(pattern.prefix.clone())
            .or_default()
            .entry(pattern.last.clone())
            .or_default()
            .push(i);
        self.by_text.insert(key, i);
        self.all.push(Distinct {
            pattern,
            beneath,
            members: vec![member],
        });
    }

    /// The distinct patterns `i` is compared with: at its own prefix (those before it) or at
    /// one of its folders, whose last name could be its own.
    fn compatible(&self, i: usize) -> Vec<usize> {
        let p = &self.all[i].pattern;
        let prefix = p.prefix.as_str();
        let mut out = Vec::new();
        let ends = std::iter::once(0).chain(prefix.match_indices('/').map(|(e, _)| e + 1));
        for end in ends {
            let Some(bucket) = self.index.get(&prefix[..end]) else {
                continue;
            };
            let same_place = end == prefix.len();
            let mut take = |ids: &Vec<usize>| {
                out.extend(ids.iter().copied().filter(|&j| !same_place || j < i));
            };
            match &p.last {
                Some(name) => {
                    bucket
                        .get(&Some(name.clone()))
                        .into_iter()
                        .for_each(&mut take);
                    bucket.get(&None).into_iter().for_each(&mut take);
                }
                None => bucket.values().for_each(&mut take),
            }
        }
        out
    }

    /// Once per distinct pattern: its tasks join one group, and each of its members met
    /// another task's pattern.
    fn join_members(
        &self,
        i: usize,
        joined: &mut [bool],
        sets: &mut UnionFind,
        met: &mut [Vec<bool>],
    ) {
        if std::mem::replace(&mut joined[i], true) {
            return;
        }
        let members = &self.all[i].members;
        for &(t, k) in members {
            sets.join(members[0].0, t);
            met[t][k] = true;
        }
    }
}

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
    /// The last name, when it has no wildcard.
    last: Option<String>,
    /// The glob it was read from, alternatives expanded.
    text: String,
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
            last: None,
            text: "**".into(),
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
        let last = match segs.last() {
            Some(Seg::Name(toks)) => toks
                .iter()
                .map(|t| match t {
                    Tok::Lit(c) => Some(*c),
                    _ => None,
                })
                .collect::<Option<String>>(),
            _ => None,
        };
        Some(Pattern {
            segs,
            prefix,
            last,
            text: glob.to_string(),
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
        // Files in folders, and bare names (at any depth: all compared at the root).
        let t: Vec<Vec<String>> = (0..10_000)
            .map(|i| match i % 2 {
                0 => vec![format!("src/m{}/f{i}.rs", i % 50)],
                _ => vec![format!("f{i}.txt")],
            })
            .collect();
        let refs: Vec<&[String]> = t.iter().map(|v| v.as_slice()).collect();
        let started = std::time::Instant::now();
        assert!(overlap_groups(&refs).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
