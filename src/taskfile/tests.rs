//! Unit tests of the task file parser.

use super::*;

fn problems(text: &str) -> Vec<String> {
    parse(text)
        .err()
        .unwrap_or_default()
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn accepts_bare_array_and_object() {
    let f = parse(r#"[{"id":"a","prompt":"x"}]"#).expect("valid");
    assert_eq!(f.tasks.len(), 1);
    let f = parse(
        r#"{"version":1,"base":"HEAD","defaults":{"agent":"e","timeout_secs":5,"verify":["true"]},
            "agents":{"e":{"protocol":"exec","command":"sh","args":["-c","true"]}},
            "tasks":[{"id":"a","prompt":"x","paths":["src/**"]}]}"#,
    )
    .expect("valid");
    assert_eq!(f.agents["e"].protocol, Protocol::Exec);
    assert_eq!(
        f.defaults.verify,
        Some(VerifyCommand::Argv(vec!["true".into()]))
    );
}

#[test]
fn accepts_a_byte_order_mark() {
    let f = parse("\u{feff}[{\"id\":\"a\",\"prompt\":\"x\"}]").expect("valid");
    assert_eq!(f.tasks.len(), 1);
}

#[test]
fn syntax_errors_have_line_and_column() {
    let p = problems("{\n  \"tasks\": [,]\n}");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("line 2, column"), "{p:?}");
}

#[test]
fn reports_every_problem_with_its_path() {
    let p = problems(
        r#"{"tasks":[
            {"id":"a","prompt":"x"},
            {"id":"a","prompt":"y"},
            {"id":"../x","prompt":"z"},
            {"id":"b","prompt":"  ","promt":"typo"},
            {"id":"c","prompt":"w","agent":"nope","timeout_secs":0}
        ]}"#,
    );
    let joined = p.join("\n");
    assert!(
        joined.contains("$.tasks[1].id: duplicate task id \"a\""),
        "{joined}"
    );
    assert!(
        joined.contains("$.tasks[2].id: task id \"../x\""),
        "{joined}"
    );
    assert!(
        joined.contains("$.tasks[3].prompt: prompt must not be empty"),
        "{joined}"
    );
    assert!(
        joined.contains("$.tasks[3].promt: unknown field"),
        "{joined}"
    );
    assert!(
        joined.contains("$.tasks[4].agent: unknown agent \"nope\""),
        "{joined}"
    );
    assert!(
        joined.contains("$.tasks[4].timeout_secs: must be a positive number"),
        "{joined}"
    );
}

#[test]
fn a_duplicate_id_is_reported_next_to_other_problems() {
    let p = problems(
        r#"[{"id":"a","prompt":"x","timeout_secs":-1},
            {"id":"a","prompt":""}]"#,
    );
    let joined = p.join("\n");
    assert!(
        joined.contains("$[1].id: duplicate task id \"a\" (first used at $[0])"),
        "{joined}"
    );
    assert!(joined.contains("$[0].timeout_secs"), "{joined}");
}

#[test]
fn detects_cycles_and_unknown_dependencies() {
    let p = problems(
        r#"[{"id":"a","prompt":"x","depends_on":["c"]},
            {"id":"b","prompt":"x","depends_on":["a"]},
            {"id":"c","prompt":"x","depends_on":["b","zz"]}]"#,
    );
    let joined = p.join("\n");
    assert!(
        joined.contains("dependency cycle: a -> c -> b -> a"),
        "{joined}"
    );
    assert!(
        joined.contains("$[2].depends_on[1]: unknown task id \"zz\""),
        "{joined}"
    );
}

#[test]
fn expands_env_and_names_missing_variables() {
    let lookup = |n: &str| (n == "KEY").then(|| "secret".to_string());
    assert_eq!(
        expand_env("Bearer ${KEY}", &lookup).as_deref(),
        Ok("Bearer secret")
    );
    let err = expand_env("${MISSING_ONE}", &lookup).unwrap_err();
    assert!(err.contains("MISSING_ONE"));
}

#[test]
fn only_task_shaped_json_is_a_task_file() {
    use serde_json::json;
    for v in [
        json!({"tasks": []}),
        json!({"version": 1}),
        json!([]),
        json!([{"id": "a", "prompt": "p"}]),
        json!([{"id": "a", "for_each": {}}, {"oops": 1}]),
    ] {
        assert!(has_task_file_shape(&v), "{v}");
    }
    for v in [
        json!({"api_key": "x"}),
        json!([{"id": "x", "secret": "y"}]),
        json!(["a", "b"]),
        json!("s"),
        json!(3),
        json!(null),
    ] {
        assert!(!has_task_file_shape(&v), "{v}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.json");
    std::fs::write(&path, r#"{"token": "sk-unit-secret-0000000000000000"}"#).unwrap();
    let err = load(&path).unwrap_err().to_string();
    assert_eq!(err, format!("{} is not a fanout task file", path.display()));
}

#[test]
fn candidates_take_a_count_or_profiles_and_select_a_mode() {
    let f = parse(
        r#"{"defaults":{"candidates":3,"select":"first"},
            "agents":{"hi":{"protocol":"exec","command":"true"},"lo":{"protocol":"exec","command":"true"}},
            "tasks":[{"id":"a","prompt":"x"},
                     {"id":"b","prompt":"y","candidates":[{"agent":"hi"},{"agent":"lo"},{}],"select":"review"}]}"#,
    )
    .expect("valid");
    assert_eq!(f.defaults.candidates.as_ref().map(Vec::len), Some(3));
    assert_eq!(f.defaults.select, Some(SelectMode::First));
    let b = &f.tasks[1];
    assert_eq!(
        b.candidates
            .as_deref()
            .map(|c| c.iter().map(|c| c.agent.as_deref()).collect::<Vec<_>>()),
        Some(vec![Some("hi"), Some("lo"), None])
    );
    assert_eq!(b.select, Some(SelectMode::Review));
}

#[test]
fn bad_candidates_and_select_are_problems_with_their_path() {
    let p = problems(
        r#"{"defaults":{"candidates":[{"agent":"ghost"}]},
            "tasks":[{"id":"a","prompt":"x","candidates":0},
                     {"id":"b","prompt":"x","candidates":21},
                     {"id":"c","prompt":"x","candidates":[]},
                     {"id":"d","prompt":"x","candidates":[{"agnet":"x"}]},
                     {"id":"e","prompt":"x","candidates":[{"agent":"nope"}]},
                     {"id":"f","prompt":"x","select":"best"}]}"#,
    );
    let joined = p.join("\n");
    for want in [
        "$.defaults.candidates[0].agent: unknown agent \"ghost\"",
        "$.tasks[0].candidates: must be a whole number from 1 to 20",
        "$.tasks[1].candidates: must be",
        "$.tasks[2].candidates: must be",
        "$.tasks[3].candidates[0]",
        "$.tasks[4].candidates[0].agent: unknown agent \"nope\"",
        "$.tasks[5].select: must be one of review, smallest, first",
    ] {
        assert!(joined.contains(want), "{want} not in:\n{joined}");
    }
}
