//! `fanout schema`: the task-file schema, and every example task file of the documentation
//! passes both the schema and `fanout validate`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

fn tasks_schema() -> Value {
    let out = std::process::Command::new(fanout_bin())
        .args(["schema", "tasks"])
        .output()
        .expect("fanout runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("the schema is JSON")
}

/// Whether a JSON value looks like a task file: an object with `tasks`, or an array of tasks.
fn is_task_file(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("tasks"),
        Value::Array(items) => {
            !items.is_empty()
                && items
                    .iter()
                    .all(|t| t.get("id").is_some() && t.get("prompt").is_some())
        }
        _ => false,
    }
}

/// The fenced ```json blocks of a Markdown file, with their line numbers.
fn json_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```json") => current = Some((i + 2, String::new())),
            Some(_) if fence.starts_with("```") => blocks.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every example task file: ```json blocks in README.md and docs/*.md, and `*.json` under
/// examples/ — (where, text).
fn example_task_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    let mut under_docs = Vec::new();
    files_under(&root.join("docs"), &mut under_docs);
    docs.extend(
        under_docs
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let mut found = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).expect("read the doc");
        for (line, block) in json_blocks(&text) {
            // Fragments (a lone `"agents": {…}`) are not files.
            if let Ok(v) = serde_json::from_str::<Value>(&block) {
                if is_task_file(&v) {
                    found.push((format!("{}:{line}", doc.display()), block));
                }
            }
        }
    }
    let mut examples = Vec::new();
    files_under(&root.join("examples"), &mut examples);
    for p in examples
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let text = std::fs::read_to_string(&p).expect("read the example");
        let v: Value = serde_json::from_str(&text).expect("examples are valid JSON");
        if is_task_file(&v) {
            found.push((p.display().to_string(), text));
        }
    }
    found
}

#[test]
fn every_example_task_file_passes_the_schema_and_validate() {
    let schema = tasks_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    let examples = example_task_files();
    assert!(
        examples.len() >= 3,
        "expected the README, docs and examples task files, found {:?}",
        examples.iter().map(|(w, _)| w).collect::<Vec<_>>()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (where_, text)) in examples.iter().enumerate() {
        let v: Value = serde_json::from_str(text).expect("parsed before");
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{where_}: {errors:?}");
        let file = tmp.path().join(format!("example-{i}.json"));
        std::fs::write(&file, text).expect("write");
        let mut cmd = std::process::Command::new(fanout_bin());
        cmd.args(["validate", "--tasks"]).arg(&file);
        // Examples take secrets from the environment (`${OPENAI_API_KEY}`): give each a value.
        for name in text.split("${").skip(1).filter_map(|s| s.split('}').next()) {
            cmd.env(name, "example-value");
        }
        let out = cmd.output().expect("fanout runs");
        assert_eq!(out.status.code(), Some(0), "{where_}: {}", stderr(&out));
    }
}

#[test]
fn the_schema_refuses_what_validate_refuses() {
    let validator = jsonschema::draft202012::new(&tasks_schema()).expect("compiles");
    for bad in [
        serde_json::json!({"tasks": [{"id": "a", "prompt": "x", "promtp": "typo"}]}),
        serde_json::json!({"version": 2, "tasks": [{"id": "a", "prompt": "x"}]}),
        serde_json::json!([{"id": "../x", "prompt": "x"}]),
        serde_json::json!([{"id": "a", "prompt": "   "}]),
        serde_json::json!({"tasks": []}),
        serde_json::json!([{"id": "a", "prompt": "x", "max_attempts": 0}]),
        serde_json::json!({"agents": {"e": {"protocol": "ftp", "command": "x"}}, "tasks": [{"id": "a", "prompt": "x"}]}),
    ] {
        assert!(!validator.is_valid(&bad), "schema accepts {bad}");
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("t.json");
        std::fs::write(&file, bad.to_string()).expect("write");
        let out = std::process::Command::new(fanout_bin())
            .args(["validate", "--tasks"])
            .arg(&file)
            .output()
            .expect("fanout runs");
        assert_eq!(out.status.code(), Some(2), "validate accepts {bad}");
    }
}

#[test]
fn the_events_schema_is_printed_and_unknown_kinds_are_refused() {
    let out = std::process::Command::new(fanout_bin())
        .args(["schema", "events"])
        .output()
        .expect("fanout runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(jsonschema::validator_for(&schema).is_ok());
    let out = std::process::Command::new(fanout_bin())
        .args(["schema", "nonsense"])
        .output()
        .expect("fanout runs");
    assert_eq!(out.status.code(), Some(2));
}
