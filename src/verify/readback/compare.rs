//! Comparing what the verifier shows with the committed text of one file: a whole read for
//! small files, pages (`offset`/`limit`) for large ones or when a whole read comes back cut.

use std::future::Future;
use std::path::Path;

use serde_json::{json, Value};

use super::answer::Answer;
use super::error::VerifierError;
use crate::jsonrpc::truncate;

/// Files up to this size are read in one call without `offset`/`limit` (whole reads are cut
/// at about 85 000 characters).
pub const WHOLE_READ_MAX_BYTES: usize = 64 * 1024;
/// Pages stay under this many bytes (UTF-8 bytes ≥ the characters the verifier counts; a page
/// may hold 100 000).
pub const PAGE_MAX_BYTES: usize = 80_000;
/// Pages stay under this many lines (older verifiers cut any read at 2000 lines).
pub const PAGE_MAX_LINES: usize = 2000;

/// One `Read` tool call (`{"file_path", "offset"?, "limit"?}`). A trait so that comparison
/// does not depend on a running verifier process.
pub(crate) trait ReadTool: Sync {
    fn read(&self, args: Value) -> impl Future<Output = Result<Answer, VerifierError>> + Send;
}

/// How one file compared.
#[derive(Debug, PartialEq)]
pub(crate) enum Compared {
    /// Equal; `bytes` of text the verifier returned.
    Same {
        bytes: u64,
    },
    Differs(String),
    SkippedBinary,
    Skipped(String),
}

/// What the verifier is expected to show for committed text: BOM removed, CRLF → LF.
pub fn normalize(text: &str) -> String {
    text.strip_prefix('\u{feff}')
        .unwrap_or(text)
        .replace("\r\n", "\n")
}

/// What kind of error the verifier reported, in fanout's words: its own message is never
/// quoted (nothing a verifier read may reach the gate's detail, the report or the feedback).
fn error_kind(msg: &str) -> &'static str {
    if too_large(msg) {
        "too large to show"
    } else if msg.contains("does not exist") || msg.contains("ENOENT") {
        "not found"
    } else if msg.contains("EACCES") || msg.contains("ermission") {
        "permission denied"
    } else {
        "an error"
    }
}

fn too_large(msg: &str) -> bool {
    msg.contains("exceeds maximum allowed")
}

fn refused_type(msg: &str) -> bool {
    msg.contains("cannot read binary files") || msg.contains("image extension")
}

/// Compares the file at `abs` as the verifier shows it with `committed` (valid UTF-8, no NUL).
pub(crate) async fn compare_file<R: ReadTool>(
    reader: &R,
    abs: &Path,
    committed: &str,
) -> Result<Compared, VerifierError> {
    let expected = normalize(committed);
    let lines: Vec<&str> = expected.split('\n').collect();
    let file_path = abs.display().to_string();
    if committed.len() <= WHOLE_READ_MAX_BYTES {
        match reader.read(json!({"file_path": file_path})).await? {
            Answer::Text {
                content,
                numbered,
                truncated,
                ..
            } => {
                let partial = truncated
                    || (content.len() < expected.len()
                        && expected.starts_with(&content)
                        && lines.len() > PAGE_MAX_LINES);
                if !partial {
                    return Ok(match diff_text(&content, &expected, numbered, 1) {
                        None => Compared::Same {
                            bytes: content.len() as u64,
                        },
                        Some(why) => Compared::Differs(why),
                    });
                }
                // A verifier that cuts whole reads (older ones stop at 2000 lines): page it.
            }
            Answer::Error(m) if too_large(&m) => {} // page it below
            other => return Ok(judge_other(other)),
        }
    }
    // Paged: pages cut from the committed lines; each page must equal the verifier's.
    let mut bytes = 0u64;
    let mut start = 0usize;
    let mut saw_total = false;
    while start < lines.len() {
        let mut n = page_len(&lines[start..]);
        let answer = loop {
            let a = reader
                .read(json!({"file_path": file_path, "offset": start + 1, "limit": n}))
                .await?;
            match a {
                Answer::Error(m) if too_large(&m) && n > 1 => n = n.div_ceil(2),
                Answer::Text {
                    truncated: true, ..
                } if n > 1 => n = n.div_ceil(2),
                Answer::Error(m) if too_large(&m) => {
                    return Ok(Compared::Skipped(format!(
                        "line {} is longer than the verifier can show",
                        start + 1
                    )))
                }
                Answer::Text {
                    truncated: true, ..
                } => {
                    return Ok(Compared::Skipped(format!(
                        "line {} is longer than the verifier can show",
                        start + 1
                    )))
                }
                other => break other,
            }
        };
        match answer {
            Answer::Text {
                content,
                total_lines,
                numbered,
                ..
            } => {
                if let Some(total) = total_lines {
                    saw_total = true;
                    if total != lines.len() {
                        return Ok(Compared::Differs(format!(
                            "the verifier sees another number of lines than the commit's {}",
                            lines.len()
                        )));
                    }
                }
                let want = lines[start..start + n].join("\n");
                if let Some(why) = diff_text(&content, &want, numbered, start + 1) {
                    return Ok(Compared::Differs(why));
                }
                bytes += content.len() as u64;
            }
            other => return Ok(judge_other(other)),
        }
        start += n;
    }
    if !saw_total {
        // Numbered answers carry no line count: nothing may follow the last committed line.
        let tail = reader
            .read(json!({"file_path": file_path, "offset": lines.len() + 1, "limit": 1}))
            .await?;
        if let Answer::Text { content, .. } = tail {
            if !content.is_empty() {
                return Ok(Compared::Differs(format!(
                    "the verifier sees more than the commit's {} line(s)",
                    lines.len()
                )));
            }
        }
    }
    Ok(Compared::Same { bytes })
}

