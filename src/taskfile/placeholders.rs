//! Which placeholders a template's source fills, and the check that a template uses no other:
//! a `{path}` in an `items` template would otherwise reach the agent literally.

use serde_json::{Map, Value};

use super::braces::words_in_braces;
use super::generate::{Source, PLACEHOLDERS};
use super::problem::Problem;

/// The placeholders `source` fills in each generated task.
pub fn available(source: &Source) -> Vec<String> {
    let names: Vec<&str> = match source {
        Source::Files { .. } | Source::DirsWith(_) => {
            vec!["path", "dir", "stem", "name", "paths", "n"]
        }
        // Strings: `item` and `name`; objects: their fields.
        Source::Items(items) => items
            .first()
            .map(|b| b.keys().map(String::as_str).collect())
            .unwrap_or_default(),
    };
    let mut out: Vec<String> = names.into_iter().map(str::to_string).collect();
    if !out.iter().any(|n| n == "n") {
        out.push("n".into());
    }
    out
}

/// The fields placeholders are filled in.
const FILLED: [&str; 4] = ["id", "prompt", "paths", "verify"];

/// Reports each placeholder of the template `obj` that its source does not fill. In `id`,
/// `paths` and `verify` any `{word}` counts; in `prompt` only the names of placeholders (a
/// prompt may hold code with braces of its own).
pub fn check(obj: &Map<String, Value>, source: &Source, path: &str, problems: &mut Vec<Problem>) {
    let have = available(source);
    for field in FILLED {
        let texts: Vec<(String, &str)> = match obj.get(field) {
            Some(Value::String(s)) => vec![(format!("{path}.{field}"), s.as_str())],
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((format!("{path}.{field}[{i}]"), v.as_str()?)))
                .collect(),
            _ => continue,
        };
        for (at, text) in texts {
            for name in words_in_braces(text) {
                let known = PLACEHOLDERS.contains(&name);
                if have.iter().any(|h| h == name) || (field == "prompt" && !known) {
                    continue;
                }
                let what = match source {
                    Source::Files { .. } => "files",
                    Source::DirsWith(_) => "dirs_with",
                    Source::Items(_) => "items",
                };
                let strings = have.iter().any(|h| h == "item");
                let hint = if name == "path" && strings {
                    " (the item is {item})".to_string()
                } else {
                    String::new()
                };
                problems.push(Problem {
                    location: at.clone(),
                    message: format!(
                        "{{{name}}} is not a placeholder of a `{what}` template{hint}; it has: {}",
                        have.iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(template: Value, source: Source) -> Vec<String> {
        let mut p = Vec::new();
        check(template.as_object().unwrap(), &source, "$.tasks[0]", &mut p);
        p.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_placeholder_the_source_does_not_fill_is_named_with_its_field() {
        let items = || {
            Source::Items(vec![[("item", "a"), ("name", "a")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()])
        };
        let p = problems(
            json!({"id": "t-{item}", "prompt": "fix {path}", "paths": ["{item}", "{path}"]}),
            items(),
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("$.tasks[0].prompt: {path} is not a placeholder of a `items` template (the item is {item})"), "{p:?}");
        assert!(p[1].starts_with("$.tasks[0].paths[1]: {path}"), "{p:?}");
        // Unknown words: in machine fields always, in the prompt not (code has braces).
        let files = Source::Files {
            glob: "*.py".into(),
            batch: 1,
            contains: None,
        };
        let p = problems(
            json!({"id": "t-{stme}", "prompt": "use {value} and {x: 1} of {path}", "verify": "test {dir}"}),
            files,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("$.tasks[0].id: {stme}"), "{p:?}");
        assert!(problems(json!({"id": "t-{n}", "prompt": "{item} {name}"}), items()).is_empty());
    }
}
