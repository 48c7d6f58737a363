//! One event stream, every output: a 30-task run where some tasks fail a gate and one
//! conflicts, with `--json --junit --html`. Every output tells the same story; the JSON lines
//! validate against `fanout schema events`, the JUnit file parses, and the HTML report opens in
//! a real headless Chromium without console errors, with a task's diff expandable.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

fn thirty_tasks(repo: &TestRepo) -> std::path::PathBuf {
    let mut tasks = Vec::new();
    for i in 0..30 {
        let id = format!("t{i:02}");
        let task = match i {
            // Fails its scope gate: writes outside `paths`.
            3 | 7 => json!({"id": id, "prompt": "echo x > outside.txt", "paths": ["src/"]}),
            // Fails its verify command.
            11 => json!({"id": id, "prompt": "echo y > src/v.txt", "verify": "exit 3"}),
            // Conflicts with t00, which edits the same line first.
            20 => json!({"id": id, "prompt": "sed -i 's/file 0 line 1/second/' src/file_00.txt"}),
            0 => json!({"id": id, "prompt": "sed -i 's/file 0 line 1/first/' src/file_00.txt"}),
            _ => json!({"id": id, "prompt": format!("echo line >> src/file_{:02}.txt", i % 20)}),
        };
        tasks.push(task);
    }
    repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]}},
        "defaults": {"agent": "sh", "max_attempts": 1},
        "tasks": tasks
    }))
}

/// The HTML checker: playwright-core and Debian's Chromium, installed by scripts/install-agents.sh.
fn check_html(html: &Path, shot: &Path) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pw = root.join(".agents/playwright-core-1.64.1");
    assert!(
        pw.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/install-agents.sh (it installs it into .agents/)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is missing: run scripts/install-agents.sh as root, or `apt-get install chromium`"
    );
    let out = Command::new("node")
        .arg(root.join("tests/support/html_check.mjs"))
        .arg(html)
        .arg(shot)
        .env("FANOUT_PLAYWRIGHT_DIR", &pw)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "the HTML check failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("checker JSON")
}

