//! The end of a long text (a command's output, a diff) that fits a prompt or a report.

/// The last `max` bytes of `s` (at a character boundary), trailing white space dropped.
pub(super) fn tail(s: &str, max: usize) -> &str {
    let s = s.trim_end();
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
