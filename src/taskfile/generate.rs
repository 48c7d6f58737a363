/*!
Generated tasks: a task with `for_each` is a template expanded over the repository's tracked
files at the base commit (`{"files": "src/**/*.py"}`, optionally `"batch": N` files per task),
over folders holding a marker file (`{"dirs_with": "pyproject.toml"}`), or over a list
(`{"items": [...]}`). Placeholders in `id`, `prompt`, `paths` and `verify`: `{path}`, `{dir}`,
`{stem}`, `{name}`, `{item}`, `{paths}` (a batch's paths joined by spaces) and `{n}` (1-based
number of the generated task). Expanded ids are slugified and must be unique.

Expansion works on the JSON value and yields a plain task file, which is then parsed like any
other: generated tasks are checked exactly like written ones.
*/

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::problem::Problem;

/// Placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["path", "dir", "stem", "name", "item", "paths", "n"];

/// The most tasks one template may generate (a glob matching a whole monorepo is a mistake).
pub const MAX_GENERATED: usize = 100_000;

/// Whether the file (object or bare array) has a template.
pub fn has_templates(value: &Value) -> bool {
    tasks_of(value).is_some_and(|(items, _)| items.iter().any(|t| t.get("for_each").is_some()))
}

fn tasks_of(value: &Value) -> Option<(&Vec<Value>, &'static str)> {
    match value {
        Value::Array(a) => Some((a, "$")),
        Value::Object(o) => o
            .get("tasks")
            .and_then(Value::as_array)
            .map(|a| (a, "$.tasks")),
        _ => None,
    }
}

/// What a `for_each` iterates over.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Files {
        glob: String,
        batch: usize,
        /// `contains`: only files whose content matches this regex.
        contains: Option<String>,
    },
    DirsWith(String),
    /// One task per item: a string (`{item}`, `{name}`), or an object of strings whose fields
    /// are the placeholders (`{"path": "a.py", "lang": "de"}`: `{path}`, `{lang}`).
    Items(Vec<BTreeMap<String, String>>),
}

/// Checks a `for_each` value; every problem is reported at `loc`.
pub fn parse_for_each(value: &Value, loc: &str, problems: &mut Vec<Problem>) -> Option<Source> {
    let mut problem = |at: String, message: String| {
        problems.push(Problem {
            location: at,
            message,
        })
    };
    let Value::Object(obj) = value else {
        problem(
            loc.into(),
            "expected an object with one of \"files\", \"dirs_with\", \"items\"".into(),
        );
        return None;
    };
    for k in obj.keys() {
        if !["files", "dirs_with", "items", "batch", "contains"].contains(&k.as_str()) {
            problem(
                format!("{loc}.{k}"),
                format!(
                    "unknown field {k:?}; expected one of: files, dirs_with, items, batch, contains"
                ),
            );
        }
    }
    let given: Vec<&str> = ["files", "dirs_with", "items"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    if given.len() != 1 {
        problem(
            loc.into(),
            format!(
                "needs exactly one of \"files\", \"dirs_with\", \"items\" (found {})",
                if given.is_empty() {
                    "none".into()
                } else {
                    given.join(", ")
                }
            ),
        );
        return None;
    }
    let batch = match obj.get("batch") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=10_000).contains(&n) && given[0] == "files" => n as usize,
            Some(_) if given[0] != "files" => {
                problem(
                    format!("{loc}.batch"),
                    "batching applies to \"files\" only".into(),
                );
                return None;
            }
            _ => {
                problem(
                    format!("{loc}.batch"),
                    format!("must be a whole number from 1 to 10000, found {v}"),
                );
                return None;
            }
        },
    };
    let contains = match (obj.get("contains"), given[0]) {
        (None, _) => None,
        (Some(Value::String(re)), "files") => match content_regex(re) {
            Ok(_) if !re.is_empty() => Some(re.clone()),
            Ok(_) => {
                problem(
                    format!("{loc}.contains"),
                    "expected a non-empty regex".into(),
                );
                return None;
            }
            Err(e) => {
                problem(format!("{loc}.contains"), format!("invalid regex: {e}"));
                return None;
            }
        },
        (Some(Value::String(_)), _) => {
            problem(
                format!("{loc}.contains"),
                "`contains` applies to \"files\" only".into(),
            );
            return None;
        }
        (Some(v), _) => {
            problem(
                format!("{loc}.contains"),
                format!("expected a regex string, found {v}"),
            );
            return None;
        }
    };
    match given[0] {
        "files" => match obj.get("files") {
            Some(Value::String(g)) if !g.is_empty() => match globset::Glob::new(g) {
                Ok(_) => Some(Source::Files {
                    glob: g.clone(),
                    batch,
                    contains,
                }),
                Err(e) => {
                    problem(format!("{loc}.files"), format!("invalid glob: {e}"));
                    None
                }
            },
            _ => {
                problem(format!("{loc}.files"), "expected a non-empty glob".into());
                None
            }
        },
        "dirs_with" => match obj.get("dirs_with") {
            Some(Value::String(m)) if !m.is_empty() && !m.contains('/') => {
                Some(Source::DirsWith(m.clone()))
            }
            _ => {
                problem(
                    format!("{loc}.dirs_with"),
                    "expected a file name (no `/`), e.g. \"pyproject.toml\"".into(),
                );
                None
            }
        },
        _ => match obj.get("items") {
            Some(Value::Array(items)) if !items.is_empty() => {
                let out = super::items::parse_items(items, &format!("{loc}.items"), problems);
                Some(Source::Items(out))
            }
            _ => {
                problem(
                    format!("{loc}.items"),
                    "expected a non-empty array of strings or of objects".into(),
                );
                None
            }
        },
    }
}

