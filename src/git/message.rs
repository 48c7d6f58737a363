//! Commit messages of task and integration commits: a subject that fits a one-line log
//! (at most [`SUBJECT_MAX`] characters), the task's full prompt in the body when the subject
//! does not hold all of it, and the `Fanout-*` trailers last.

/// Characters a subject may have: what `git log --oneline` and most tools show in full.
pub const SUBJECT_MAX: usize = 72;

/// `prefix` then `sep` and the prompt's first non-blank line, cut on a word boundary with "…"
/// so the whole subject stays within [`SUBJECT_MAX`] characters. Just `prefix` when the prompt
/// is blank or no word fits.
pub fn subject(prefix: &str, sep: &str, prompt: &str) -> String {
    let first = first_line(prompt);
    if first.is_empty() {
        return prefix.to_string();
    }
    let room = SUBJECT_MAX.saturating_sub(prefix.chars().count() + sep.chars().count());
    let line = shorten(first, room);
    if line.is_empty() {
        return prefix.to_string();
    }
    format!("{prefix}{sep}{line}")
}

/// The prompt's first non-blank line, trimmed.
pub fn first_line(prompt: &str) -> &str {
    prompt
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// `line` within `room` characters: whole, or cut at the last space that leaves room for "…"
/// (mid-word only when a single word is longer than the room).
pub fn shorten(line: &str, room: usize) -> String {
    if line.chars().count() <= room {
        return line.to_string();
    }
    if room < 2 {
        return String::new();
    }
    // The first `room - 1` characters, then back to a word boundary.
    let end = line
        .char_indices()
        .nth(room - 1)
        .map_or(line.len(), |(i, _)| i);
    let head = &line[..end];
    let cut = match head.rfind(char::is_whitespace) {
        Some(i) if i > 0 => head[..i].trim_end(),
        _ => head,
    };
    format!("{cut}\u{2026}")
}

/// The whole message: `subject`, the prompt when the subject does not already say all of it,
/// then `trailers` (each a `Key: value` line).
pub fn message(subject: &str, prompt: &str, trailers: &[(&str, &str)]) -> String {
    let mut out = format!("{subject}\n\n");
    let prompt = prompt.trim();
    let said = prompt.is_empty() || subject.ends_with(prompt);
    if !said {
        out.push_str(prompt);
        out.push_str("\n\n");
    }
    for (k, v) in trailers {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_first_line_is_cut_on_a_word_boundary() {
        let prompt = "Rename the rate keyword to throughput in every module of the crate and update the docs accordingly\nmore";
        let s = subject("t1", ": ", prompt);
        assert!(s.chars().count() <= SUBJECT_MAX, "{s}");
        assert!(s.starts_with("t1: Rename the rate keyword"), "{s}");
        assert!(s.ends_with('\u{2026}'), "{s}");
        let before = s.trim_end_matches('\u{2026}');
        assert!(prompt.starts_with(&before[4..]), "{s}");
        assert!(
            prompt[before.len() - 4..].starts_with(' '),
            "cut at a space: {s}"
        );
    }

    #[test]
    fn short_subjects_stay_whole_and_long_words_are_cut() {
        assert_eq!(subject("t", ": ", "\n  fix it \n"), "t: fix it");
        assert_eq!(subject("t", ": ", "  \n"), "t");
        let word = "x".repeat(200);
        let s = subject("t", ": ", &word);
        assert_eq!(s.chars().count(), SUBJECT_MAX);
        let wide = "é".repeat(100);
        assert_eq!(subject("t", ": ", &wide).chars().count(), SUBJECT_MAX);
    }

    #[test]
    fn the_body_holds_the_prompt_unless_the_subject_says_it_all() {
        let m = message("t: fix it", "fix it", &[("Fanout-Task", "t")]);
        assert_eq!(m, "t: fix it\n\nFanout-Task: t\n");
        let m = message("t: fix…", "fix it\nand more", &[("Fanout-Task", "t")]);
        assert_eq!(m, "t: fix…\n\nfix it\nand more\n\nFanout-Task: t\n");
    }
}
