//! Flaky verify commands (`verify_retries`) and verify failures that name their cause: a pass
//! after a failure merges and says `flaky` in every output; a command that keeps failing fails
//! after its retries; a test runner's summary is the reason, not package-manager noise on
//! stderr; an exit status above 128 is not mistaken for a signal.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::*;

/// A task file: one `sh` exec agent that changes `src/file_00.txt`, one attempt per task.
fn one_task(repo: &TestRepo, verify: &str, defaults: Value) -> std::path::PathBuf {
    let mut d = json!({"agent": "sh", "max_attempts": 1, "timeout_secs": 120});
    if let (Some(d), Some(extra)) = (d.as_object_mut(), defaults.as_object()) {
        d.extend(extra.clone());
    }
    repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh",
                          "args": ["-c", "echo changed >> src/file_00.txt"]}},
        "defaults": d,
        "tasks": [{"id": "t", "prompt": "change it", "verify": ["sh", "-c", verify]}]
    }))
}

/// `--json`, `--junit` and `--html` into the repository's temp folder.
fn with_outputs(repo: &TestRepo, tasks: &Path) -> (std::process::Output, Value, String, String) {
    let junit = repo.tmp.path().join("junit.xml");
    let html = repo.tmp.path().join("report.html");
    let (out, report) = repo.run(
        tasks,
        &[
            "--no-readback",
            "--json",
            "--junit",
            junit.to_str().expect("utf-8"),
            "--html",
            html.to_str().expect("utf-8"),
        ],
    );
    let junit = std::fs::read_to_string(&junit).unwrap_or_default();
    let html = std::fs::read_to_string(&html).unwrap_or_default();
    (out, report, junit, html)
}

fn events(out: &std::process::Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every `--json` line validates against the schema `fanout schema events` prints.
fn assert_events_valid(repo: &TestRepo, out: &std::process::Output) {
    let schema = repo
        .fanout_command()
        .args(["schema", "events"])
        .output()
        .expect("fanout runs");
    let schema: Value = serde_json::from_slice(&schema.stdout).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    for e in events(out) {
        let errors: Vec<String> = validator.iter_errors(&e).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{e}: {errors:?}");
    }
}

fn command_gate(report: &Value) -> Value {
    task(report, "t")["verify"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["gate"] == "command"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The verify log of task `t`: every run's command line and outcome.
fn verify_log(report: &Value) -> String {
    let dir = Path::new(report["run_dir"].as_str().expect("run_dir"));
    std::fs::read_to_string(dir.join("logs/t.verify.log")).unwrap_or_default()
}

/// Fails its first run (a timing test, mocha style), passes the next: the counter lives in the
/// verify command's scratch folder ($TMPDIR), which stays for the task's whole life.
const FAILS_ONCE: &str = "n=$(cat \"$TMPDIR/verify-runs\" 2>/dev/null || echo 0); \
    echo $((n+1)) > \"$TMPDIR/verify-runs\"; \
    if [ \"$n\" = 0 ]; then printf '  40 passing (2s)\\n  1 failing\\n\\n  1) timing\\n       answers in time:\\n     AssertionError: took 2100 ms\\n'; exit 1; fi; \
    echo '  41 passing (2s)'";

fn a_flaky_verify_merges_and_says_so_everywhere(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = one_task(&repo, FAILS_ONCE, json!({"verify_retries": 2}));
    let (out, report, junit, html) = with_outputs(&repo, &file);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = task(&report, "t");
    assert_eq!(t["status"], "merged", "{t:#}");
    let gate = command_gate(&report);
    assert_eq!(gate["passed"], true, "{gate:#}");
    assert_eq!(gate["flaky"], true, "{gate:#}");
    let detail = gate["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("failed 1 time(s), then passed") && detail.contains("1 failing"),
        "{detail}"
    );
    // Twice in the log: the failed run, then the one that passed.
    let log = verify_log(&report);
    assert_eq!(log.matches("$ sh -c").count(), 2, "{log}");
    assert!(log.contains("retry 1 of 2"), "{log}");
    // --json: the gate's event says flaky.
    assert_events_valid(&repo, &out);
    let evs = events(&out);
    assert!(
        evs.iter()
            .any(|e| e["event"] == "gate_passed" && e["gate"] == "command" && e["flaky"] == true),
        "{}",
        stdout(&out)
    );
    // JUnit: a passing case with a flakyFailure.
    assert!(junit.contains("failures=\"0\""), "{junit}");
    assert!(
        junit.contains("<flakyFailure type=\"command\" message=\"flaky: failed 1 time(s)"),
        "{junit}"
    );
    // HTML: the flaky badge next to the status.
    assert!(
        html.contains("data-status=\"merged flaky\"") && html.contains("s-flaky\">flaky</span>"),
        "HTML has no flaky badge"
    );
    // Terminal: the table and the task's line.
    assert!(stderr(&out).contains("merged (flaky)"), "{}", stderr(&out));
}
crate::every_way!(
    flaky_verify_merges,
    a_flaky_verify_merges_and_says_so_everywhere
);

fn without_retries_the_same_flake_fails_the_task(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = one_task(&repo, FAILS_ONCE, json!({}));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(task(&report, "t")["status"], "verify_failed");
    assert_eq!(verify_log(&report).matches("$ sh -c").count(), 1);
}
crate::both_ways!(
    no_retries_no_mercy,
    without_retries_the_same_flake_fails_the_task
);

fn a_verify_failing_every_time_fails_after_its_retries(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = one_task(
        &repo,
        "echo '  3 passing'; echo '  1 failing'; exit 1",
        json!({"verify_retries": 2}),
    );
    let (out, report, junit, _) = with_outputs(&repo, &file);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let t = task(&report, "t");
    assert_eq!(t["status"], "verify_failed", "{t:#}");
    let gate = command_gate(&report);
    assert_eq!(gate["passed"], false);
    assert!(gate.get("flaky").is_none(), "{gate:#}");
    // N + 1 = 3 runs, no fourth.
    let log = verify_log(&report);
    assert_eq!(log.matches("$ sh -c").count(), 3, "{log}");
    assert!(
        log.contains("retry 2 of 2") && !log.contains("retry 3"),
        "{log}"
    );
    assert!(junit.contains("<failure type=\"verify_failed\""), "{junit}");
    assert!(!junit.contains("flakyFailure"), "{junit}");
}
crate::both_ways!(
    failing_verify_retried,
    a_verify_failing_every_time_fails_after_its_retries
);

fn a_task_without_retries_overrides_the_defaults(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let tasks = json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh",
                          "args": ["-c", "echo changed >> src/file_00.txt"]}},
        "defaults": {"agent": "sh", "max_attempts": 1, "verify_retries": 3},
        "tasks": [{"id": "t", "prompt": "x", "verify_retries": 0, "verify": ["sh", "-c", "exit 1"]}]
    });
    let (out, report) = repo.run(&repo.write_tasks(&tasks), &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(verify_log(&report).matches("$ sh -c").count(), 1);
}
crate::both_ways!(
    task_retries_override,
    a_task_without_retries_overrides_the_defaults
);

