//! Agents that crash, hang, print garbage or flood: each task ends with a readable error, the
//! other tasks still merge, the run ends in bounded time and leaves no process behind.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[test]
fn crashing_hanging_and_garbage_agents_do_not_stop_the_run() {
    let repo = TestRepo::with_files(6);
    let before = repo.snapshot();
    let mut hang = fake_mcp_profile(&[]);
    hang["tool_timeout_sec"] = json!(2);
    let mut slow_start = fake_mcp_profile(&["--hang-at-start"]);
    slow_start["startup_timeout_sec"] = json!(1);
    let file = repo.write_tasks(&json!({
        "agents": {
            "fake": fake_mcp_profile(&[]),
            "crash-start": fake_mcp_profile(&["--crash-at-start"]),
            "hang": hang,
            "no-init": slow_start,
            "garbage-start": fake_mcp_profile(&["--garbage-at-start", "50"]),
            "no-tool": fake_mcp_profile(&["--no-codex-tool"])
        },
        "defaults": {"agent": "fake"},
        "tasks": [
            {"id": "ok-1", "prompt": "replace src/file_00.txt \"file 0 line 1\" ok1"},
            {"id": "crash-at-start", "prompt": "write a.txt <<<x", "agent": "crash-start"},
            {"id": "crash-mid-call", "prompt": "write partial.txt <<<x\nstderr about to crash\ncrash 7"},
            {"id": "hangs", "prompt": "write h.txt <<<x\nhang", "agent": "hang"},
            {"id": "never-initializes", "prompt": "write b.txt <<<x", "agent": "no-init"},
            {"id": "garbage", "prompt": "garbage 20\nreplace src/file_01.txt \"file 1 line 1\" ok-after-garbage", "agent": "garbage-start"},
            {"id": "flood", "prompt": "flood 20000000\nflood-notify 2000\nreplace src/file_02.txt \"file 2 line 1\" ok-after-flood"},
            {"id": "tool-error", "prompt": "replace src/file_03.txt \"no such text\" x"},
            {"id": "rpc-error", "prompt": "error-reply"},
            {"id": "closes-stdout", "prompt": "close-stdout"},
            {"id": "missing-tool", "prompt": "write c.txt <<<x", "agent": "no-tool"},
            {"id": "ok-2", "prompt": "replace src/file_05.txt \"file 5 line 1\" ok2"}
        ]
    }));
    let started = Instant::now();
    let (out, report) = repo.run(&file, &["--jobs", "4", "--no-readback"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    let st = statuses(&report);
    let expect = [
        ("ok-1", "merged"),
        ("crash-at-start", "failed"),
        ("crash-mid-call", "failed"),
        ("hangs", "timed_out"),
        ("never-initializes", "timed_out"),
        ("garbage", "merged"),
        ("flood", "merged"),
        ("tool-error", "failed"),
        ("rpc-error", "failed"),
        ("closes-stdout", "failed"),
        ("missing-tool", "failed"),
        ("ok-2", "merged"),
    ];
    for (id, status) in expect {
        assert_eq!(st[id], status, "{id}: {}", task(&report, id));
        if status != "merged" {
            let err = task(&report, id)["error"].as_str().unwrap_or("");
            assert!(!err.is_empty(), "{id} has no error text");
        }
    }
    let err = |id: &str| {
        task(&report, id)["error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        err("crash-mid-call").contains("exit code 7"),
        "{}",
        err("crash-mid-call")
    );
    assert!(
        err("crash-mid-call").contains("about to crash"),
        "{}",
        err("crash-mid-call")
    );
    assert!(err("hangs").contains("2 s"), "{}", err("hangs"));
    assert!(
        err("tool-error").contains("no such text"),
        "{}",
        err("tool-error")
    );
    assert!(
        err("missing-tool").contains("no tool \"codex\""),
        "{}",
        err("missing-tool")
    );
    assert!(
        task(&report, "garbage")["agent"]["garbage_lines"]
            .as_u64()
            .unwrap()
            >= 20
    );
    // A failed task's partial work is kept on its branch, not merged.
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert!(!merged.contains_key("partial.txt") && !merged.contains_key("h.txt"));
    let crash = task(&report, "crash-mid-call");
    assert!(crash["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "partial.txt"));
    repo.assert_left_as(&before);
}

#[test]
fn exec_agent_timeout_kills_the_whole_tree() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"slow": {"protocol": "exec", "command": "sh", "args": ["-c", "sleep 300 & sleep 300; wait"], "tool_timeout_sec": 1}},
        "tasks": [{"id": "slow", "prompt": "x", "agent": "slow"}]
    }));
    let started = Instant::now();
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(statuses(&report)["slow"], "timed_out");
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

#[test]
fn exec_agent_failure_is_reported_with_its_stderr() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"bad": {"protocol": "exec", "command": "sh", "args": ["-c", "echo 'cannot do it' >&2; exit 4"]}},
        "tasks": [{"id": "bad", "prompt": "x", "agent": "bad"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1));
    let err = task(&report, "bad")["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("exit code 4") && err.contains("cannot do it"),
        "{err}"
    );
    // The agent's stderr went to its own log, not to fanout's terminal.
    let log =
        std::fs::read_to_string(task(&report, "bad")["stderr_log"].as_str().unwrap()).unwrap();
    assert!(log.contains("cannot do it"), "{log}");
    assert!(
        !stderr(&out).lines().any(|l| l == "cannot do it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_agent_flooding_stdout_stays_bounded() {
    let repo = TestRepo::with_files(1);
    let script = "import sys\nsys.stdout.write('x' * 30_000_000)\nsys.stdout.write('\\n' + 'line\\n' * 300_000)\nopen('src/file_00.txt', 'a').write('flooded\\n')\n";
    let file = repo.write_tasks(&json!({
        "agents": {"flood": {"protocol": "exec", "command": "python3", "args": ["-c", script]}},
        "tasks": [{"id": "flood", "prompt": "x", "agent": "flood"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(statuses(&report)["flood"], "merged");
    // The event log keeps a bounded number of lines and no giant line.
    let log = std::fs::metadata(task(&report, "flood")["event_log"].as_str().unwrap()).unwrap();
    assert!(log.len() < 40_000_000, "event log is {} bytes", log.len());
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn secrets_stay_out_of_logs_reports_and_the_terminal() {
    let repo = TestRepo::with_files(1);
    let secret = "sk-fanout-test-5ecret-value-0123";
    let leak = "echo \"token is $API_TOKEN\"; echo \"stderr token $API_TOKEN\" >&2; exit 3";
    let file = repo.write_tasks(&json!({
        "agents": {"leaky": {"protocol": "exec", "command": "sh", "args": ["-c", leak],
                             "env": {"API_TOKEN": "${FANOUT_TEST_SECRET_VALUE}"}}},
        "tasks": [{"id": "leaky", "prompt": "x", "agent": "leaky"}]
    }));
    let report_path = repo.report_path();
    let out = std::process::Command::new(fanout_bin())
        .args([
            "run",
            "--no-readback",
            "--tasks",
            file.to_str().unwrap(),
            "--report",
            report_path.to_str().unwrap(),
            "--repo",
        ])
        .arg(&repo.path)
        .env("FANOUT_TEST_SECRET_VALUE", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = std::fs::read_to_string(&report_path).unwrap();
    // The agent did see the secret (its output was masked, not missing).
    assert!(report.contains("stderr token [redacted]"), "{report}");
    assert!(!report.contains(secret));
    assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
    let hits = files_containing(&repo.path.join(".git/fanout"), secret.as_bytes());
    assert!(hits.is_empty(), "the secret is in {hits:?}");
}

/// A task's agent with no more work is stopped at once, not waited for: this one would leave on
/// its own a second after stdin closed (before, fanout waited up to 1.5 s for that), yet its
/// log shows it never got to, and nothing of it is left.
#[test]
fn an_agent_with_no_more_work_is_stopped_not_waited_for() {
    let repo = TestRepo::with_files(2);
    let file = repo.write_tasks(&json!({
        "agents": {"fake": fake_mcp_profile(&[])},
        "defaults": {"agent": "fake"},
        "tasks": [
            {"id": "lingers", "prompt": "linger-on-eof 1000\nwrite a.txt <<<x"},
            {"id": "lingers-too", "prompt": "linger-on-eof 1000\nwrite b.txt <<<y"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--jobs", "2", "--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run_dir = std::path::PathBuf::from(report["run_dir"].as_str().expect("run_dir"));
    for id in ["lingers", "lingers-too"] {
        assert_eq!(statuses(&report)[id], "merged", "{}", task(&report, id));
        let log_path = run_dir.join(format!("logs/{id}.stderr.log"));
        let log = std::fs::read_to_string(&log_path).expect("the agent's stderr log");
        assert!(
            !log.contains("exiting on its own"),
            "{id}: fanout waited for the agent to leave:\n{log}"
        );
    }
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}
