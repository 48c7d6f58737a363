//! Overlap before dispatch (issue 21): tasks whose declared `paths` overlap are named by
//! `fanout validate` and at the start of a run; under `overlap: serialize` (the default) they
//! run in a lane, each from the verified result of the one before, a failure passed over;
//! `parallel` keeps today's conflicts. And every task's rounds (agent, feedback, retry) are
//! visible in the events, report.json, `fanout log` and the HTML report.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::*;

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// The run's own event stream (`run-events.jsonl` in its folder).
fn run_events(report: &Value) -> Vec<Value> {
    let dir = report["run_dir"].as_str().expect("run_dir");
    let text = std::fs::read_to_string(std::path::Path::new(dir).join("run-events.jsonl"))
        .expect("run-events.jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("an event line"))
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// `line.txt` holding `base`, committed.
fn line_repo(runner: Runner) -> TestRepo {
    let repo = TestRepo::with_files(1).run_by(runner);
    std::fs::write(repo.path.join("line.txt"), "base\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "line"]);
    repo
}

/// An exec agent that appends its task id to line 1 of `line.txt` (from the content it
/// finds), or fails without a change when its prompt says `fail`.
fn appender() -> Value {
    let script =
        r#"[ "$FANOUT_PROMPT" = fail ] && exit 1; sed -i "1s/\$/ $FANOUT_TASK_ID/" line.txt"#;
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

/// Tasks (id, prompt) that all declare `line.txt`, and a task `free` on a path of its own.
fn lane_tasks(repo: &TestRepo, tasks: &[(&str, &str)]) -> PathBuf {
    let mut list: Vec<Value> = tasks
        .iter()
        .map(|(id, prompt)| json!({"id": id, "prompt": prompt, "paths": ["line.txt"]}))
        .collect();
    list.push(json!({"id": "free", "prompt": "x", "agent": "own", "paths": ["free.txt"]}));
    repo.write_tasks(&json!({
        "agents": {
            "e": appender(),
            "own": {"protocol": "exec", "command": "sh", "args": ["-c", "echo free > free.txt"]}
        },
        "defaults": {"agent": "e"},
        "tasks": list
    }))
}

fn field(report: &Value, id: &str, key: &str) -> String {
    task(report, id)[key].as_str().unwrap_or("").to_string()
}

fn line_at(repo: &TestRepo, rev: &str) -> String {
    String::from_utf8(repo.tree_files(rev).remove("line.txt").unwrap_or_default())
        .unwrap_or_default()
}

fn serialized_tasks_start_from_the_one_before(runner: Runner) {
    let repo = line_repo(runner);
    let file = lane_tasks(&repo, &[("a", "x"), ("b", "x")]);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    // No conflict: b started from a's verified commit, its commit's parent.
    let a_commit = field(&report, "a", "commit");
    assert!(!a_commit.is_empty(), "{report}");
    assert_eq!(field(&report, "b", "started_from"), a_commit, "{report}");
    let b_commit = field(&report, "b", "commit");
    assert_eq!(
        git_text(&repo.path, &["rev-parse", &format!("{b_commit}^")]),
        a_commit
    );
    assert_eq!(line_at(&repo, &b_commit), "base a b\n");
    let merged = report["integration_commit"].as_str().expect("integration");
    assert_eq!(line_at(&repo, merged), "base a b\n");
    // A task outside the lane starts from the base.
    assert_eq!(
        field(&report, "free", "started_from"),
        report["base"].as_str().unwrap_or("?")
    );
    // The overlap is said at the start of the run: an event and a line.
    let events = run_events(&report);
    let overlap = named(&events, "overlap");
    assert_eq!(overlap.len(), 1, "{events:?}");
    assert_eq!(overlap[0]["tasks"], json!(["a", "b"]));
    assert_eq!(overlap[0]["paths"], json!(["line.txt"]));
    assert_eq!(overlap[0]["serialized"], json!(true));
    assert!(
        stderr(&out).contains("tasks a, b overlap in line.txt — one after another"),
        "{}",
        show(&out)
    );
    assert!(named(&events, "conflict").is_empty(), "{events:?}");
}

crate::every_way!(
    serialized_overlapping_tasks_start_from_the_one_before,
    serialized_tasks_start_from_the_one_before
);

fn a_failure_is_passed_over(runner: Runner) {
    let repo = line_repo(runner);
    let file = lane_tasks(
        &repo,
        &[("a", "fail"), ("b", "x"), ("c", "fail"), ("d", "x")],
    );
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "4"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "failed", "{st:?}");
    assert_eq!(st["b"], "merged", "{st:?}");
    assert_eq!(st["c"], "failed", "{st:?}");
    assert_eq!(st["d"], "merged", "{st:?}");
    // The first failed: b starts from the base; c failed: d from b, the last good point.
    let base = report["base"].as_str().expect("base").to_string();
    assert_eq!(field(&report, "b", "started_from"), base, "{report}");
    assert_eq!(
        field(&report, "d", "started_from"),
        field(&report, "b", "commit"),
        "{report}"
    );
    let merged = report["integration_commit"].as_str().expect("integration");
    assert_eq!(line_at(&repo, merged), "base b d\n");
}

crate::every_way!(
    a_failed_task_of_a_lane_is_passed_over,
    a_failure_is_passed_over
);

fn parallel_keeps_the_conflict(runner: Runner) {
    let repo = line_repo(runner);
    let file = lane_tasks(&repo, &[("a", "x"), ("b", "x")]);
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "3", "--overlap", "parallel"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "conflict", "{st:?}");
    let base = report["base"].as_str().expect("base").to_string();
    assert_eq!(field(&report, "b", "started_from"), base, "{report}");
    let events = run_events(&report);
    let overlap = named(&events, "overlap");
    assert_eq!(overlap.len(), 1, "{events:?}");
    assert_eq!(overlap[0]["serialized"], json!(false));
    assert!(
        stderr(&out).contains("at the same time; they may conflict"),
        "{}",
        show(&out)
    );
}

crate::every_way!(
    parallel_overlapping_tasks_conflict,
    parallel_keeps_the_conflict
);

#[test]
fn validate_names_the_overlapping_tasks() {
    let repo = line_repo(Runner::Invoker);
    let file = repo.write_tasks(&json!({
        "agents": {"e": appender()},
        "defaults": {"agent": "e"},
        "tasks": [
            {"id": "a", "prompt": "x", "paths": ["src/*.rs"]},
            {"id": "b", "prompt": "x", "paths": ["docs/"]},
            {"id": "c", "prompt": "x", "paths": ["src/lib.rs"]},
            {"id": "d", "prompt": "x", "paths": ["docs/guide/intro.md"]},
            {"id": "e", "prompt": "x", "paths": ["/README.md"]},
            {"id": "f", "prompt": "x"}
        ]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("overlapping paths: 2 group(s) (overlap: serialize;"),
        "{text}"
    );
    assert!(text.contains("  a, c: src/*.rs, src/lib.rs\n"), "{text}");
    assert!(
        text.contains("  b, d: docs/, docs/guide/intro.md\n"),
        "{text}"
    );
    assert!(!text.contains("README"), "{text}");
    // Told parallel, it says they may conflict; without overlaps, no section.
    let file = repo.write_tasks(&json!({
        "agents": {"e": appender()},
        "defaults": {"agent": "e", "overlap": "parallel"},
        "tasks": [
            {"id": "a", "prompt": "x", "paths": ["x.txt"]},
            {"id": "b", "prompt": "x", "paths": ["x.txt"]}
        ]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().expect("utf-8")]);
    assert!(
        stdout(&out).contains("they run at the same time and may conflict"),
        "{}",
        show(&out)
    );
    let file = repo.write_tasks(&json!({
        "agents": {"e": appender()},
        "tasks": [{"id": "a", "prompt": "x", "paths": ["x.txt"]}, {"id": "b", "prompt": "x", "paths": ["y.txt"]}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().expect("utf-8")]);
    assert!(!stdout(&out).contains("overlapping"), "{}", show(&out));
    // A wrong value is a problem with its place.
    let file = repo.write_tasks(&json!({
        "agents": {"e": appender()},
        "defaults": {"overlap": "sometimes"},
        "tasks": [{"id": "a", "prompt": "x"}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("$.defaults.overlap"),
        "{}",
        show(&out)
    );
}

/// Task `b` fails its verify command until its agent was given feedback (then it writes
/// `b.ok`); `a` and `b` run in parallel and conflict, so `b` runs again (`--on-conflict retry`).
fn rounds_are_visible(runner: Runner) {
    let repo = line_repo(runner);
    let b_agent = r#"sed -i "1s/\$/ $FANOUT_TASK_ID/" line.txt; [ -n "$FANOUT_FEEDBACK" ] && echo ok > b.ok; true"#;
    let file = repo.write_tasks(&json!({
        "agents": {
            "e": appender(),
            "b": {"protocol": "exec", "command": "sh", "args": ["-c", b_agent]}
        },
        "defaults": {"agent": "e"},
        "tasks": [
            {"id": "a", "prompt": "x", "paths": ["line.txt"]},
            {"id": "b", "prompt": "x", "agent": "b", "paths": ["line.txt", "b.ok"],
             "verify": "test -f b.ok"}
        ]
    }));
    let html = repo.tmp.path().join("report.html");
    let (out, report) = repo.run(
        &file,
        &[
            "--no-readback",
            "--jobs",
            "2",
            "--overlap",
            "parallel",
            "--on-conflict",
            "retry",
            "--html",
            html.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let b = task(&report, "b");
    let rounds: Vec<(u64, String, String)> = b["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["round"].as_u64().unwrap_or(0),
                r["kind"].as_str().unwrap_or("").to_string(),
                r["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        rounds,
        vec![
            (1, "agent".into(), "failed".into()),
            (2, "feedback".into(), "conflict".into()),
            (3, "retry".into(), "merged".into())
        ],
        "{b}"
    );
    let cause = |k: usize| b["rounds"][k]["cause"].as_str().unwrap_or("").to_string();
    assert!(cause(0).is_empty(), "{b}");
    assert!(cause(1).contains("command failed"), "{b}");
    assert!(
        cause(2).contains("conflict") && cause(2).contains("line.txt"),
        "{b}"
    );
    assert_eq!(b["rounds"][1]["conflict_paths"], json!(["line.txt"]), "{b}");
    // The terminal and the table count the same rounds.
    assert!(
        stderr(&out).contains("running it again (round 3)"),
        "{}",
        show(&out)
    );
    assert!(stdout(&out).contains("merged (round 3)"), "{}", show(&out));
    // a had one round: its report is that round.
    assert!(task(&report, "a")["rounds"].is_null(), "{report}");
    // The events: a round_started per round, with kind and cause.
    let events = run_events(&report);
    let started: Vec<(u64, String)> = named(&events, "round_started")
        .iter()
        .filter(|e| e["task"] == "b")
        .map(|e| {
            (
                e["round"].as_u64().unwrap_or(0),
                e["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        started,
        vec![
            (1, "agent".into()),
            (2, "feedback".into()),
            (3, "retry".into())
        ]
    );
    // `fanout log`: a line per round.
    let run_id = report["run_id"].as_str().expect("run id");
    let log = repo.fanout(&["log", run_id, "b"]);
    let text = stdout(&log);
    assert!(text.contains("round 1 (agent)"), "{}", show(&log));
    assert!(
        text.contains("round 2 (feedback): command failed"),
        "{}",
        show(&log)
    );
    assert!(text.contains("round 3 (retry): conflict"), "{}", show(&log));
    // The HTML report, per task.
    let page = std::fs::read_to_string(&html).expect("the page");
    assert!(
        page.contains("round 2 (feedback): conflict in line.txt"),
        "{page}"
    );
    assert!(page.contains("round 3 (retry): merged"), "{page}");
}

crate::every_way!(rounds_with_kind_and_cause_are_visible, rounds_are_visible);

/// A lane follows merge order: `a` depends on `b`, so `b` runs first and `a` starts from its
/// commit (no deadlock between the lane and the dependency); `--only` forms lanes among the
/// tasks it selects.
fn lanes_follow_dependencies_and_only(runner: Runner) {
    let repo = line_repo(runner);
    let file = repo.write_tasks(&json!({
        "agents": {"e": appender()},
        "defaults": {"agent": "e"},
        "tasks": [
            {"id": "a", "prompt": "x", "paths": ["line.txt"], "depends_on": ["b"]},
            {"id": "b", "prompt": "x", "paths": ["line.txt"]},
            {"id": "c", "prompt": "x", "paths": ["line.txt"]}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        field(&report, "a", "started_from"),
        field(&report, "b", "commit"),
        "{report}"
    );
    assert_eq!(
        field(&report, "c", "started_from"),
        field(&report, "a", "commit"),
        "{report}"
    );
    let merged = report["integration_commit"].as_str().expect("integration");
    assert_eq!(line_at(&repo, merged), "base b a c\n");
    // Only c: alone, from the base, no overlap to speak of.
    let (out, report) = repo.run(&file, &["--no-readback", "--only", "c"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        field(&report, "c", "started_from"),
        report["base"].as_str().unwrap_or("?")
    );
    assert!(named(&run_events(&report), "overlap").is_empty());
    let merged = report["integration_commit"].as_str().expect("integration");
    assert_eq!(line_at(&repo, merged), "base c\n");
}

crate::every_way!(
    lanes_follow_dependencies_and_only_selects,
    lanes_follow_dependencies_and_only
);

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or(Value::Null)
}

/// kill -9 while the lane's second task runs: `fanout resume` keeps the first (verified, not
/// run again) and runs the second again from its commit.
fn resume_keeps_the_lane(runner: Runner) {
    for kind in ["overlay", "worktree"] {
        let repo = line_repo(runner);
        let hang = r#"[ "$FANOUT_TEST_PHASE" = 1 ] && exec sleep 300; sed -i "1s/\$/ $FANOUT_TASK_ID/" line.txt"#;
        let file = repo.write_tasks(&json!({
            "agents": {
                "e": appender(),
                "hang": {"protocol": "exec", "command": "sh", "args": ["-c", hang]}
            },
            "defaults": {"agent": "e"},
            "tasks": [
                {"id": "a", "prompt": "x", "paths": ["line.txt"]},
                {"id": "b", "prompt": "x", "agent": "hang", "paths": ["line.txt"]}
            ]
        }));
        let mut child = repo
            .fanout_command()
            .args(["run", "--no-readback", "--workspace", kind, "--tasks"])
            .arg(&file)
            .arg("--repo")
            .arg(&repo.path)
            .env("FANOUT_TEST_PHASE", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("fanout starts");
        let runs = repo.path.join(".git/fanout/runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let run_id = loop {
            let state_of = |id: &str| read_json(&runs.join(id).join("state.json"));
            let id = std::fs::read_dir(&runs)
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().to_string());
            if let Some(id) = id {
                let s = state_of(&id);
                if s["tasks"]["a"]["status"] == "verified"
                    && s["tasks"]["b"]["phase"]["phase"] == "agent_turn"
                {
                    break id;
                }
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the run did not reach b's agent turn");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let out = with_env("FANOUT_TEST_PHASE", "2", || {
            repo.fanout(&["resume", &run_id])
        });
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let report = read_json(&runs.join(&run_id).join("report.json"));
        assert!(
            statuses(&report).values().all(|s| s == "merged"),
            "{report}"
        );
        assert_eq!(
            field(&report, "b", "started_from"),
            field(&report, "a", "commit"),
            "{report}"
        );
        let log =
            std::fs::read_to_string(runs.join(&run_id).join("events/a.jsonl")).unwrap_or_default();
        assert_eq!(log.matches("\"task_started\"").count(), 1, "a ran once");
        let merged = report["integration_commit"].as_str().expect("integration");
        assert_eq!(line_at(&repo, merged), "base a b\n");
    }
}

crate::both_ways!(a_resumed_run_keeps_its_lane, resume_keeps_the_lane);

/// Real Codex (0.171.0, app-server) on the scripted model: two tasks edit the same line of the
/// same file, declared in `paths`; serialized, the second starts from the first's commit and
/// both merge, in both kinds of workspace.
#[test]
fn codex_app_server_tasks_in_a_lane_both_merge() {
    use crate::model_server::{self, ModelServer};
    let codex = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents/codex-0.171.0/node_modules/.bin/codex");
    assert!(
        codex.is_file(),
        "Codex 0.171.0 is not installed at {}: run scripts/install-agents.sh first",
        codex.display()
    );
    let server = ModelServer::start_default();
    for kind in ["overlay", "worktree"] {
        let home = tempfile::tempdir().expect("tmp");
        std::fs::write(
            home.path().join("config.toml"),
            model_server::codex_config_for_port(server.port()),
        )
        .expect("write");
        let repo = line_repo(Runner::Invoker);
        let edit = |id: &str| {
            json!({"id": id, "paths": ["line.txt"],
                   "prompt": format!("Append your name.\nCMD: sed -i '1s/$/ {id}/' line.txt")})
        };
        let file = repo.write_tasks(&json!({"version": 1, "tasks": [edit("a"), edit("b")]}));
        let report_file = repo.report_path();
        let out = repo
            .fanout_command()
            .args(["run", "--no-readback", "--jobs", "2", "--workspace", kind])
            .arg("--tasks")
            .arg(&file)
            .arg("--report")
            .arg(&report_file)
            .arg("--repo")
            .arg(&repo.path)
            .env("FANOUT_CODEX_BIN", &codex)
            .env("CODEX_HOME", home.path())
            .output()
            .expect("fanout runs");
        let report = read_json(&report_file);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", show(&out));
        assert!(
            statuses(&report).values().all(|s| s == "merged"),
            "{report}"
        );
        assert_eq!(task(&report, "b")["agent"]["protocol"], "codex-app-server");
        assert_eq!(
            field(&report, "b", "started_from"),
            field(&report, "a", "commit"),
            "{report}"
        );
        let merged = report["integration_commit"].as_str().expect("integration");
        assert_eq!(line_at(&repo, merged), "base a b\n", "{kind}");
    }
}