/// An answer that is not the text of the file.
fn judge_other(answer: Answer) -> Compared {
    match answer {
        Answer::Error(m) if refused_type(&m) => Compared::SkippedBinary,
        Answer::Error(m) => {
            Compared::Differs(format!("the verifier cannot read it ({})", error_kind(&m)))
        }
        Answer::Other(kind) => {
            // Named only when it is a kind fanout knows: nothing of the answer is quoted.
            let known = [
                "notebook", "image", "pdf", "nothing", "unknown", "text", "resource",
            ];
            let kind = known
                .into_iter()
                .find(|k| *k == kind)
                .unwrap_or("another kind of answer");
            Compared::Skipped(format!("the verifier shows it as {kind}, not as text"))
        }
        Answer::Unrecognized(_) => {
            Compared::Differs("unrecognised answer from the verifier".into())
        }
        Answer::Text { .. } => Compared::Differs("unexpected answer".into()),
    }
}

/// How many lines (≥ 1) of `rest` fit in one page.
fn page_len(rest: &[&str]) -> usize {
    let mut bytes = 0usize;
    let mut n = 0usize;
    for l in rest.iter().take(PAGE_MAX_LINES) {
        bytes += l.len() + 1;
        if n > 0 && bytes > PAGE_MAX_BYTES {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// `None` when `got` shows `want`; else where they first differ, quoting only the committed
/// side (`want`). `first_line` numbers the lines of `want` in the file. Numbered answers carry
/// no trailing-newline information.
fn diff_text(got: &str, want: &str, numbered: bool, first_line: usize) -> Option<String> {
    if got == want {
        return None;
    }
    if numbered {
        let trimmed = want.strip_suffix('\n').unwrap_or(want);
        if got == trimmed || got.strip_suffix('\n') == Some(trimmed) {
            return None;
        }
    }
    let (g, w): (Vec<&str>, Vec<&str>) = (got.split('\n').collect(), want.split('\n').collect());
    for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
        if a != b {
            return Some(format!(
                "line {} differs (the commit has {:?})",
                first_line + i,
                truncate(b, 80)
            ));
        }
    }
    Some(format!(
        "the verifier does not see the commit's {} line(s) ({} bytes) from line {first_line}",
        w.len(),
        want.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeReader;
    use super::*;

    fn compare(reader: &FakeReader, committed: &str) -> Compared {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(compare_file(reader, Path::new("/w/f.txt"), committed))
            .expect("no verifier error")
    }

    #[test]
    fn normalization_and_paging() {
        assert_eq!(normalize("\u{feff}a\r\nb\rc\n"), "a\nb\rc\n");
        let long = "x".repeat(50_000);
        let lines = vec![long.as_str(), long.as_str(), "y"];
        assert_eq!(page_len(&lines), 1);
        let short: Vec<&str> = std::iter::repeat_n("abc", 5000).collect();
        assert_eq!(page_len(&short), PAGE_MAX_LINES);
        assert_eq!(page_len(&[]), 1);
    }

    #[test]
    fn differences_name_the_line() {
        let why = diff_text("a\nB\n", "a\nb\n", false, 10).expect("differs");
        assert!(why.contains("line 11"), "{why}");
        let why = diff_text("a\nb\nSECRET", "a\nb", false, 1).expect("differs");
        assert!(why.contains("commit's 2 line(s)"), "{why}");
        assert!(!why.contains("SECRET"), "{why}");
        // Only the committed side is quoted.
        let why = diff_text("root:$6$hash\n", "fn main() {}\n", false, 1).expect("differs");
        assert_eq!(why, "line 1 differs (the commit has \"fn main() {}\")");
        // Numbered answers carry no trailing newline; JSON answers do.
        assert!(diff_text("fn main() {}\n\n  x", "fn main() {}\n\n  x\n", true, 1).is_none());
        assert!(diff_text("a", "a\n", false, 1).is_some());
    }

    #[test]
    fn small_files_are_read_whole_and_compared_exactly() {
        let r = FakeReader::new(Some("\u{feff}a\r\nb\n"));
        assert_eq!(compare(&r, "\u{feff}a\r\nb\n"), Compared::Same { bytes: 4 });
        assert_eq!(r.calls().len(), 1);
        assert_eq!(r.calls()[0], json!({"file_path": "/w/f.txt"}));
        // The worktree no longer holds what was committed.
        let r = FakeReader::new(Some("a\nb\nX\n"));
        match compare(&r, "a\nb\n") {
            Compared::Differs(why) => assert!(why.contains("line 3"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_files_are_paged_and_the_line_count_checked() {
        let text: String = (0..30_000).map(|i| format!("line {i}\n")).collect();
        let r = FakeReader::new(Some(&text));
        let Compared::Same { bytes } = compare(&r, &text) else {
            panic!("paged read differs")
        };
        let calls = r.calls();
        // Pages are joined without the `\n` between them.
        assert_eq!(bytes, (text.len() - (calls.len() - 1)) as u64);
        assert!(calls.len() > 2, "{calls:?}");
        assert!(calls.iter().all(|c| c.get("limit").is_some()));
        // A file that grew on disk after the commit: `totalLines` differs.
        let r = FakeReader::new(Some(&format!("{text}more\n")));
        match compare(&r, &text) {
            Compared::Differs(why) => assert!(why.contains("another number of lines"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cut_whole_reads_are_paged_again() {
        // Below the whole-read limit but cut by the verifier: paged, and equal.
        let text = "é".repeat(20_000) + "\nend\n";
        let mut r = FakeReader::new(Some(&text));
        r.cut = 1000;
        assert!(matches!(compare(&r, &text), Compared::Same { .. }));
        assert!(r.calls().len() > 1);
        // Older verifiers cut whole reads at 2000 lines and number them: paged, then a read
        // past the end must come back empty.
        let text: String = (0..2500).map(|i| format!("{i}\n")).collect();
        let mut r = FakeReader::new(Some(&text));
        r.numbered = true;
        assert!(matches!(compare(&r, &text), Compared::Same { .. }));
        let last = r.calls().last().cloned().unwrap_or_default();
        assert_eq!(last.get("offset"), Some(&json!(2502)));
    }

    #[test]
    fn overlong_lines_are_skipped_not_failed() {
        let text = format!("a\n{}\nb\n", "x".repeat(150_000));
        let r = FakeReader::new(Some(&text));
        match compare(&r, &text) {
            Compared::Skipped(why) => assert!(why.starts_with("line 2 is longer"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_answers() {
        let r = FakeReader::new(None);
        match compare(&r, "a\n") {
            Compared::Differs(why) => {
                assert_eq!(why, "the verifier cannot read it (not found)")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            judge_other(Answer::Error(
                "This tool cannot read binary files. Use another".into()
            )),
            Compared::SkippedBinary
        );
        assert_eq!(
            judge_other(Answer::Other("notebook".into())),
            Compared::Skipped("the verifier shows it as notebook, not as text".into())
        );
        assert_eq!(
            judge_other(Answer::Other("secret bytes".into())),
            Compared::Skipped(
                "the verifier shows it as another kind of answer, not as text".into()
            )
        );
        assert_eq!(
            judge_other(Answer::Unrecognized("secret bytes".into())),
            Compared::Differs("unrecognised answer from the verifier".into())
        );
        assert_eq!(
            judge_other(Answer::Error("EACCES: secret bytes".into())),
            Compared::Differs("the verifier cannot read it (permission denied)".into())
        );
    }
}