/// `id` with every placeholder replaced by a sample value, to check the template's id shape.
pub fn sample_id(id: &str) -> String {
    let mut s = id.to_string();
    for p in PLACEHOLDERS {
        s = s.replace(&format!("{{{p}}}"), "x");
    }
    // An object item's fields too (a placeholder the source lacks is reported on its own).
    for w in super::braces::words_in_braces(id) {
        s = s.replace(&format!("{{{w}}}"), "x");
    }
    s
}

/// Reads a tracked file's content at the base commit: `None` when it cannot be read or is
/// larger than the given number of bytes.
pub type ReadTracked<'a> = dyn Fn(&str, u64) -> Option<Vec<u8>> + 'a;

/// The largest file `contains` searches; larger ones never match.
pub const CONTAINS_MAX_BYTES: u64 = 4 << 20;

/// The placeholder values of each task a source generates, from the tracked files.
fn bindings(
    source: &Source,
    tracked: &[String],
    read: &ReadTracked<'_>,
) -> Result<Vec<BTreeMap<String, String>>, String> {
    let mut out = Vec::new();
    match source {
        Source::Files {
            glob,
            batch,
            contains,
        } => {
            let m = globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("invalid glob: {e}"))?
                .compile_matcher();
            let mut files: Vec<&String> =
                tracked.iter().filter(|f| m.is_match(f.as_str())).collect();
            if files.is_empty() {
                return Err(format!(
                    "{glob:?} matches no tracked file at the base commit"
                ));
            }
            if let Some(re) = contains {
                let re = content_regex(re).map_err(|e| format!("invalid regex: {e}"))?;
                files.retain(|f| content_matches(read, f, &re));
                if files.is_empty() {
                    return Err(format!(
                        "no tracked file matching {glob:?} contains {:?} at the base commit",
                        re.as_str()
                    ));
                }
            }
            for chunk in files.chunks(*batch) {
                let mut b = path_binding(chunk[0]);
                b.insert(
                    "paths".into(),
                    chunk
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                out.push(b);
            }
        }
        Source::DirsWith(marker) => {
            let mut dirs: Vec<String> = tracked
                .iter()
                .filter_map(|f| {
                    let (dir, name) = f.rsplit_once('/').unwrap_or(("", f.as_str()));
                    (name == marker).then(|| {
                        if dir.is_empty() {
                            ".".to_string()
                        } else {
                            dir.to_string()
                        }
                    })
                })
                .collect();
            dirs.sort();
            dirs.dedup();
            if dirs.is_empty() {
                return Err(format!(
                    "no tracked folder holds {marker:?} at the base commit"
                ));
            }
            for d in dirs {
                let name = if d == "." {
                    "root".to_string()
                } else {
                    d.rsplit('/').next().unwrap_or(&d).to_string()
                };
                let mut b = BTreeMap::new();
                b.insert("path".into(), d.clone());
                b.insert("paths".into(), d.clone());
                b.insert("dir".into(), d);
                b.insert("stem".into(), name.clone());
                b.insert("name".into(), name);
                out.push(b);
            }
        }
        Source::Items(items) => out.extend(items.iter().cloned()),
    }
    if out.len() > MAX_GENERATED {
        return Err(format!(
            "generates {} tasks; at most {MAX_GENERATED}",
            out.len()
        ));
    }
    Ok(out)
}

/// Whether the text file `path` (not binary: no NUL byte) has a match of `re`.
/// `contains` as grep reads it: `^` and `$` match at the start and end of every line.
fn content_regex(re: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(re).multi_line(true).build()
}

fn content_matches(read: &ReadTracked<'_>, path: &str, re: &regex::bytes::Regex) -> bool {
    read(path, CONTAINS_MAX_BYTES).is_some_and(|bytes| !bytes.contains(&0) && re.is_match(&bytes))
}

