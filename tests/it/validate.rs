//! `fanout validate` and bad task files: every problem named, exit 2, nothing created.

use serde_json::json;

use crate::support::*;

fn assert_nothing_created(repo: &TestRepo, branches_before: &[String]) {
    assert_eq!(repo.branches(), branches_before, "no branch may be created");
    assert!(repo.worktrees().is_empty(), "no worktree may be created");
    assert!(
        !repo.path.join(".git/fanout/runs").exists()
            || std::fs::read_dir(repo.path.join(".git/fanout/runs"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn each_bad_file_is_rejected_with_its_location() {
    let repo = TestRepo::with_files(1);
    let branches = repo.branches();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "syntax",
            "{\n  \"tasks\": [\n    {\"id\": \"a\", \"prompt\": \"x\",}\n  ]\n}".into(),
            "line 3, column",
        ),
        (
            "duplicate",
            json!([{"id":"a","prompt":"x"},{"id":"a","prompt":"y"}]).to_string(),
            "$[1].id: duplicate task id \"a\"",
        ),
        (
            "traversal",
            json!([{"id":"../x","prompt":"x"}]).to_string(),
            "$[0].id: task id \"../x\"",
        ),
        (
            "unknown-field",
            json!({"tasks":[{"id":"a","prompt":"x","promtp":"typo"}]}).to_string(),
            "$.tasks[0].promtp: unknown field",
        ),
        (
            "empty-prompt",
            json!([{"id":"a","prompt":"   "}]).to_string(),
            "$[0].prompt: prompt must not be empty",
        ),
        (
            "unknown-agent",
            json!([{"id":"a","prompt":"x","agent":"nobody"}]).to_string(),
            "$[0].agent: unknown agent \"nobody\"",
        ),
    ];
    for (name, text, needle) in cases {
        let file = repo.write_tasks_text(&text);
        let out = std::process::Command::new(fanout_bin())
            .args(["validate", "--tasks", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{name}: expected {needle:?} in\n{}",
            stderr(&out)
        );
        let (run, report) = repo.run(&file, &[]);
        assert_eq!(run.status.code(), Some(2), "{name}: {}", stderr(&run));
        assert!(stderr(&run).contains(needle), "{name}: {}", stderr(&run));
        assert!(report.is_null());
        assert_nothing_created(&repo, &branches);
    }
}

#[test]
fn all_problems_are_listed_at_once() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks_text(
        &json!({"version": 2, "tasks": [
            {"id": "a", "prompt": ""},
            {"id": "a b", "prompt": "x", "timeout_secs": -1},
            {"prompt": "no id", "depends_on": ["zz"]}
        ]})
        .to_string(),
    );
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "$.version",
        "$.tasks[0].prompt",
        "$.tasks[1].id",
        "$.tasks[1].timeout_secs",
        "$.tasks[2]: missing field \"id\"",
        "$.tasks[2].depends_on[0]",
    ] {
        assert!(err.contains(needle), "{needle} missing in\n{err}");
    }
}

#[test]
fn missing_environment_variable_is_named() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"a": {"protocol": "exec", "command": "true", "env": {"TOKEN": "${FANOUT_TEST_SURELY_UNSET_VAR}"}}},
        "tasks": [{"id": "t", "prompt": "x", "agent": "a"}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("FANOUT_TEST_SURELY_UNSET_VAR"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_valid_file_gets_a_one_line_summary() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "version": 1,
        "agents": {"e": {"protocol": "exec", "command": "true"}},
        "defaults": {"agent": "e"},
        "tasks": [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y", "depends_on": ["a"]}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("2 task(s)"));
}

#[test]
fn a_missing_agent_program_stops_the_run_before_anything_is_created() {
    let repo = TestRepo::with_files(1);
    let branches = repo.branches();
    let file = repo.write_tasks(&json!({
        "agents": {"ghost": {"protocol": "exec", "command": "fanout-no-such-program-anywhere"}},
        "tasks": [{"id": "t", "prompt": "x", "agent": "ghost"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fanout-no-such-program-anywhere"),
        "{}",
        stderr(&out)
    );
    assert!(report.is_null());
    assert_nothing_created(&repo, &branches);
}

/// A placeholder the template's source does not fill is refused with its field path, before
/// anything runs: `{path}` in an `items` template would reach the agent literally.
#[test]
fn placeholders_a_source_does_not_fill_are_refused() {
    let repo = TestRepo::with_files(2);
    let branches = repo.branches();
    let file = repo.write_tasks(&json!({"tasks": [
        {"id": "lang-{item}", "prompt": "translate {path} to {item}", "for_each": {"items": ["de", "fr"]}},
        {"id": "fix-{stme}", "prompt": "fix {path} (code: {value})", "paths": ["{path}"],
         "for_each": {"files": "src/*.txt"}},
        {"id": "c-{item}", "prompt": "x", "for_each": {"items": ["a"], "contains": "TODO"}}
    ]}));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("$.tasks[0].prompt: {path} is not a placeholder of a `items` template (the item is {item})"),
        "{text}"
    );
    assert!(
        text.contains("$.tasks[1].id: {stme} is not a placeholder of a `files` template"),
        "{text}"
    );
    assert!(!text.contains("{value}"), "prompts may hold braces: {text}");
    assert!(
        text.contains("$.tasks[2].for_each.contains: `contains` applies to \"files\" only"),
        "{text}"
    );
    let (out, _) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_nothing_created(&repo, &branches);
    // Each source's own placeholders pass, and expand.
    let file = repo.write_tasks(&json!({"tasks": [
        {"id": "lang-{item}-{n}", "prompt": "translate {name} to {item}", "for_each": {"items": ["de"]}},
        {"id": "fix-{stem}", "prompt": "fix {path} in {dir} ({name}, {paths})", "paths": ["{path}"],
         "for_each": {"files": "src/*.txt"}}
    ]}));
    let out = repo.fanout(&["validate", "--expand", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("fix-file_01"), "{}", stdout(&out));
}

/// Items that are objects fill their fields: `{path}` is meaningful there.
#[test]
fn object_items_fill_their_fields_and_nothing_else() {
    let repo = TestRepo::with_files(2);
    let file = repo.write_tasks(&json!({"tasks": [
        {"id": "port-{stem}", "prompt": "port {path} to {api}", "paths": ["{path}"],
         "for_each": {"items": [
             {"path": "src/file_00.txt", "stem": "zero", "api": "v2"},
             {"path": "src/file_01.txt", "stem": "one", "api": "v3"}]}}
    ]}));
    let out = repo.fanout(&["validate", "--expand", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("port-zero") && text.contains("port src/file_01.txt to v3"),
        "{text}"
    );
    let file = repo.write_tasks(&json!({"tasks": [
        {"id": "port-{stem}", "prompt": "port {path} in {dir}",
         "for_each": {"items": [{"path": "a", "stem": "a"}]}}
    ]}));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("$.tasks[0].prompt: {dir} is not a placeholder of a `items` template; it has: {path} {stem} {n}"),
        "{}",
        stderr(&out)
    );
}