/// mocha's output on stdout, 200 npm deprecation warnings on stderr after it, and mocha's exit
/// status: the number of failures (141).
const MOCHA_UNDER_NPM: &str = "echo '> app@1.0.0 test'; echo '> mocha'; \
    printf '  parser\\n    1) handles empty input\\n\\n  97 passing (3s)\\n  141 failing\\n\\n  1) parser\\n       handles empty input:\\n     AssertionError: expected 0 to equal 1\\n      at Context.<anonymous> (test/parser.js:9:5)\\n'; \
    i=0; while [ $i -lt 200 ]; do echo \"npm warn deprecated pkg$i@1.0.0: This package is no longer supported.\" >&2; i=$((i+1)); done; \
    exit 141";

fn the_reason_is_the_test_runners_summary_not_npm_noise(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = one_task(&repo, MOCHA_UNDER_NPM, json!({}));
    let (out, report, junit, html) = with_outputs(&repo, &file);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let t = task(&report, "t");
    assert_eq!(t["status"], "verify_failed", "{t:#}");
    let gate = command_gate(&report);
    let detail = gate["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("verify command failed (exited with status 141): 97 passing (3s), 141 failing; 1) parser handles empty input: AssertionError: expected 0 to equal 1"),
        "{detail}"
    );
    assert!(
        !detail.contains("SIGPIPE") && !detail.contains("npm"),
        "{detail}"
    );
    // The streams are kept apart, and whole enough.
    let output = gate["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("141 failing") && !output.contains("npm warn"),
        "{output}"
    );
    let stderr_kept = gate["stderr"].as_str().unwrap_or_default();
    assert_eq!(stderr_kept.matches("npm warn deprecated").count(), 200);
    // The task's error, the terminal, JUnit and HTML all name the failure first.
    let error = t["error"].as_str().unwrap_or_default();
    let first = error.lines().next().unwrap_or_default();
    assert!(
        first.contains("141 failing") && !first.contains("npm"),
        "{error}"
    );
    assert!(
        stderr(&out).contains("141 failing; 1) parser handles empty input"),
        "{}",
        stderr(&out)
    );
    assert!(
        junit.contains("message=\"verification failed after 1 attempt(s): verify command failed (exited with status 141): 97 passing (3s), 141 failing"),
        "{junit}"
    );
    assert!(html.contains("141 failing; 1) parser handles empty input"));
    let failed = events(&out)
        .into_iter()
        .find(|e| e["event"] == "gate_failed")
        .expect("a gate_failed event");
    assert!(
        failed["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("141 failing"),
        "{failed}"
    );
}
crate::every_way!(
    mocha_under_npm,
    the_reason_is_the_test_runners_summary_not_npm_noise
);

