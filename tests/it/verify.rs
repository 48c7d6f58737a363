//! Verification gates end to end: read-back through the real `claude mcp serve`, the scope
//! gate, the verify command with feedback to the agent, and task dependencies.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// `fanout run` with extra environment, started in the background.
fn spawn_run(
    repo: &TestRepo,
    tasks: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Child {
    let report = repo.report_path();
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new(fanout_bin());
    cmd.arg("run")
        .arg("--tasks")
        .arg(tasks)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .arg("--repo")
        .arg(&repo.path)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("fanout starts")
}

fn run_env(repo: &TestRepo, tasks: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let out = spawn_run(repo, tasks, extra, env)
        .wait_with_output()
        .expect("fanout runs");
    (out, read_report(repo))
}

fn read_report(repo: &TestRepo) -> Value {
    std::fs::read(repo.report_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn show(out: &Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// Live processes under the test folder that look like the verifier.
fn verifier_processes(repo: &TestRepo) -> Vec<String> {
    repo.live_processes()
        .into_iter()
        .filter(|p| p.contains("mcp serve"))
        .collect()
}

#[test]
fn ten_tasks_are_read_back_through_claude_and_match() {
    let claude = claude_bin();
    let repo = TestRepo::with_files(10);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            json!({
                "id": format!("t{i}"),
                "prompt": format!(
                    "sleep 300\nreplace src/file_{i:02}.txt \"file {i} line 3\" \"FILE {i} LINE 3\"\nwrite src/new_{i:02}.txt <<<new file {i}\\nsecond line\\n"
                ),
                "paths": [format!("src/file_{i:02}.txt"), format!("src/new_{i:02}.txt")]
            })
        })
        .collect();
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "verifier": claude_verifier(),
        "tasks": tasks
    }));
    let mut child = spawn_run(&repo, &file, &["--jobs", "4", "--readback", "require"], &[]);
    // The verifier runs during the run: a `claude mcp serve` process with its cwd in the run folder.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if seen.is_empty() {
            seen = verifier_processes(&repo);
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("fanout ends");
    let report = read_report(&repo);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        !seen.is_empty(),
        "no verifier process was seen during the run"
    );
    for i in 0..10 {
        let t = task(&report, &format!("t{i}"));
        assert_eq!(t["status"], "merged", "{t}");
        assert_eq!(t["readback"]["result"], "passed", "{t}");
        assert_eq!(t["readback"]["files_read"], 2, "{t}");
        let want = std::fs::metadata(repo.path.join(format!("src/file_{i:02}.txt")))
            .unwrap()
            .len()
            + "new file 0\nsecond line\n".len() as u64;
        assert_eq!(t["readback"]["bytes"].as_u64(), Some(want), "{t}");
        let gates: Vec<&str> = t["verify"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["gate"].as_str().unwrap())
            .collect();
        assert_eq!(gates, ["scope", "readback"]);
    }
    // The report names the verifier; its log exists; the process is gone afterwards.
    let v = &report["verifier"];
    assert_eq!(v["command"], claude.display().to_string());
    assert_eq!(v["version"], "2.1.332");
    assert_eq!(v["restarts"], 0);
    assert!(v["calls"].as_u64().unwrap() >= 20, "{v}");
    assert!(Path::new(v["stderr_log"].as_str().unwrap()).exists());
    assert!(v["pid"].as_i64().is_some());
    assert!(verifier_processes(&repo).is_empty());
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

