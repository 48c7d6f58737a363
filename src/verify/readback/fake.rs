//! A verifier simulated on an in-memory file, for the unit tests of comparison and read-back.

use std::sync::Mutex;

use serde_json::Value;

use super::answer::Answer;
use super::compare::{normalize, ReadTool};
use super::VerifierError;

/// A verifier simulated on an in-memory file, shaped like `claude mcp serve` 2.1.332 (JSON
/// answers: whole reads cut at `cut` characters, paged reads refused above 100 000) or,
/// with `numbered`, like older versions (`cat -n` lines, every read cut at 2000 lines).
pub struct FakeReader {
    pub disk: Option<String>,
    pub numbered: bool,
    pub cut: usize,
    pub calls: Mutex<Vec<Value>>,
}

impl FakeReader {
    pub fn new(disk: Option<&str>) -> FakeReader {
        FakeReader {
            disk: disk.map(str::to_string),
            numbered: false,
            cut: 85_000,
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn calls(&self) -> Vec<Value> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn answer(&self, args: &Value) -> Answer {
        let Some(disk) = &self.disk else {
            return Answer::Error("File does not exist.".into());
        };
        let shown = normalize(disk);
        let lines: Vec<&str> = shown.split('\n').collect();
        let offset = args.get("offset").and_then(Value::as_u64);
        let limit = args.get("limit").and_then(Value::as_u64);
        let (content, truncated) = match (offset, limit) {
            (None, None) if disk.len() > 256 * 1024 => {
                return Answer::Error("File content exceeds maximum allowed size".into())
            }
            (None, None) if self.numbered => (lines[..lines.len().min(2000)].join("\n"), false),
            (None, None) if shown.chars().count() > self.cut => {
                (shown.chars().take(self.cut).collect(), true)
            }
            (None, None) => (shown.clone(), false),
            (o, l) => {
                let from = (o.unwrap_or(1).max(1) as usize - 1).min(lines.len());
                let n = l.unwrap_or(2000) as usize;
                let page = lines[from..(from + n).min(lines.len())].join("\n");
                if page.chars().count() > 100_000 {
                    return Answer::Error(
                        "File content exceeds maximum allowed tokens. Use offset".into(),
                    );
                }
                (page, false)
            }
        };
        Answer::Text {
            content,
            total_lines: (!self.numbered).then_some(lines.len()),
            numbered: self.numbered,
            truncated,
        }
    }
}

impl ReadTool for FakeReader {
    async fn read(&self, args: Value) -> Result<Answer, VerifierError> {
        let answer = self.answer(&args);
        if let Ok(mut c) = self.calls.lock() {
            c.push(args);
        }
        Ok(answer)
    }
}