fn a_real_sigpipe_death_is_told_as_one(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = one_task(&repo, "echo dying; kill -PIPE $$", json!({}));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let detail = command_gate(&report)["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.starts_with("verify command failed (killed by signal SIGPIPE)"),
        "{detail}"
    );
}
crate::both_ways!(sigpipe_death, a_real_sigpipe_death_is_told_as_one);

/// Tasks run by an exec agent that evaluates its prompt, and an integration gate.
fn gate_tasks(repo: &TestRepo, integrate: Value, tasks: Value) -> std::path::PathBuf {
    repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh",
                          "args": ["-c", "eval \"$FANOUT_PROMPT\""]}},
        "defaults": {"agent": "sh", "max_attempts": 1, "timeout_secs": 120},
        "integrate": integrate,
        "tasks": tasks
    }))
}

fn edit(id: &str, file: &str, text: &str) -> Value {
    json!({"id": id, "prompt": format!("echo '{text}' >> src/{file}")})
}

fn the_integration_gate_retries_a_flaky_run(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let file = gate_tasks(
        &repo,
        json!({"verify": ["sh", "-c", FAILS_ONCE], "timeout_secs": 120, "verify_retries": 1}),
        json!([edit("a", "file_00.txt", "a"), edit("b", "file_01.txt", "b")]),
    );
    let (out, report, junit, html) = with_outputs(&repo, &file);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "merged", "{st:?}");
    let gate = &report["integration"];
    assert_eq!(gate["passed"], true, "{gate:#}");
    assert_eq!(gate["flaky"], 1, "{gate:#}");
    // One checkout, its command run twice: no bisection, nobody blamed.
    assert_eq!(gate["verify_runs"], 1, "{gate:#}");
    assert_eq!(gate["ejected"], json!([]), "{gate:#}");
    assert_events_valid(&repo, &out);
    let verified = events(&out)
        .into_iter()
        .find(|e| e["event"] == "integration_verified")
        .expect("an integration_verified event");
    assert_eq!(verified["flaky"], 1, "{verified}");
    assert!(junit.contains("name=\"integration gate\""), "{junit}");
    assert!(
        junit.contains("<flakyFailure type=\"integration\""),
        "{junit}"
    );
    assert!(junit.contains("tests=\"3\" failures=\"0\""), "{junit}");
    assert!(
        html.contains("data-id=\"integration gate\" data-status=\"passed flaky\""),
        "no integration gate row in the HTML"
    );
    let err = stderr(&out);
    assert!(
        err.contains("integration gate: passed after 1 verify run(s), 1 flaky"),
        "{err}"
    );
    assert!(err.contains("passed only when run again"), "{err}");
}
crate::every_way!(gate_flaky_retried, the_integration_gate_retries_a_flaky_run);

/// Fails while any file holds BROKEN, mocha style on stdout, npm noise on stderr.
const BROKEN_FAILS: &str = "if grep -rq BROKEN src; then \
    printf '  3 passing\\n  1 failing\\n\\n  1) sources\\n       hold no marker:\\n     AssertionError: BROKEN found in src\\n'; \
    i=0; while [ $i -lt 200 ]; do echo \"npm warn deprecated pkg$i@1.0.0: gone\" >&2; i=$((i+1)); done; \
    exit 1; fi; echo '  4 passing'";