/// The test hook changes the judges' snapshot of the commit after it was written: read-back
/// catches a view of the commit that does not match it, and names the path.
#[test]
fn a_file_changed_after_commit_fails_read_back_naming_it() {
    claude_bin();
    let repo = TestRepo::with_files(3);
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake", "max_attempts": 1},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "verifier": claude_verifier(),
        "tasks": [
            {"id": "tampered", "prompt": "replace src/file_00.txt \"line 2\" \"LINE 2\""},
            {"id": "clean", "prompt": "replace src/file_01.txt \"line 2\" \"LINE 2\""}
        ]
    }));
    let (out, report) = run_env(
        &repo,
        &file,
        &[],
        &[("FANOUT_TEST_TAMPER_AFTER_COMMIT", "src/file_00.txt")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let t = task(&report, "tampered");
    assert_eq!(t["status"], "verify_failed", "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("src/file_00.txt"),
        "{t}"
    );
    assert_eq!(t["readback"]["result"], "failed");
    assert_eq!(t["readback"]["mismatches"], json!(["src/file_00.txt"]));
    let gate = t["verify"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "readback")
        .unwrap();
    assert_eq!(gate["passed"], false);
    assert_eq!(gate["paths"], json!(["src/file_00.txt"]));
    assert_eq!(task(&report, "clean")["status"], "merged");
    // The tampered task never reaches the integration branch.
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert!(!String::from_utf8_lossy(&merged["src/file_00.txt"]).contains("LINE 2"));
    assert!(String::from_utf8_lossy(&merged["src/file_01.txt"]).contains("LINE 2"));

    // A deleted file that is still readable after the commit is a mismatch too.
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake", "max_attempts": 1},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "verifier": claude_verifier(),
        "tasks": [{"id": "remover", "prompt": "delete src/file_02.txt"}]
    }));
    let (out, report) = run_env(
        &repo,
        &file,
        &[],
        &[("FANOUT_TEST_TAMPER_AFTER_COMMIT", "src/file_02.txt")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let t = task(&report, "remover");
    assert_eq!(t["status"], "verify_failed", "{t}");
    assert_eq!(t["readback"]["mismatches"], json!(["src/file_02.txt"]));
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("src/file_02.txt: deleted in the commit but still readable"),
        "{error}"
    );
}

