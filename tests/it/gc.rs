//! A `git gc --prune=now` running beside a run takes nothing of it: fanout holds git's own
//! gc lock (`gc.pid`) while it writes objects that are referenced only later.

use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::support::*;

/// `git gc --prune=now` in a loop on `repo`, as the run's user, until killed.
fn gc_loop(repo: &TestRepo) -> Child {
    let script = format!(
        "while :; do git -C '{}' gc --prune=now --quiet 2>/dev/null; done",
        repo.path.display()
    );
    let mut cmd = if repo.runner.drops_privileges() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={UNPRIVILEGED_UID}"))
            .arg(format!("--regid={UNPRIVILEGED_UID}"))
            .arg("--clear-groups")
            .arg("sh");
        c
    } else {
        Command::new("sh")
    };
    cmd.arg("-c")
        .arg(script)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own group: the test stops the loop and the gc it is running at once.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().expect("gc loop starts")
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
}

fn gc_during_a_run_loses_nothing(runner: Runner) {
    let repo = TestRepo::with_files(20).run_by(runner);
    // Enough objects per task, written while the gc loop runs: each task adds files of
    // random content (so nothing is shared) and edits a tracked one.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            json!({"id": format!("t{i}"), "prompt": format!(
                "sleep 0.2; for j in 1 2 3 4; do head -c 6000 /dev/urandom | base64 > new_{i}_$j.txt; done; echo more >> src/file_{i:02}.txt"
            )})
        })
        .collect();
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "sh"},
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]}},
        "tasks": tasks,
    }));
    // The loop starts once fanout_command handed the folder over (unprivileged pass).
    let _ = repo.fanout_command();
    let gc = gc_loop(&repo);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    stop(gc);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let fsck = git(
        &repo.path,
        &["fsck", "--connectivity-only", "--no-dangling"],
    );
    assert!(
        fsck.status.success(),
        "every object a ref names is there: {}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    let merged = format!(
        "fanout/{}/merged",
        report["run_id"].as_str().expect("run id")
    );
    let files = repo.tree_files(&merged);
    for i in 0..16 {
        for j in 1..=4 {
            assert!(
                files.contains_key(&format!("new_{i}_{j}.txt")),
                "t{i} file {j}"
            );
        }
        let text = String::from_utf8_lossy(&files[&format!("src/file_{i:02}.txt")]).to_string();
        assert!(text.ends_with("more\n"), "t{i}: {text}");
    }
}

crate::both_ways!(
    a_concurrent_gc_prunes_nothing_of_a_run,
    gc_during_a_run_loses_nothing
);

/// While a run holds the lock, `git gc` says so and leaves the repository alone.
#[test]
fn git_gc_waits_for_a_run() {
    let repo = TestRepo::with_files(2);
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "sh"},
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]}},
        "tasks": [{"id": "slow", "prompt": "sleep 3; echo x > x.txt"}],
    }));
    let mut run = repo
        .fanout_command()
        .args(["run", "--no-readback", "--tasks"])
        .arg(&file)
        .arg("--repo")
        .arg(&repo.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fanout starts");
    let lock = repo.path.join(".git/gc.pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(lock.exists(), "the run holds gc.pid");
    let gc = Command::new("git")
        .args(["gc", "--prune=now"])
        .current_dir(&repo.path)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    let said = String::from_utf8_lossy(&gc.stderr).to_string();
    assert!(
        !gc.status.success() && said.contains("gc is already running"),
        "{said}"
    );
    assert!(run.wait().expect("fanout ends").success());
    assert!(!lock.exists(), "the lock is given back at the end");
}
