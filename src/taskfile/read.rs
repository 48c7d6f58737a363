//! The task file's validator: reading one field of an object, every problem kept.

use serde_json::{Map, Value};

use super::model::*;
use super::problem::Problem;
use super::validator::Validator;

impl Validator {
    pub(super) fn problem(&mut self, location: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.to_string(),
            message: message.into(),
        });
    }

    /// Reports fields not in `allowed`.
    pub(super) fn known_fields(&mut self, obj: &Map<String, Value>, path: &str, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.problem(
                    &format!("{path}.{key}"),
                    format!(
                        "unknown field {key:?}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    pub(super) fn object<'a>(
        &mut self,
        value: &'a Value,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        match value {
            Value::Object(m) => Some(m),
            other => {
                self.problem(path, format!("expected an object, found {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn string(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<String> {
        match obj.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    &format!("{path}.{key}"),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub(super) fn strings(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<Vec<String>> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.problem(
                            &format!("{loc}[{i}]"),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.problem(
                    &loc,
                    format!("expected an array of strings, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// An array of globs, each checked to compile.
    pub(super) fn globs(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<Vec<String>> {
        let globs = self.strings(obj, key, path)?;
        for (i, g) in globs.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                self.problem(&format!("{path}.{key}[{i}]"), format!("invalid glob: {e}"));
            }
        }
        Some(globs)
    }

    pub(super) fn positive(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<f64> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::Number(n) => match n.as_f64() {
                Some(x) if x > 0.0 && x.is_finite() => Some(x),
                _ => {
                    self.problem(&loc, format!("must be a positive number, found {n}"));
                    None
                }
            },
            other => {
                self.problem(
                    &loc,
                    format!("expected a positive number, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A size in bytes: a whole number of at least 1.
    pub(super) fn bytes(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<u64> {
        let must = "must be a whole number of bytes (at least 1)";
        self.whole(
            obj,
            (key, path),
            |x| x >= 1,
            must,
            "a whole number of bytes",
        )
    }

    /// How many times a failing command runs again: a whole number from 0 to [`MAX_RETRIES`].
    pub(super) fn retries(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<u32> {
        let max = super::model::MAX_RETRIES;
        let must = format!("must be a whole number from 0 to {max}");
        let accept = |x: u64| x <= u64::from(max);
        self.whole(obj, (key, path), accept, &must, "a whole number")
            .map(|x| x as u32)
    }

    pub(super) fn count(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<u32> {
        let must = "must be a whole number from 1 to 100";
        self.whole(
            obj,
            (key, path),
            |x| (1..=100).contains(&x),
            must,
            "a whole number",
        )
        .map(|x| x as u32)
    }

    /// A whole number at `key` of the object at `path` that `accept` takes; otherwise a
    /// problem: it `must` be …, or `expected` … was.
    fn whole(
        &mut self,
        obj: &Map<String, Value>,
        (key, path): (&str, &str),
        accept: impl Fn(u64) -> bool,
        must: &str,
        expected: &str,
    ) -> Option<u64> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::Number(n) => match n.as_u64().filter(|&x| accept(x)) {
                Some(x) => Some(x),
                None => {
                    self.problem(&loc, format!("{must}, found {n}"));
                    None
                }
            },
            other => {
                self.problem(&loc, format!("expected {expected}, found {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn boolean(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<bool> {
        match obj.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(
                    &format!("{path}.{key}"),
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub(super) fn verify(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<VerifyCommand> {
        let loc = format!("{path}.{key}");
        match obj.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(VerifyCommand::Shell(s.clone())),
            Value::Array(_) => {
                let argv = self.strings(obj, key, path)?;
                if argv.is_empty() || argv[0].is_empty() {
                    self.problem(&loc, "verify command must not be empty");
                    return None;
                }
                Some(VerifyCommand::Argv(argv))
            }
            Value::String(_) => {
                self.problem(&loc, "verify command must not be empty");
                None
            }
            other => {
                self.problem(
                    &loc,
                    format!(
                        "expected an argv array or a shell string, found {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }
}

/// The JSON type of a value, in words.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
