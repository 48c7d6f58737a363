/*!
A line-based three-way merge that never leaves a conflict: the merge of list-like files
(allowlists, lint configurations) that the task file marks `"strategy": "union"`.

Changes of the two sides that touch different base lines both apply, even on neighbouring
lines (git's merge calls those a conflict: two tasks removing neighbouring lines of one list
would conflict). Where both sides change the same base lines differently, the result keeps
ours, without the base lines theirs removed, then the lines theirs added that ours did not add
too: like git's `merge=union` (ours then theirs, no markers), except that a removal by either
side applies.
*/

use similar::{capture_diff_slices, Algorithm, DiffOp};

/// A changed run of lines: base lines `b0..b1` became the side's lines `s0..s1`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Hunk {
    b0: usize,
    b1: usize,
    s0: usize,
    s1: usize,
}

impl Hunk {
    /// How many lines the hunk adds (negative: removes).
    fn delta(&self) -> isize {
        (self.s1 - self.s0) as isize - (self.b1 - self.b0) as isize
    }
}

/// Lines, each with its end of line (the last may have none).
fn lines(text: &[u8]) -> Vec<&[u8]> {
    text.split_inclusive(|&b| b == b'\n').collect()
}

/// The changed runs turning `base` into `side`, in base order.
fn hunks(base: &[&[u8]], side: &[&[u8]]) -> Vec<Hunk> {
    let mut out: Vec<Hunk> = Vec::new();
    for op in capture_diff_slices(Algorithm::Myers, base, side) {
        let h = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index,
                old_len,
                new_index,
            } => Hunk {
                b0: old_index,
                b1: old_index + old_len,
                s0: new_index,
                s1: new_index,
            },
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => Hunk {
                b0: old_index,
                b1: old_index,
                s0: new_index,
                s1: new_index + new_len,
            },
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => Hunk {
                b0: old_index,
                b1: old_index + old_len,
                s0: new_index,
                s1: new_index + new_len,
            },
        };
        match out.last_mut() {
            Some(last) if last.b1 == h.b0 && last.s1 == h.s0 => {
                last.b1 = h.b1;
                last.s1 = h.s1;
            }
            _ => out.push(h),
        }
    }
    out
}

/// Whether hunk `h` must be merged together with the region `lo..hi`: it changes some of the
/// same base lines, or both insert at one place (their order is not given).
fn overlaps(lo: usize, hi: usize, h: &Hunk) -> bool {
    (h.b0 < hi && lo < h.b1) || (lo == hi && h.b0 == h.b1 && h.b0 == lo)
}

/// One side's hunks, consumed in base order, and how far its line numbers are shifted.
struct Side<'a> {
    lines: Vec<&'a [u8]>,
    hunks: Vec<Hunk>,
    next: usize,
    /// Lines added minus removed by the hunks consumed so far.
    shift: isize,
}

impl<'a> Side<'a> {
    fn new(base: &[&'a [u8]], text: &'a [u8]) -> Side<'a> {
        let lines = lines(text);
        let hunks = hunks(base, &lines);
        Side {
            lines,
            hunks,
            next: 0,
            shift: 0,
        }
    }

    fn peek(&self) -> Option<&Hunk> {
        self.hunks.get(self.next)
    }