fn an_ejected_task_and_the_gate_row_name_the_failure(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let file = gate_tasks(
        &repo,
        json!({"verify": ["sh", "-c", BROKEN_FAILS], "timeout_secs": 120, "verify_retries": 1}),
        json!([
            edit("good1", "file_00.txt", "fine"),
            edit("bad", "file_01.txt", "BROKEN"),
            edit("good2", "file_02.txt", "fine"),
        ]),
    );
    let (out, report, junit, html) = with_outputs(&repo, &file);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let st = statuses(&report);
    assert_eq!(st["bad"], "integration_failed", "{st:?}");
    assert_eq!(st["good1"], "merged", "{st:?}");
    assert_eq!(st["good2"], "merged", "{st:?}");
    let gate = &report["integration"];
    assert_eq!(gate["passed"], true, "{gate:#}");
    assert_eq!(gate["ejected"], json!(["bad"]), "{gate:#}");
    assert!(
        gate.get("flaky").is_none(),
        "a real failure is not flaky: {gate:#}"
    );
    let reason = gate["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("verify command failed (exited with status 1): 3 passing, 1 failing; 1) sources hold no marker: AssertionError: BROKEN found in src"),
        "{reason}"
    );
    let error = task(&report, "bad")["error"].as_str().unwrap_or_default();
    let first = error.lines().next().unwrap_or_default();
    assert!(
        first.contains("1 failing") && !first.contains("npm"),
        "{error}"
    );
    // Each failing run ran twice before it counted (verify_retries: 1).
    let log = std::fs::read_to_string(
        Path::new(report["run_dir"].as_str().expect("run_dir")).join("logs/integration.verify.log"),
    )
    .unwrap_or_default();
    assert!(log.contains("retry 1 of 1"), "{log}");
    let verified = events(&out)
        .into_iter()
        .find(|e| e["event"] == "integration_verified")
        .expect("an integration_verified event");
    assert!(
        verified["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("1 failing"),
        "{verified}"
    );
    let ejected = events(&out)
        .into_iter()
        .find(|e| e["event"] == "ejected")
        .expect("an ejected event");
    assert!(
        ejected["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("3 passing, 1 failing"),
        "{ejected}"
    );
    assert!(junit.contains("name=\"integration gate\""), "{junit}");
    assert!(
        junit.contains("<failure type=\"integration_failed\" message=\"the integration verify command fails once this task is merged (found by bisection): verify command failed (exited with status 1): 3 passing, 1 failing"),
        "{junit}"
    );
    assert!(html.contains("<span class=\"st s-integration_failed\">integration_failed</span>"));
    assert!(html.contains("taken out: bad"));
    assert!(
        stderr(&out).contains("integration gate: passed after"),
        "{}",
        stderr(&out)
    );
}
crate::every_way!(
    gate_names_failure,
    an_ejected_task_and_the_gate_row_name_the_failure
);

/// The agent's second attempt gets the reason first, then the ends of stdout and stderr.
fn the_feedback_names_the_failure_before_the_noise(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    // Attempt 1 changes a file; attempt 2 keeps the feedback it got (and so passes the verify).
    let agent = "if [ -n \"$FANOUT_FEEDBACK_FILE\" ] && [ -s \"$FANOUT_FEEDBACK_FILE\" ]; then \
                 cp \"$FANOUT_FEEDBACK_FILE\" feedback.txt; else echo changed >> src/file_00.txt; fi";
    let verify = format!(
        "if [ -e feedback.txt ]; then exit 0; fi; {}",
        MOCHA_UNDER_NPM
    );
    let tasks = json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", agent]}},
        "defaults": {"agent": "sh", "max_attempts": 2, "timeout_secs": 120},
        "tasks": [{"id": "t", "prompt": "x", "verify": ["sh", "-c", verify]}]
    });
    let (out, report) = repo.run(&repo.write_tasks(&tasks), &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let branch = format!(
        "fanout/{}/merged",
        report["run_id"].as_str().expect("run id")
    );
    let feedback = git_text(&repo.path, &["show", &format!("{branch}:feedback.txt")]);
    let reason = feedback
        .find("141 failing; 1) parser handles empty input")
        .expect("the reason is in the feedback");
    let list = feedback
        .find("output:\n")
        .expect("the stdout tail is in the feedback");
    let noise = feedback
        .find("stderr:\n")
        .expect("the stderr tail is in the feedback");
    assert!(reason < list && list < noise, "{feedback}");
    assert!(
        feedback[list..noise].contains("AssertionError: expected 0 to equal 1"),
        "{feedback}"
    );
}
crate::both_ways!(
    feedback_reason_first,
    the_feedback_names_the_failure_before_the_noise
);
