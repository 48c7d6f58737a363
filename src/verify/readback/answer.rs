//! What one `Read` call answered, in either shape the verifier uses: the JSON text block of
//! Claude Code 2.x (`{"type":"text","file":{…}}`) or older `cat -n` numbered lines.

use serde_json::Value;

use crate::jsonrpc::truncate;

/// What one `Read` call answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// File text; `total_lines` only in the JSON shape; `truncated` when the verifier says it
    /// cut the answer.
    Text {
        content: String,
        total_lines: Option<usize>,
        numbered: bool,
        truncated: bool,
    },
    /// A JSON answer of another type (image, notebook, pdf, …).
    Other(String),
    /// `isError` (or a JSON-RPC error): not readable, with the verifier's message.
    Error(String),
    /// Text in neither known shape.
    Unrecognized(String),
}

/// Reads either answer shape of a `tools/call` result of `Read`.
pub(crate) fn parse_answer(result: &Value) -> Answer {
    let blocks = result
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text: Vec<&str> = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let text = text.join("\n");
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return Answer::Error(if text.is_empty() {
            "error without a message".into()
        } else {
            text
        });
    }
    if text.is_empty() {
        let kind = blocks
            .first()
            .and_then(|b| b.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("nothing");
        return Answer::Other(truncate(kind, 40));
    }
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text.trim()) {
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("unknown");
        let file = obj.get("file");
        let content = file.and_then(|f| f.get("content")).and_then(Value::as_str);
        return match (kind, content) {
            ("text", Some(c)) => Answer::Text {
                content: c.to_string(),
                total_lines: file
                    .and_then(|f| f.get("totalLines"))
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok()),
                numbered: false,
                truncated: file
                    .and_then(|f| f.get("truncatedByTokenCap"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            _ => Answer::Other(truncate(kind, 40)),
        };
    }
    parse_numbered(&text)
}

/// `cat -n` style: `     1\tline` (or `     1→line`), reminders in `<system-reminder>` dropped.
fn parse_numbered(text: &str) -> Answer {
    let mut body = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<system-reminder>") {
        body.push_str(&rest[..start]);
        rest = match rest[start..].find("</system-reminder>") {
            Some(end) => &rest[start + end + "</system-reminder>".len()..],
            None => "",
        };
    }
    body.push_str(rest);
    let body = body.trim_end_matches(['\n', ' ']);
    if body.trim().is_empty() {
        return Answer::Text {
            content: String::new(),
            total_lines: None,
            numbered: true,
            truncated: false,
        };
    }
    let mut out = Vec::new();
    for line in body.split('\n') {
        let l = line.trim_start_matches(' ');
        let digits = l.len() - l.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = &l[digits..];
        let content = after.strip_prefix('\t').or_else(|| after.strip_prefix('→'));
        match content {
            Some(c) if digits > 0 => out.push(c),
            _ => return Answer::Unrecognized(truncate(line, 200)),
        }
    }
    Answer::Text {
        content: out.join("\n"),
        total_lines: None,
        numbered: true,
        truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text_block(t: &str) -> Value {
        json!({"content": [{"type": "text", "text": t}]})
    }

    #[test]
    fn json_shape() {
        let inner = json!({"type":"text","file":{"filePath":"/x","content":"a\nb\n","numLines":3,"startLine":1,"totalLines":3}});
        assert_eq!(
            parse_answer(&text_block(&inner.to_string())),
            Answer::Text {
                content: "a\nb\n".into(),
                total_lines: Some(3),
                numbered: false,
                truncated: false
            }
        );
        let cut = json!({"type":"text","file":{"content":"ab","numLines":1,"startLine":1,"totalLines":9,"truncatedByTokenCap":true}});
        assert!(matches!(
            parse_answer(&text_block(&cut.to_string())),
            Answer::Text {
                truncated: true,
                ..
            }
        ));
        let nb = json!({"type":"notebook","file":{"cells":[]}});
        assert_eq!(
            parse_answer(&text_block(&nb.to_string())),
            Answer::Other("notebook".into())
        );
    }

    #[test]
    fn json_shape_keeps_the_content_exactly() {
        // Trailing blanks, a lone CR, tabs and an empty last line are the file's, not noise.
        let inner = json!({"type":"text","file":{"content":"a \r\tb\n\n","totalLines":3}});
        assert_eq!(
            parse_answer(&text_block(&format!("  {inner}\n"))),
            Answer::Text {
                content: "a \r\tb\n\n".into(),
                total_lines: Some(3),
                numbered: false,
                truncated: false
            }
        );
        // JSON text without `file.content` is not text.
        let odd = json!({"type":"text","file":{}});
        assert_eq!(
            parse_answer(&text_block(&odd.to_string())),
            Answer::Other("text".into())
        );
    }

    #[test]
    fn numbered_shape_and_errors() {
        let a = parse_answer(&text_block(
            "     1\tfn main() {}\n     2\t\n     3→  x\n<system-reminder>note</system-reminder>\n",
        ));
        assert_eq!(
            a,
            Answer::Text {
                content: "fn main() {}\n\n  x".into(),
                total_lines: None,
                numbered: true,
                truncated: false
            }
        );
        assert!(matches!(
            parse_answer(&text_block("hello there")),
            Answer::Unrecognized(_)
        ));
        let err = json!({"content":[{"type":"text","text":"File does not exist."}],"isError":true});
        assert_eq!(
            parse_answer(&err),
            Answer::Error("File does not exist.".into())
        );
        assert_eq!(
            parse_answer(&json!({"isError": true})),
            Answer::Error("error without a message".into())
        );
    }

    #[test]
    fn empty_and_non_text_answers() {
        // A read past the end in the numbered shape: only a reminder, no lines.
        assert_eq!(
            parse_answer(&text_block(
                "<system-reminder>file is shorter</system-reminder>\n"
            )),
            Answer::Text {
                content: String::new(),
                total_lines: None,
                numbered: true,
                truncated: false
            }
        );
        let image = json!({"content": [{"type": "image", "data": "", "mimeType": "image/png"}]});
        assert_eq!(parse_answer(&image), Answer::Other("image".into()));
        assert_eq!(parse_answer(&json!({})), Answer::Other("nothing".into()));
        // An unclosed reminder drops the rest, numbered lines before it stay.
        assert_eq!(
            parse_answer(&text_block("     1\ta\n<system-reminder>cut")),
            Answer::Text {
                content: "a".into(),
                total_lines: None,
                numbered: true,
                truncated: false
            }
        );
    }
}