#[test]
fn large_text_binary_and_odd_files_are_handled_as_documented() {
    claude_bin();
    let repo = TestRepo::with_files(1);
    // > 1 MB of text (paged), a binary, CRLF with a BOM, no trailing newline, an empty file,
    // a file over 256 KiB whose first line has 262 144 characters (too long for any read), a
    // file with a 99 000-character line (a page of its own) and 2 500 short lines, and a deletion.
    let prompt = "\
run awk 'BEGIN { for (i = 0; i < 14000; i++) printf \"row %06d %s\\n\", i, \"the quick brown fox jumps over the lazy dog, again and again and again and again\" }' > big.txt
run printf '\\000\\001\\002binary\\377' > data.bin
run printf '\\357\\273\\277one\\r\\ntwo\\r\\n' > crlf.txt
write nonl.txt <<<no newline at the end
write empty.txt <<<
run awk 'BEGIN { s = \"z\"; for (i = 0; i < 18; i++) s = s s; print s; print \"tail\" }' > longline.txt
run awk 'BEGIN { s = \"\"; for (i = 0; i < 99; i++) s = s \"0123456789\"; t = \"\"; for (i = 0; i < 100; i++) t = t s; print t; for (i = 0; i < 2500; i++) printf \"short line %d\\n\", i }' > wide.txt
delete src/file_00.txt
";
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "verifier": claude_verifier(),
        "tasks": [{"id": "mixed", "prompt": prompt, "max_attempts": 1}]
    }));
    let (out, report) = run_env(&repo, &file, &["--readback", "require"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "mixed");
    let rb = &t["readback"];
    assert_eq!(rb["result"], "passed", "{t}");
    assert_eq!(rb["skipped_binary"], json!(["data.bin"]), "{rb}");
    // big, crlf, nonl, empty, wide are compared; longline's first line cannot be shown by Read.
    assert_eq!(rb["files_read"], 5, "{rb}");
    let skipped = rb["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{rb}");
    assert!(
        skipped[0]
            .as_str()
            .unwrap()
            .starts_with("longline.txt: line 1 is longer"),
        "{rb}"
    );
    assert_eq!(rb["deleted_checked"], 1, "{rb}");
    assert!(rb["bytes"].as_u64().unwrap() > 1_000_000, "{rb}");
    assert!(
        report["verifier"]["calls"].as_u64().unwrap() > 10,
        "paged reads expected"
    );

    // The same change with the big file altered after commit: the paged comparison catches it.
    let (out, report) = run_env(
        &repo,
        &file,
        &[],
        &[("FANOUT_TEST_TAMPER_AFTER_COMMIT", "big.txt")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let t = task(&report, "mixed");
    assert_eq!(t["status"], "verify_failed", "{t}");
    assert_eq!(t["readback"]["mismatches"], json!(["big.txt"]), "{t}");
    assert!(t["error"].as_str().unwrap().contains("big.txt"));
}

#[test]
fn a_missing_verifier_warns_once_or_stops_a_required_run() {
    let repo = TestRepo::with_files(2);
    let missing = repo.tmp.path().join("no-such-claude");
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "verifier": {"command": missing.display().to_string(), "args": ["mcp", "serve"]},
        "tasks": [
            {"id": "a", "prompt": "replace src/file_00.txt \"line 1\" \"LINE 1\""},
            {"id": "b", "prompt": "replace src/file_01.txt \"line 1\" \"LINE 1\""}
        ]
    }));
    let (out, report) = repo.run(&file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("read-back skipped"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", stderr(&out));
    assert!(warnings[0].contains("no-such-claude"));
    for id in ["a", "b"] {
        let r = task(&report, id)["readback"]["result"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(r.starts_with("skipped (") && r.contains("not found"), "{r}");
    }

    // --readback require: an error before anything is created.
    let runs = repo.path.join(".git/fanout/runs");
    let before: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let branches = repo.branches();
    let (out, _) = repo.run(&file, &["--readback", "require"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no-such-claude"), "{}", stderr(&out));
    let after: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "a run folder was created");
    assert_eq!(branches, repo.branches());

    // --no-readback: silent.
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("read-back"), "{}", stderr(&out));
    assert!(report
        .get("warnings")
        .is_none_or(|w| w.as_array().unwrap().is_empty()));
}

#[test]
fn a_verifier_that_never_answers_does_not_hang_the_run() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "verifier": {"command": fake_agent_bin(), "args": ["--hang-at-start"], "startup_timeout_sec": 2},
        "tasks": [{"id": "a", "prompt": "replace src/file_00.txt \"line 1\" \"LINE 1\""}]
    }));
    let started = Instant::now();
    let (out, report) = repo.run(&file, &[]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = task(&report, "a")["readback"]["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        r.starts_with("skipped (") && r.contains("initialize"),
        "{r}"
    );
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

#[test]
fn an_edit_outside_the_scope_fails_and_never_reaches_the_integration_branch() {
    let repo = TestRepo::with_files(3);
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "tasks": [{
            "id": "sprawl",
            "paths": ["src/file_00.txt"],
            "prompt": "replace src/file_00.txt \"line 1\" \"LINE 1\"\nreplace src/file_02.txt \"line 1\" \"SNEAKY\""
        }]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let t = task(&report, "sprawl");
    assert_eq!(t["status"], "verify_failed", "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("src/file_02.txt"),
        "{t}"
    );
    let scope = &t["verify"][0];
    assert_eq!(scope["gate"], "scope");
    assert_eq!(scope["paths"], json!(["src/file_02.txt"]));
    assert_eq!(t["attempts"], 2);
    assert_eq!(t["attempt_history"].as_array().unwrap().len(), 2);
    // Nothing was integrated: the run leaves no integration branch at all.
    assert_eq!(report["integration_commit"], report["base"]);
    let merged = report["integration_branch"].as_str().unwrap();
    assert!(
        !repo.branches().iter().any(|b| b == merged),
        "{:?}",
        repo.branches()
    );
}

#[test]
fn verify_failure_feedback_lets_the_mcp_agent_fix_it_on_attempt_two() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "tasks": [{
            "id": "fixme",
            "verify": "grep -q FIXED src/file_00.txt || { echo 'expected FIXED in src/file_00.txt'; exit 1; }",
            "prompt": "replace src/file_00.txt \"line 1\" \"BROKEN\"\n--- on reply ---\nreplace src/file_00.txt BROKEN FIXED\nsay fixed after feedback"
        }]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fixme");
    assert_eq!(t["status"], "merged", "{t}");
    assert_eq!(t["attempts"], 2, "{t}");
    let attempts = t["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{t}");
    assert_eq!(attempts[0]["gates"][0]["gate"], "command");
    assert_eq!(attempts[0]["gates"][0]["passed"], false);
    assert!(attempts[0]["failure"]
        .as_str()
        .unwrap()
        .contains("verify command failed"));
    assert!(attempts[0]["gates"][0]["output"]
        .as_str()
        .unwrap()
        .contains("expected FIXED"));
    assert_eq!(attempts[1]["gates"][0]["passed"], true);
    assert_eq!(t["agent"]["last_message"], "fixed after feedback");
    // The feedback (the gate and its output) went to the same thread through codex-reply.
    let events: Vec<Value> = std::fs::read_to_string(t["event_log"].as_str().unwrap())
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let feedback = events
        .iter()
        .find(|e| e["kind"] == "verify_failed")
        .and_then(|e| e["feedback"].as_str())
        .expect("a verify_failed event with the feedback");
    assert!(
        feedback.contains("command gate") && feedback.contains("expected FIXED"),
        "{feedback}"
    );
    let tools: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "tool_call")
        .filter_map(|e| e["tool"].as_str())
        .collect();
    assert_eq!(tools, ["codex", "codex-reply"]);
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert!(String::from_utf8_lossy(&merged["src/file_00.txt"]).contains("FIXED"));
}

