/*!
The task file (`tasks.json`, version 1): parsing and validation.

The file is read as a JSON value first (so syntax errors carry line and column), then walked
by hand so that *every* problem is collected with its JSON path, instead of stopping at the
first one as serde's derive would. Unknown fields are errors: a typo must not be ignored.
*/

use std::path::Path;

use serde_json::Value;

mod agents;
mod braces;
pub mod caches;
pub mod generate;
pub mod group;
mod items;
mod merge;
mod model;
pub mod network;
mod placeholders;
mod problem;
mod read;
pub mod schema;
mod sections;
mod tasks;
mod validator;

pub use model::*;
pub use problem::Problem;
use validator::Validator;

#[derive(Debug, thiserror::Error)]
pub enum TaskFileError {
    #[error("cannot read task file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task file {path} has {} problem(s):\n{}", problems.len(), render(problems))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
    /// Valid JSON without a task file's shape: nothing of its content is quoted (it may be a
    /// credentials file given by mistake).
    #[error("{path} is not a fanout task file")]
    NotATaskFile { path: String },
}

/// Whether a JSON document has a task file's shape: an object with `tasks` or `version`, or
/// an array of objects of which at least one looks like a task (`prompt` or `for_each`).
pub fn has_task_file_shape(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.contains_key("tasks") || m.contains_key("version"),
        Value::Array(items) => {
            items.iter().all(Value::is_object)
                && (items.is_empty()
                    || items.iter().any(|i| {
                        i.as_object()
                            .is_some_and(|o| o.contains_key("prompt") || o.contains_key("for_each"))
                    }))
        }
        _ => false,
    }
}

/// [`parse`] for the file at `path`, refusing valid JSON without a task file's shape first.
fn parse_file(path: &Path, text: &str) -> Result<TaskFile, TaskFileError> {
    let json = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Ok(value) = serde_json::from_str::<Value>(json) {
        if !has_task_file_shape(&value) {
            return Err(TaskFileError::NotATaskFile {
                path: path.display().to_string(),
            });
        }
    }
    parse(text).map_err(|problems| TaskFileError::Invalid {
        path: path.display().to_string(),
        problems,
    })
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a task file and expands its templates over `tracked` (the repository's tracked files
/// at the base commit); returns the expanded text (a plain task file) and its parse.
pub fn load_expanded(
    path: &Path,
    tracked: &TrackedFiles<'_>,
    read: &ReadTrackedAt<'_>,
) -> Result<(String, TaskFile), TaskFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let invalid = |problems| TaskFileError::Invalid {
        path: path.display().to_string(),
        problems,
    };
    let file = parse_file(path, &text)?;
    if !file.tasks.iter().any(|t| t.template) {
        return Ok((text, file));
    }
    let value: Value = serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
        .map_err(|e| {
            invalid(vec![Problem {
                location: "$".into(),
                message: e.to_string(),
            }])
        })?;
    let files = tracked(file.base.as_deref()).map_err(|e| {
        invalid(vec![Problem {
            location: "$".into(),
            message: format!("cannot list the repository's files: {e}"),
        }])
    })?;
    let base = file.base.as_deref();
    let expanded =
        generate::expand(&value, &files, &|p, limit| read(base, p, limit)).map_err(invalid)?;
    let text = serde_json::to_string_pretty(&expanded).unwrap_or_default();
    let file = parse(&text).map_err(invalid)?;
    Ok((text, file))
}

/// Reads and validates a task file.
pub fn load(path: &Path) -> Result<TaskFile, TaskFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_file(path, &text)
}

/// Parses task-file text, returning every problem found.
pub fn parse(text: &str) -> Result<TaskFile, Vec<Problem>> {
    // Editors on Windows save UTF-8 with a byte-order mark, which JSON parsers reject.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = serde_json::from_str(text).map_err(|e| {
        vec![Problem {
            location: format!("line {}, column {}", e.line(), e.column()),
            message: format!("invalid JSON: {}", strip_position(&e.to_string())),
        }]
    })?;
    let mut v = Validator::default();
    let file = v.file(&value);
    if v.problems.is_empty() {
        Ok(file)
    } else {
        Err(v.problems)
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

pub use tasks::find_cycle;

#[cfg(test)]
mod tests;
