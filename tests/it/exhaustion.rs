//! A verify command that fails because the machine ran out of something (another task's fork
//! bomb, a full disk) is run once more, and when it runs out again the task fails without the
//! change being blamed: no feedback turn, not `verify_failed`.

use serde_json::json;

use crate::support::*;

fn sh_agent() -> serde_json::Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]})
}

fn a_passing_second_run_merges(runner: Runner) {
    let repo = TestRepo::with_files(2).run_by(runner);
    // The first run "cannot fork" (as a shell under a fork bomb says); the second passes. The
    // marker lives in the worktree, written after the commit: the only place a verify may write.
    let verify = "if [ -e .ran ]; then exit 0; fi; : > .ran; echo 'sh: 1: Cannot fork' >&2; exit 2";
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "sh", "verify": ["sh", "-c", verify], "max_attempts": 2},
        "agents": {"sh": sh_agent()},
        "tasks": [{"id": "honest", "prompt": "echo new >> src/file_00.txt"}],
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(statuses(&report)["honest"], "merged");
    let t = task(&report, "honest");
    assert_eq!(t["attempts"], 1, "{t}");
}

crate::both_ways!(
    a_verify_that_ran_out_once_runs_again,
    a_passing_second_run_merges
);

fn running_out_twice_blames_nobody(runner: Runner) {
    let repo = TestRepo::with_files(2).run_by(runner);
    for (i, msg) in [
        "bash: fork: retry: Resource temporarily unavailable",
        "OSError: [Errno 28] No space left on device",
    ]
    .iter()
    .enumerate()
    {
        let verify = format!("echo '{msg}' >&2; exit 1");
        let file = repo.write_tasks(&json!({
            "defaults": {"agent": "sh", "verify": ["sh", "-c", verify], "max_attempts": 3},
            "agents": {"sh": sh_agent()},
            "tasks": [{"id": format!("t{i}"), "prompt": "echo new >> src/file_01.txt"}],
        }));
        let (out, report) = repo.run(&file, &["--no-readback"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let id = format!("t{i}");
        assert_eq!(statuses(&report)[&id], "failed", "{report}");
        let t = task(&report, &id);
        let error = t["error"].as_str().unwrap_or_default();
        assert!(error.contains("the machine ran out of"), "{error}");
        assert!(error.contains("the change was not judged"), "{error}");
        // No feedback turn for something the agent cannot fix.
        assert_eq!(t["attempts"], 1, "{t}");
        assert!(t["commit"].is_string(), "the work stays on its branch: {t}");
    }
    // A real failure is still the change's.
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "sh", "verify": ["sh", "-c", "echo 'AssertionError' >&2; exit 1"]},
        "agents": {"sh": sh_agent()},
        "tasks": [{"id": "wrong", "prompt": "echo new >> src/file_01.txt"}],
    }));
    let (_, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(statuses(&report)["wrong"], "verify_failed", "{report}");
}

crate::both_ways!(
    a_machine_out_of_resources_blames_nobody,
    running_out_twice_blames_nobody
);