#[test]
fn verify_failure_feedback_reruns_an_exec_agent_with_the_feedback() {
    let repo = TestRepo::with_files(1);
    let script = r#"
if [ "$FANOUT_ATTEMPT" = 1 ]; then
  echo broken > src/file_00.txt
else
  # The re-run gets the prompt unchanged, and the feedback on stdin after it and in FANOUT_FEEDBACK.
  cat | grep -q 'command gate' || exit 9
  printf '%s' "$FANOUT_FEEDBACK" | grep -q 'did not pass verification' || exit 8
  [ "$FANOUT_PROMPT" = "make it right" ] || exit 7
  echo FIXED > src/file_00.txt
fi
"#;
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "script"},
        "agents": {"script": {"protocol": "exec", "command": "sh", "args": ["-c", script]}},
        "tasks": [{"id": "fixme", "verify": ["grep", "-q", "FIXED", "src/file_00.txt"], "prompt": "make it right"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fixme");
    assert_eq!(t["status"], "merged", "{t}");
    assert_eq!(t["attempts"], 2, "{t}");
    assert_eq!(t["attempt_history"].as_array().unwrap().len(), 2, "{t}");
    assert_eq!(t["attempt_history"][0]["gates"][0]["passed"], false);
}

#[test]
fn a_verify_command_cannot_write_outside_the_worktree() {
    let repo = TestRepo::with_files(1);
    let outside = repo.tmp.path().join("outside.txt");
    std::fs::write(&outside, "original\n").unwrap();
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake", "max_attempts": 1},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "tasks": [{
            "id": "escape",
            "verify": format!("echo pwned >> {}", outside.display()),
            "prompt": "replace src/file_00.txt \"line 1\" \"LINE 1\""
        }]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "original\n",
        "the verify command wrote outside its worktree; {}",
        show(&out)
    );
    let t = task(&report, "escape");
    assert_eq!(t["status"], "verify_failed", "{t}");
    assert_eq!(t["verify"][0]["gate"], "command");
    assert_eq!(t["verify"][0]["passed"], false);
}

/// `t` of the first event of `kind` in a task's event log.
fn event_time(report: &Value, id: &str, kind: &str) -> u64 {
    let path = task(report, id)["event_log"]
        .as_str()
        .expect("event log")
        .to_string();
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["kind"] == kind)
        .and_then(|e| e["t"].as_u64())
        .unwrap_or_else(|| panic!("{id}: no {kind} event in {path}"))
}

fn pipeline_tasks(failing: Option<&str>) -> Value {
    let stages = ["design", "backend", "frontend", "tests"];
    let mut tasks = Vec::new();
    for (k, s) in stages.iter().enumerate() {
        let mut prompt = String::from("sleep 400\n");
        if k > 0 {
            // Each stage sees the previous stage's file, or its script fails.
            prompt.push_str(&format!("run test -f {}.md\n", stages[k - 1]));
        }
        prompt.push_str(&format!("write {s}.md <<<{s} done\\n\n"));
        let mut t = json!({"id": s, "prompt": prompt, "paths": [format!("{s}.md")]});
        if k > 0 {
            t["depends_on"] = json!([stages[k - 1]]);
        }
        if failing == Some(*s) {
            t["verify"] = json!("echo 'stage check failed'; exit 1");
            t["max_attempts"] = json!(1);
        }
        tasks.push(t);
    }
    for i in 0..4 {
        tasks.push(json!({
            "id": format!("solo-{i}"),
            "prompt": format!("sleep 1000\nreplace src/file_{i:02}.txt \"line 1\" \"SOLO {i}\"")
        }));
    }
    json!({
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "tasks": tasks
    })
}