#[test]
fn every_output_tells_the_same_story() {
    let repo = TestRepo::with_files(20);
    let file = thirty_tasks(&repo);
    let junit = repo.tmp.path().join("junit.xml");
    let html = repo.tmp.path().join("report.html");
    let before = repo.snapshot();
    let (out, report) = repo.run(
        &file,
        &[
            "--jobs",
            "3",
            "--no-readback",
            "--json",
            "--junit",
            junit.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let st = statuses(&report);
    assert_eq!(st.len(), 30);
    assert_eq!(st["t03"], "verify_failed");
    assert_eq!(st["t07"], "verify_failed");
    assert_eq!(st["t11"], "verify_failed");
    assert_eq!(st["t20"], "conflict");
    assert_eq!(st.values().filter(|s| *s == "merged").count(), 26);

    // JSON lines: each validates against the schema fanout prints.
    let schema_out = repo
        .fanout_command()
        .args(["schema", "events"])
        .output()
        .unwrap();
    assert!(schema_out.status.success(), "{}", stderr(&schema_out));
    let schema: Value = serde_json::from_slice(&schema_out.stdout).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let mut from_events: BTreeMap<String, String> = BTreeMap::new();
    let mut names = Vec::new();
    for line in stdout(&out).lines() {
        let event: Value = serde_json::from_str(line).expect("a JSON line");
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{line}: {errors:?}");
        names.push(event["event"].as_str().unwrap_or("").to_string());
        match event["event"].as_str() {
            Some("task_ended") => {
                let t = event["task"].as_str().unwrap().to_string();
                let s = if event["resume_state"] == "verified" {
                    "verified".to_string()
                } else {
                    event["report"]["status"].as_str().unwrap().to_string()
                };
                from_events.insert(t, s);
            }
            Some("merged") => {
                from_events.insert(event["task"].as_str().unwrap().into(), "merged".into());
            }
            Some("conflict") => {
                from_events.insert(event["task"].as_str().unwrap().into(), "conflict".into());
            }
            Some("run_ended") => assert_eq!(event["report"], report),
            _ => {}
        }
    }
    assert_eq!(names.first().map(String::as_str), Some("run_started"));
    assert_eq!(names.last().map(String::as_str), Some("run_ended"));
    assert!(names.iter().any(|n| n == "gate_failed"));
    assert_eq!(from_events, st, "the event stream and report.json disagree");

    // JUnit: parses, one case per task, failures where the report has them.
    let parsed = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys,json,xml.etree.ElementTree as E\n\
             r=E.parse(sys.argv[1]).getroot()\n\
             out={}\n\
             for c in r.iter('testcase'):\n\
             \x20 out[c.get('name')]='failure' if c.find('failure') is not None else ('skipped' if c.find('skipped') is not None else 'ok')\n\
             print(json.dumps(out))",
        )
        .arg(&junit)
        .output()
        .expect("python3 runs");
    assert!(parsed.status.success(), "{}", stderr(&parsed));
    let cases: BTreeMap<String, String> = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(cases.len(), 30);
    for (id, status) in &st {
        let want = if status == "merged" { "ok" } else { "failure" };
        assert_eq!(cases[id], want, "{id}");
    }

    // HTML: self-contained, every task present, renders in Chromium without errors.
    let page = std::fs::read_to_string(&html).unwrap();
    for id in st.keys() {
        assert!(
            page.contains(&format!("data-id=\"{id}\"")),
            "{id} missing from the HTML"
        );
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page fetches something"
    );
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let checked = check_html(&html, &shot);
    assert_eq!(checked["errors"], json!([]), "{checked}");
    assert_eq!(checked["requests"], json!([]), "{checked}");
    assert_eq!(checked["tasks"], 30, "{checked}");
    assert_eq!(checked["expanded"], true, "{checked}");
    assert_eq!(checked["diffVisible"], true, "{checked}");
    assert!(shot.exists());

    // `fanout report` renders the same page again from the run's events.
    let again = repo.tmp.path().join("again.html");
    let run = report["run_id"].as_str().unwrap();
    let o = repo.fanout(&["report", run, "--html", again.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let again_page = std::fs::read_to_string(&again).unwrap();
    for id in st.keys() {
        assert!(again_page.contains(&format!("data-id=\"{id}\"")));
    }
    repo.assert_left_as(&before);
}

#[test]
fn a_failing_output_stops_the_run_and_the_others_keep_reporting() {
    let repo = TestRepo::with_files(3);
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "echo x >> src/file_00.txt"]}},
        "defaults": {"agent": "sh"},
        "tasks": [{"id": "a", "prompt": "x"}]
    }));
    // A JUnit path beneath a file cannot be written.
    let blocked = repo.tmp.path().join("blocked");
    std::fs::write(&blocked, "a file, not a folder").unwrap();
    let (out, report) = repo.run(
        &file,
        &[
            "--no-readback",
            "--junit",
            blocked.join("j.xml").to_str().unwrap(),
        ],
    );
    // The run's own files were written; the failed output is said and fails the exit code.
    assert_eq!(statuses(&report)["a"], "merged", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--junit"), "{}", stderr(&out));
}

/// A 120-task run: the final table is a summary (counts, then the tasks that did not merge,
/// each named), `--quiet` prints one line; the full list stays in report.json.
#[test]
fn a_large_run_ends_with_a_summary_not_a_line_per_task() {
    let repo = TestRepo::with_files(1);
    // Every 10th task fails (its agent exits 3); the others each add a file of their own.
    let tasks: Vec<Value> = (0..120)
        .map(|i| {
            let prompt = match i % 10 {
                0 => "echo failing on purpose >&2; exit 3".to_string(),
                _ => format!("echo {i} > out_{i:03}.txt"),
            };
            json!({"id": format!("t{i:03}"), "prompt": prompt})
        })
        .collect();
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]}},
        "defaults": {"agent": "sh"},
        "tasks": tasks
    }));
    let failed: Vec<String> = (0..120).step_by(10).map(|i| format!("t{i:03}")).collect();
    let (out, report) = repo.run(&file, &["--jobs", "4", "--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.lines().count() <= 25, "{text}");
    assert!(text.starts_with("status  "), "{text}");
    assert!(text.contains("\nnot merged (12 of 120):\n"), "{text}");
    for id in &failed {
        assert_eq!(statuses(&report)[id.as_str()], "failed");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("  {id}  failed"))),
            "{id} is not named:\n{text}"
        );
    }
    assert!(!text.contains("t001"), "a merged task is listed:\n{text}");
    assert!(text.contains(": 12 failed, 108 merged — "), "{text}");
    // --quiet: the one summary line, the same counts.
    let (out, _) = repo.run(&file, &["--jobs", "4", "--no-readback", "--quiet"]);
    let quiet = stdout(&out);
    assert_eq!(quiet.lines().count(), 1, "{quiet}");
    assert!(
        quiet.starts_with("run ") && quiet.contains("12 failed, 108 merged"),
        "{quiet}"
    );
}