fn path_binding(path: &str) -> BTreeMap<String, String> {
    let (dir, name) = path.rsplit_once('/').unwrap_or((".", path));
    let stem = match name.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s,
        _ => name,
    };
    let mut b = BTreeMap::new();
    b.insert("path".into(), path.to_string());
    b.insert("dir".into(), dir.to_string());
    b.insert("name".into(), name.to_string());
    b.insert("stem".into(), stem.to_string());
    b
}

fn fill(text: &str, b: &BTreeMap<String, String>) -> String {
    let mut s = text.to_string();
    for (k, v) in b {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// The group of the tasks a template with `"group": true` generates: named after the
/// template's id (`rename-{stem}` → `rename-stem`), so the generated tasks share it.
pub fn template_group(template_id: &str) -> String {
    let name = slugify(template_id);
    if name.is_empty() {
        "group".into()
    } else {
        name
    }
}

/// A task id made from generated text: characters outside `[A-Za-z0-9._-]` become `-`, runs
/// of `-` and `.` shrink to one, no leading dot or dash, at most 64 characters.
pub fn slugify(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
            c
        } else {
            '-'
        };
        if (c == '-' || c == '.') && out.ends_with(['-', '.']) {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_start_matches(['.', '-']);
    let mut s: String = trimmed.chars().take(64).collect();
    while s.ends_with(".lock") {
        s.truncate(s.len() - 5);
    }
    s.trim_end_matches(['.', '-']).to_string()
}

/// Expands every template of the file over `tracked` (the repository's tracked files at the
/// base commit, sorted); written tasks stay as they are. Problems name the template.
pub fn expand(
    value: &Value,
    tracked: &[String],
    read: &ReadTracked<'_>,
) -> Result<Value, Vec<Problem>> {
    let Some((items, tasks_path)) = tasks_of(value) else {
        return Ok(value.clone());
    };
    let mut problems = Vec::new();
    let mut tasks = Vec::new();
    // id → where it came from, for clashes.
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let loc = format!("{tasks_path}[{i}]");
        let Some(obj) = item.as_object() else {
            tasks.push(item.clone());
            continue;
        };
        let Some(fe) = obj.get("for_each") else {
            if let Some(id) = obj.get("id").and_then(Value::as_str) {
                sources.insert(id.to_string(), loc.clone());
            }
            tasks.push(item.clone());
            continue;
        };
        let Some(source) = parse_for_each(fe, &format!("{loc}.for_each"), &mut problems) else {
            continue;
        };
        let binds = match bindings(&source, tracked, read) {
            Ok(b) => b,
            Err(e) => {
                problems.push(Problem {
                    location: format!("{loc}.for_each"),
                    message: e,
                });
                continue;
            }
        };
        for (n, mut b) in binds.into_iter().enumerate() {
            b.insert("n".into(), (n + 1).to_string());
            let what = b.get("path").or(b.get("item")).cloned().unwrap_or_default();
            let mut task: Map<String, Value> = Map::new();
            for (k, v) in obj {
                if k == "for_each" {
                    continue;
                }
                let v = match (k.as_str(), v) {
                    ("id", Value::String(s)) => Value::String(slugify(&fill(s, &b))),
                    ("group", Value::Bool(true)) => Value::String(template_group(
                        obj.get("id").and_then(Value::as_str).unwrap_or_default(),
                    )),
                    ("prompt" | "verify", Value::String(s)) => Value::String(fill(s, &b)),
                    ("paths" | "verify", Value::Array(a)) => {
                        let mut filled = Vec::new();
                        for x in a {
                            match (x.as_str(), b.get("paths")) {
                                // A batch's paths in `paths`: one entry each.
                                (Some("{paths}"), Some(all)) if k == "paths" => filled
                                    .extend(all.split(' ').map(|p| Value::String(p.to_string()))),
                                (Some(s), _) => filled.push(Value::String(fill(s, &b))),
                                (None, _) => filled.push(x.clone()),
                            }
                        }
                        Value::Array(filled)
                    }
                    _ => v.clone(),
                };
                task.insert(k.clone(), v);
            }
            let here = format!("{loc} ({what})");
            if let Some(id) = task.get("id").and_then(Value::as_str) {
                if let Some(first) = sources.get(id) {
                    problems.push(Problem {
                        location: format!("{loc}.id"),
                        message: format!(
                            "generated id {id:?} for {what:?} clashes with the task from {first}; put a placeholder that tells them apart in the id"
                        ),
                    });
                    continue;
                }
                sources.insert(id.to_string(), here);
            }
            tasks.push(Value::Object(task));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(match value {
        Value::Array(_) => Value::Array(tasks),
        other => {
            let mut o = other.clone();
            o["tasks"] = Value::Array(tasks);
            o
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tracked() -> Vec<String> {
        [
            "pyproject.toml",
            "src/app/a.py",
            "src/app/b.py",
            "src/app/sub/c.py",
            "src/app/README.md",
            "svc/api/pyproject.toml",
            "svc/web/package.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn expands_files_dirs_and_items() {
        let v = json!({"tasks": [
            {"id": "fix-{path}", "prompt": "fix {path} ({stem}, {name}, in {dir})",
             "paths": ["{path}"], "for_each": {"files": "src/**/*.py"}},
            {"id": "py-{dir}", "prompt": "upgrade {dir}", "for_each": {"dirs_with": "pyproject.toml"}},
            {"id": "lang-{item}", "prompt": "translate to {item}", "for_each": {"items": ["de", "fr"]}}
        ]});
        let out = expand(&v, &tracked(), &|_, _| None).expect("expands");
        let ids: Vec<&str> = out["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "fix-src-app-a.py",
                "fix-src-app-b.py",
                "fix-src-app-sub-c.py",
                "py",
                "py-svc-api",
                "lang-de",
                "lang-fr"
            ]
        );
        assert_eq!(
            out["tasks"][0]["prompt"],
            "fix src/app/a.py (a, a.py, in src/app)"
        );
        assert_eq!(out["tasks"][0]["paths"], json!(["src/app/a.py"]));
        assert!(out["tasks"][0].get("for_each").is_none());
    }

    #[test]
    fn batches_join_paths_and_clashes_name_both_sources() {
        let v = json!([{"id": "batch-{n}", "prompt": "fix {paths}", "paths": ["{paths}"],
                        "for_each": {"files": "src/**/*.py", "batch": 2}}]);
        let out = expand(&v, &tracked(), &|_, _| None).expect("expands");
        assert_eq!(out[0]["prompt"], "fix src/app/a.py src/app/b.py");
        assert_eq!(out[0]["paths"], json!(["src/app/a.py", "src/app/b.py"]));
        assert_eq!(out[1]["id"], "batch-2");
        let v = json!([{"id": "one", "prompt": "x"},
                       {"id": "one", "prompt": "{path}", "for_each": {"files": "src/app/*.py"}}]);
        let p = expand(&v, &tracked(), &|_, _| None).unwrap_err();
        assert!(
            p[0].message.contains("clashes with the task from $[0]"),
            "{p:?}"
        );
        let v = json!([{"id": "x", "prompt": "{path}", "for_each": {"files": "nothing/**"}}]);
        assert!(expand(&v, &tracked(), &|_, _| None).unwrap_err()[0]
            .message
            .contains("matches no tracked file"));
    }

    #[test]
    fn object_items_fill_their_fields() {
        let v = json!([{"id": "fix-{stem}-{lang}", "prompt": "translate {path} to {lang} ({n})",
                        "paths": ["{path}"],
                        "for_each": {"items": [{"path": "a.py", "lang": "de", "stem": "a"},
                                               {"path": "b.py", "lang": "fr", "stem": "b"}]}}]);
        let out = expand(&v, &tracked(), &|_, _| None).expect("expands");
        assert_eq!(out[1]["id"], "fix-b-fr");
        assert_eq!(out[1]["prompt"], "translate b.py to fr (2)");
        assert_eq!(out[1]["paths"], json!(["b.py"]));
        let mut problems = Vec::new();
        let bad = json!({"items": [{"path": "a"}, {"other": "b"}, "c", {"path": 3}]});
        parse_for_each(&bad, "$[0].for_each", &mut problems);
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter()
                .any(|p| p.starts_with("$[0].for_each.items[1]: every item has the same fields")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|p| p.starts_with("$[0].for_each.items[2]")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.starts_with("$[0].for_each.items[3].path")),
            "{text:?}"
        );
    }

    #[test]
    fn contains_reads_line_by_line_as_grep_does() {
        let re = content_regex(r"^\s*var ").expect("regex");
        assert!(re.is_match(b"'use strict';\n\n  var x = 1;\n"));
        assert!(!re.is_match(b"let x = 'var y';\n"));
        assert!(content_regex(r"^}$").expect("regex").is_match(b"{\n}\nx\n"));
    }

    #[test]
    fn slugs_are_task_ids() {
        for raw in ["src/a b/c.py", "..x", "a//b", "x.lock", "-é-"] {
            let s = slugify(raw);
            assert!(
                s.is_empty() || crate::ids::TaskId::parse(&s).is_ok(),
                "{raw} -> {s}"
            );
        }
        assert_eq!(slugify("src/app/a.py"), "src-app-a.py");
    }
}