#[test]
fn a_four_stage_chain_runs_in_order_while_independent_tasks_overlap() {
    let repo = TestRepo::with_files(4);
    let file = repo.write_tasks(&pipeline_tasks(None));
    let (out, report) = repo.run(&file, &["--jobs", "5", "--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        statuses(&report).values().all(|s| s == "merged"),
        "{:?}",
        statuses(&report)
    );
    let stages = ["design", "backend", "frontend", "tests"];
    for w in stages.windows(2) {
        let done = event_time(&report, w[0], "verified");
        let next = event_time(&report, w[1], "task_started");
        assert!(
            next >= done,
            "{} started before {} was verified",
            w[1],
            w[0]
        );
        // It started from an integration commit holding its dependency.
        let from = task(&report, w[1])["started_from"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(repo.tree_files(&from).contains_key(&format!("{}.md", w[0])));
    }
    // Independent tasks ran alongside the chain, not after it.
    let backend_start = event_time(&report, "backend", "task_started");
    let tests_start = event_time(&report, "tests", "task_started");
    for i in 0..4 {
        let s = event_time(&report, &format!("solo-{i}"), "task_started");
        assert!(s < backend_start, "solo-{i} waited for the chain");
        assert!(event_time(&report, &format!("solo-{i}"), "verified") > s);
    }
    assert!(tests_start > backend_start);
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    for s in stages {
        assert_eq!(
            merged[&format!("{s}.md")],
            format!("{s} done\n").into_bytes()
        );
    }
}

#[test]
fn a_failing_stage_skips_the_rest_of_the_chain() {
    let repo = TestRepo::with_files(4);
    let file = repo.write_tasks(&pipeline_tasks(Some("backend")));
    let (out, report) = repo.run(&file, &["--jobs", "5", "--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["design"], "merged");
    assert_eq!(st["backend"], "verify_failed");
    for s in ["frontend", "tests"] {
        assert_eq!(st[s], "skipped", "{st:?}");
    }
    assert!(task(&report, "frontend")["error"]
        .as_str()
        .unwrap()
        .contains("backend"));
    assert!(task(&report, "tests")["error"]
        .as_str()
        .unwrap()
        .contains("frontend"));
    for i in 0..4 {
        assert_eq!(st[&format!("solo-{i}")], "merged");
    }
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert!(merged.contains_key("design.md") && !merged.contains_key("backend.md"));
}

#[test]
fn validate_rejects_a_dependency_cycle_naming_it() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!([
        {"id": "a", "prompt": "x", "depends_on": ["c"]},
        {"id": "b", "prompt": "x", "depends_on": ["a"]},
        {"id": "c", "prompt": "x", "depends_on": ["b"]},
        {"id": "d", "prompt": "x"}
    ]));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("dependency cycle: a -> c -> b -> a"),
        "{text}"
    );
}

#[test]
fn a_verifier_killed_mid_run_is_restarted_once() {
    claude_bin();
    let repo = TestRepo::with_files(3);
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let wait = if i == 0 { 0 } else { 3000 };
            json!({
                "id": format!("t{i}"),
                "prompt": format!("sleep {wait}\nreplace src/file_{i:02}.txt \"line 4\" \"LINE 4\"")
            })
        })
        .collect();
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "verifier": claude_verifier(),
        "tasks": tasks
    }));
    let mut child = spawn_run(&repo, &file, &["--jobs", "3"], &[]);
    // Once the first task was read back, kill the verifier (and its supervisor) outright.
    let runs = repo.path.join(".git/fanout/runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = Vec::new();
    while Instant::now() < deadline && killed.is_empty() {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        let verified = std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|run| {
                std::fs::read_to_string(run.path().join("events/t0.jsonl"))
                    .is_ok_and(|t| t.contains("\"verified\""))
            });
        if verified {
            for p in verifier_processes(&repo) {
                let pid = p.split(':').next().unwrap().to_string();
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                killed.push(p);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("fanout ends");
    let report = read_report(&repo);
    assert!(!killed.is_empty(), "the verifier was never seen");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for i in 0..3 {
        assert_eq!(
            task(&report, &format!("t{i}"))["readback"]["result"],
            "passed"
        );
    }
    assert_eq!(report["verifier"]["restarts"], 1, "{}", report["verifier"]);
    assert!(verifier_processes(&repo).is_empty());
}
