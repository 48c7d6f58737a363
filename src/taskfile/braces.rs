//! Placeholders in template text: `{word}`.

/// Every `{word}` of `text` (`word`: lowercase letters, digits and `_`, starting with a letter),
/// except a shell's `${word}`.
pub(super) fn words_in_braces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(['}', '{']) else {
            break;
        };
        let word = &after[..close];
        let shell = rest[..open].ends_with('$');
        let is_word = word.starts_with(|c: char| c.is_ascii_lowercase())
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_word && !shell && after[close..].starts_with('}') && !out.contains(&word) {
            out.push(word);
        }
        rest = &after[close..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::words_in_braces;

    #[test]
    fn words_but_not_shell_variables_or_code() {
        assert_eq!(
            words_in_braces("fix {path} for f in ${f} {x: 1} {{stem}} {Name} {a_1}"),
            ["path", "stem", "a_1"]
        );
    }
}
