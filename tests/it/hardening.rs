//! Inputs and environments that used to fail late or loudly: long prompts, a read-only object
//! store, closed or full stdout, task files with a BOM, and what `status` shows while a run goes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// sha256 of `bytes`, through the system's `sha256sum` (hash only).
fn sha256(dir: &Path, bytes: &[u8]) -> String {
    let p = dir.join("sha-input");
    std::fs::write(&p, bytes).expect("write");
    let out = Command::new("sha256sum")
        .arg(&p)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn first_word(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Prompts of 200 KiB and 2 MiB (over the kernel's 128 KiB limit for one environment string)
/// reach an exec agent intact on stdin and in `FANOUT_PROMPT_FILE`; `FANOUT_PROMPT` is set only
/// for a short prompt.
#[test]
fn long_prompts_reach_an_exec_agent_intact() {
    let repo = TestRepo::with_files(1);
    let line = "a line of the prompt, with ünïcödé ✓ and \"quotes\" and $VARS\n";
    let prompt = |bytes: usize| line.repeat(bytes / line.len() + 1);
    let prompts = [
        ("short", "fix it".to_string()),
        ("p200k", prompt(200 * 1024)),
        ("p2m", prompt(2 * 1024 * 1024)),
    ];
    let script = "o=out/$FANOUT_TASK_ID; mkdir -p $o; sha256sum > $o/stdin.sha; sha256sum < \"$FANOUT_PROMPT_FILE\" > $o/file.sha; \
                  echo \"${FANOUT_PROMPT_BYTES:-none}\" > $o/bytes.txt; \
                  if [ -n \"${FANOUT_PROMPT+set}\" ]; then printf %s \"$FANOUT_PROMPT\" | sha256sum > $o/env.sha; fi";
    let tasks: Vec<_> = prompts
        .iter()
        .map(|(id, p)| json!({"id": id, "prompt": p, "agent": "sum"}))
        .collect();
    let file = repo.write_tasks(&json!({
        "agents": {"sum": {"protocol": "exec", "command": "sh", "args": ["-c", script]}},
        "tasks": tasks
    }));
    let check = repo
        .fanout_command()
        .args(["validate", "--tasks"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    for (id, p) in &prompts {
        let want = sha256(repo.tmp.path(), p.as_bytes());
        let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
        let f = |name: &str| {
            files
                .get(&format!("out/{id}/{name}"))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(first_word(&f("stdin.sha")), want, "{id}: stdin");
        assert_eq!(first_word(&f("file.sha")), want, "{id}: file");
        assert_eq!(first_word(&f("bytes.txt")), p.len().to_string(), "{id}");
        if p.len() <= 64 * 1024 {
            assert_eq!(first_word(&f("env.sha")), want, "{id}: env");
        } else {
            assert!(
                !files.contains_key(&format!("out/{id}/env.sha")),
                "{id}: FANOUT_PROMPT set"
            );
        }
    }
}