    /// This side's lines for the base region `lo..hi`, consuming its hunks within it.
    fn take(&mut self, lo: usize, hi: usize) -> (bool, &[&'a [u8]]) {
        let start = (lo as isize + self.shift) as usize;
        let mut changed = false;
        while let Some(h) = self.peek().copied().filter(|h| overlaps(lo, hi, h)) {
            self.shift += h.delta();
            self.next += 1;
            changed = true;
        }
        let end = (hi as isize + self.shift) as usize;
        (changed, &self.lines[start..end])
    }
}

/// The merge of `ours` and `theirs`, both changed from `base`; never a conflict.
pub fn union_merge(base: &[u8], ours: &[u8], theirs: &[u8]) -> Vec<u8> {
    let base_lines = lines(base);
    let mut sides = [Side::new(&base_lines, ours), Side::new(&base_lines, theirs)];
    let mut out: Vec<&[u8]> = Vec::new();
    let mut pos = 0;
    loop {
        // The earliest hunk of either side (an insertion before a change at the same line)
        // starts the region; it grows while a hunk of either side overlaps it.
        let seed = sides
            .iter()
            .filter_map(|s| s.peek().copied())
            .min_by_key(|h| (h.b0, h.b1 != h.b0));
        let Some(seed) = seed else { break };
        let (lo, mut hi) = (seed.b0, seed.b1);
        loop {
            let end = sides
                .iter()
                .flat_map(|s| s.hunks[s.next..].iter().take_while(|h| overlaps(lo, hi, h)))
                .map(|h| h.b1)
                .max()
                .unwrap_or(hi);
            if end <= hi {
                break;
            }
            hi = end;
        }
        out.extend_from_slice(&base_lines[pos..lo]);
        let [o, t] = &mut sides;
        let (o_changed, o_lines) = o.take(lo, hi);
        let (t_changed, t_lines) = t.take(lo, hi);
        match (o_changed, t_changed) {
            (true, false) => out.extend_from_slice(o_lines),
            (false, true) => out.extend_from_slice(t_lines),
            _ if o_lines == t_lines => out.extend_from_slice(o_lines),
            _ => out.extend(resolve(&base_lines[lo..hi], o_lines, t_lines)),
        }
        pos = hi;
    }
    out.extend_from_slice(&base_lines[pos..]);
    join(&out)
}

/// Both sides changed the base lines `base` differently: ours without what theirs removed,
/// then what theirs added and ours did not.
fn resolve<'a>(base: &[&'a [u8]], ours: &[&'a [u8]], theirs: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut theirs_removed = vec![false; base.len()];
    let mut theirs_added: Vec<&[u8]> = Vec::new();
    for h in hunks(base, theirs) {
        theirs_removed[h.b0..h.b1]
            .iter_mut()
            .for_each(|r| *r = true);
        theirs_added.extend_from_slice(&theirs[h.s0..h.s1]);
    }
    let mut out = Vec::new();
    let mut ours_added: Vec<&[u8]> = Vec::new();
    for op in capture_diff_slices(Algorithm::Myers, base, ours) {
        match op {
            DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                for k in 0..len {
                    if !theirs_removed[old_index + k] {
                        out.push(ours[new_index + k]);
                    }
                }
            }
            DiffOp::Delete { .. } => {}
            DiffOp::Insert {
                new_index, new_len, ..
            }
            | DiffOp::Replace {
                new_index, new_len, ..
            } => {
                let added = &ours[new_index..new_index + new_len];
                out.extend_from_slice(added);
                ours_added.extend_from_slice(added);
            }
        }
    }
    for line in theirs_added {
        // A line both sides added (the same item listed by both) is kept once.
        match ours_added
            .iter()
            .position(|l| trim_eol(l) == trim_eol(line))
        {
            Some(i) => {
                ours_added.remove(i);
            }
            None => out.push(line),
        }
    }
    out
}

fn trim_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// The lines as one text; a line without an end of line gets one when another follows it.
fn join(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for (i, line) in lines.iter().enumerate() {
        out.extend_from_slice(line);
        if i + 1 < lines.len() && !line.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::union_merge;

    fn merge(base: &str, ours: &str, theirs: &str) -> String {
        String::from_utf8(union_merge(
            base.as_bytes(),
            ours.as_bytes(),
            theirs.as_bytes(),
        ))
        .unwrap()
    }

    #[test]
    fn removals_of_neighbouring_lines_both_apply() {
        assert_eq!(merge("a\nb\nc\nd\n", "a\nc\nd\n", "a\nb\nd\n"), "a\nd\n");
        // Six removals, one after another onto what is merged.
        let base: String = (1..=8).map(|i| format!("item{i}\n")).collect();
        let mut head = base.clone();
        for i in 2..=7 {
            let theirs = base.replace(&format!("item{i}\n"), "");
            head = merge(&base, &head, &theirs);
        }
        assert_eq!(head, "item1\nitem8\n");
    }

    #[test]
    fn additions_at_one_place_keep_ours_then_theirs() {
        assert_eq!(merge("a\nz\n", "a\nb\nz\n", "a\nc\nz\n"), "a\nb\nc\nz\n");
        // The same addition by both is kept once.
        assert_eq!(merge("a\nz\n", "a\nb\nz\n", "a\nb\nc\nz\n"), "a\nb\nc\nz\n");
        // At the end of a file without a final newline.
        assert_eq!(merge("a", "a\nb", "a\nc"), "a\nb\nc");
    }

    #[test]
    fn a_change_and_a_removal_of_the_same_region_both_apply() {
        // Ours edits b, theirs removes c: both overlap the region b..c.
        assert_eq!(merge("a\nb\nc\nd\n", "a\nB\nd\n", "a\nb\nd\n"), "a\nB\nd\n");
        // Ours removes b, theirs rewrites b and c.
        assert_eq!(
            merge("a\nb\nc\nd\n", "a\nc\nd\n", "a\nb\nC\nd\n"),
            "a\nC\nd\n"
        );
    }

    #[test]
    fn changes_apart_merge_like_any_three_way_merge() {
        let base = "1\n2\n3\n4\n5\n6\n";
        assert_eq!(
            merge(base, "0\n1\n2\n3\n4\n5\n6\n", "1\n2\n3\n4\n5\n6\n7\n"),
            "0\n1\n2\n3\n4\n5\n6\n7\n"
        );
        assert_eq!(merge(base, base, "1\n3\n"), "1\n3\n");
        assert_eq!(merge("", "a\n", "b\n"), "a\nb\n");
    }
}
