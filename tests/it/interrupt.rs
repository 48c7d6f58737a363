//! Ctrl-C and kill -9 of fanout itself: a consistent run state, no process left, and the
//! user's repository exactly as it was.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn hanging_tasks(repo: &TestRepo) -> PathBuf {
    repo.write_tasks(&json!({
        "agents": {"fake": fake_mcp_profile(&[])},
        "defaults": {"agent": "fake"},
        "tasks": [
            {"id": "quick", "prompt": "replace src/file_00.txt \"file 0 line 1\" quick"},
            {"id": "hang-1", "prompt": "write h1.txt <<<x\nhang"},
            {"id": "hang-2", "prompt": "write h2.txt <<<x\nhang"}
        ]
    }))
}

/// Starts `fanout run --report` in the background; `FANOUT_TEST_PHASE` reaches the agents
/// (fanout passes its environment on), so tests can make them hang in one run and not the next.
fn spawn_run(repo: &TestRepo, tasks: &Path, jobs: &str, phase: &str) -> Child {
    Command::new(fanout_bin())
        // Worktrees: the tests watch the agents' files at their workspace paths from outside
        // (an overlay view exists only inside the task's mount namespace).
        .args([
            "run",
            "--workspace",
            "worktree",
            "--no-readback",
            "--jobs",
            jobs,
            "--tasks",
        ])
        .arg(tasks)
        .arg("--report")
        .arg(repo.report_path())
        .arg("--repo")
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", phase)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fanout starts")
}

/// Waits until `ready` holds for the run's folder and returns that folder. On timeout the run
/// is killed and the test fails; otherwise the caller owns the child and waits for it.
#[allow(clippy::zombie_processes)]
fn wait_for_run(repo: &TestRepo, child: &mut Child, ready: impl Fn(&Path) -> bool) -> PathBuf {
    let runs = repo.path.join(".git/fanout/runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path());
        if let Some(run) = run.filter(|r| ready(r)) {
            return run;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run did not get going");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the hanging tasks and waits until both hanging agents are inside their hang.
fn start_run(repo: &TestRepo, tasks: &Path) -> Child {
    let mut child = spawn_run(repo, tasks, "3", "1");
    wait_for_run(repo, &mut child, |run| {
        ["1", "2"]
            .iter()
            .all(|n| workspace_has(run, &format!("hang-{n}"), &format!("h{n}.txt")))
    });
    child
}

#[test]
fn ctrl_c_stops_agents_writes_the_report_and_cleans_up() {
    let repo = TestRepo::with_files(2);
    let before = repo.snapshot();
    let tasks = hanging_tasks(&repo);
    let child = start_run(&repo, &tasks);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    let out = child.wait_with_output().expect("fanout exits");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.report_path()).expect("report written"))
            .unwrap();
    assert_eq!(report["interrupted"], true);
    let st = statuses(&report);
    assert_eq!(st["hang-1"], "interrupted");
    assert!(task(&report, "hang-1")["error"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    // The state file says so too.
    let run_dir = report["run_dir"].as_str().unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{run_dir}/state.json")).unwrap()).unwrap();
    assert_eq!(state["status"], "interrupted");
    // An interrupted run leaves no lower checkout in memory.
    let run_id = report["run_id"].as_str().expect("run id");
    assert_eq!(memory_lowers_of(run_id), Vec::<String>::new());
    repo.assert_left_as(&before);
}

#[test]
fn kill_9_leaves_a_consistent_state_that_clean_removes() {
    let repo = TestRepo::with_files(2);
    let before = repo.snapshot();
    let tasks = hanging_tasks(&repo);
    let mut child = start_run(&repo, &tasks);
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // The agents learn of fanout's death (PR_SET_PDEATHSIG) and stop.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !repo.live_processes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            repo.live_processes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = repo.fanout(&["status"]);
    assert!(
        stdout(&status).contains("interrupted"),
        "{}",
        stdout(&status)
    );
    // A verified task's commit on no other branch is kept unless forced (tests/it/housekeeping.rs
    // covers that rule); here: the forced clean leaves nothing of the killed run.
    let clean = repo.fanout(&["clean", "--branches"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
    let runs: Vec<String> = std::fs::read_dir(repo.path.join(".git/fanout/runs"))
        .expect("runs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let clean = repo.fanout(&["clean", "--branches", "--force"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert_eq!(repo.branches(), vec!["main".to_string()]);
    assert_eq!(repo.snapshot(), before);
    // A lower checkout a killed run left in memory goes with `fanout clean`.
    for run in &runs {
        assert_eq!(memory_lowers_of(run), Vec::<String>::new());
    }
}

#[test]
fn an_interrupted_run_resumes_without_redoing_finished_tasks() {
    let repo = TestRepo::with_files(3);
    let before = repo.snapshot();
    // The slow tasks hang in the first phase and finish in the second (fanout passes its
    // environment to agents, so the test steers them with a variable).
    let slow = "if [ \"$FANOUT_TEST_PHASE\" = 1 ]; then exec sleep 300; fi; echo \"$FANOUT_TASK_ID\" >> src/file_0${FANOUT_TASK_ID#slow-}.txt";
    let file = repo.write_tasks(&json!({
        "agents": {
            "quick": {"protocol": "exec", "command": "sh", "args": ["-c", "echo quick >> src/file_00.txt"]},
            "slow": {"protocol": "exec", "command": "sh", "args": ["-c", slow]}
        },
        "tasks": [
            {"id": "quick", "prompt": "x", "agent": "quick"},
            {"id": "slow-1", "prompt": "x", "agent": "slow"},
            {"id": "slow-2", "prompt": "x", "agent": "slow", "depends_on": ["slow-1"]}
        ]
    }));
    let mut child = spawn_run(&repo, &file, "3", "1");
    // Wait until `quick` is verified and `slow-1` runs.
    let run_dir = wait_for_run(&repo, &mut child, |run| {
        let state = std::fs::read_to_string(run.join("state.json")).unwrap_or_default();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
        state["tasks"]["quick"]["status"] == "verified" && run.join("worktrees/slow-1").exists()
    });
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    let runs = repo.path.join(".git/fanout/runs");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    let out = child.wait_with_output().expect("fanout exits");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let state_path = runs.join(&run_id).join("state.json");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["status"], "interrupted");
    let quick_commit = state["tasks"]["quick"]["commit"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(state["tasks"]["slow-1"]["status"], "interrupted", "{state}");

    let report_path = repo.report_path();
    let out = Command::new(fanout_bin())
        .args(["resume", &run_id, "--report"])
        .arg(&report_path)
        .arg("--repo")
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", "2")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["run_id"], run_id.as_str());
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    // The finished task was not redone: same commit, started once.
    assert_eq!(task(&report, "quick")["commit"], quick_commit.as_str());
    let log = std::fs::read_to_string(runs.join(&run_id).join("events/quick.jsonl")).unwrap();
    assert_eq!(log.matches("\"task_started\"").count(), 1, "{log}");
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert!(String::from_utf8_lossy(&merged["src/file_00.txt"]).ends_with("quick\n"));
    assert!(String::from_utf8_lossy(&merged["src/file_02.txt"]).ends_with("slow-2\n"));
    // A finished run has nothing left to resume.
    let again = repo.fanout(&["resume", &run_id]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("nothing to resume"),
        "{}",
        stderr(&again)
    );
    repo.assert_left_as(&before);
}

#[test]
fn a_killed_run_can_be_resumed() {
    let repo = TestRepo::with_files(2);
    let before = repo.snapshot();
    let slow = "echo started > started.txt; if [ \"$FANOUT_TEST_PHASE\" = 1 ]; then exec sleep 300; fi; echo done >> src/file_01.txt";
    let file = repo.write_tasks(&json!({
        "agents": {"slow": {"protocol": "exec", "command": "sh", "args": ["-c", slow]}},
        "tasks": [{"id": "slow", "prompt": "x", "agent": "slow"}]
    }));
    let mut child = spawn_run(&repo, &file, "1", "1");
    let run_dir = wait_for_run(&repo, &mut child, |run| {
        workspace_has(run, "slow", "started.txt")
    });
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    // The state says where the task was: its agent's first turn (snapshots follow within
    // about a second).
    let state = run_dir.join("state.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&state).is_ok_and(|t| t.contains("agent_turn"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let status = repo.fanout(&["status", &run_id]);
    assert!(
        stdout(&status).contains("(agent turn 1)"),
        "fanout status shows the phase a killed task was in: {}",
        stdout(&status)
    );
    let out = Command::new(fanout_bin())
        .args(["resume", &run_id, "--repo"])
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", "2")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    assert!(stdout(&out).contains("1 merged"), "{}", stdout(&out));
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
    assert_eq!(repo.snapshot(), before);
}

/// A shell snippet that, in phase 1, leaves every kind of process an agent can leave — a
/// background child, a double-forked `setsid` daemon (twice: `setsid -f` and a subshell), and a
/// `nohup` job — marks itself started and then waits; in phase 2 it appends to `file`.
fn leaving_children(file: &str) -> String {
    format!(
        "if [ \"$FANOUT_TEST_PHASE\" = 1 ]; then \
           sleep 300 >/dev/null 2>&1 & \
           setsid -f sleep 301 >/dev/null 2>&1; \
           (setsid sleep 302 >/dev/null 2>&1 &); \
           nohup sleep 303 >/dev/null 2>&1 & \
           touch started.txt; sleep 304; \
         fi; echo \"$FANOUT_TASK_ID\" >> {file}"
    )
}

/// Kills whatever a failed test left under its temp folder, then fails with `msg`.
fn fail_killing_leftovers(repo: &TestRepo, msg: String) -> ! {
    for p in repo.live_processes() {
        if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    panic!("{msg}");
}

/// Runs an exec agent and the fake MCP agent that both leave children behind, stops fanout
/// with `sig` once both are started, and checks: exit 130, no process left at that moment,
/// `status` says interrupted, and `resume` completes the run.
fn graceful_stop_leaves_no_process(sig: nix::sys::signal::Signal) {
    let repo = TestRepo::with_files(2);
    let before = repo.snapshot();
    let file = repo.write_tasks(&json!({
        "agents": {
            "sh": {"protocol": "exec", "command": "sh", "args": ["-c", leaving_children("src/file_00.txt")]},
            "fake": fake_mcp_profile(&[])
        },
        "tasks": [
            {"id": "exec", "prompt": "x", "agent": "sh"},
            {"id": "mcp", "prompt": format!("run {}", leaving_children("src/file_01.txt")), "agent": "fake"}
        ]
    }));
    let mut child = spawn_run(&repo, &file, "2", "1");
    let run_dir = wait_for_run(&repo, &mut child, |run| {
        ["exec", "mcp"]
            .iter()
            .all(|t| workspace_has(run, t, "started.txt"))
    });
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    // The daemons were started before the marker; give `setsid -f` a moment to detach.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        repo.live_processes().len() >= 8,
        "{:?}",
        repo.live_processes()
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("signal");
    let out = child.wait_with_output().expect("fanout exits");
    // Checked the moment fanout is gone: it must have waited for every tree to be stopped.
    let left = repo.live_processes();
    if !left.is_empty() {
        fail_killing_leftovers(
            &repo,
            format!("{sig:?} left processes running: {left:?}\n{}", stderr(&out)),
        );
    }
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let status = repo.fanout(&["status", &run_id]);
    assert!(
        stdout(&status).contains(&format!("run {run_id}: interrupted")),
        "{}",
        stdout(&status)
    );
    let out = Command::new(fanout_bin())
        .args(["resume", &run_id, "--repo"])
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", "2")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    assert!(stdout(&out).contains("2 merged"), "{}", stdout(&out));
    repo.assert_left_as(&before);
}

#[test]
fn sigterm_leaves_no_agent_process_and_the_run_resumes() {
    graceful_stop_leaves_no_process(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn sigint_leaves_no_agent_process_and_the_run_resumes() {
    graceful_stop_leaves_no_process(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sighup_leaves_no_agent_process_and_the_run_resumes() {
    graceful_stop_leaves_no_process(nix::sys::signal::Signal::SIGHUP);
}

/// `n` exec tasks, each writing its own file `t/<id>.txt`.
fn many_tasks(repo: &TestRepo, n: usize) -> PathBuf {
    let tasks: Vec<serde_json::Value> = (0..n)
        .map(|i| json!({"id": format!("t{i:03}"), "prompt": "x", "agent": "w"}))
        .collect();
    repo.write_tasks(&json!({
        "agents": {"w": {"protocol": "exec", "command": "sh",
                         "args": ["-c", "mkdir -p t && echo \"$FANOUT_TASK_ID\" > t/$FANOUT_TASK_ID.txt"]}},
        "tasks": tasks
    }))
}

/// Runs `tasks`, sends SIGTERM as soon as fanout says it integrates, and checks that the run
/// stopped (exit 130, state interrupted) and that `resume` finishes it with every task's file.
fn sigterm_while_integrating(
    repo: &TestRepo,
    tasks: &Path,
    n: usize,
    env: &[(&str, &str)],
    stops_integration: bool,
) {
    use std::io::BufRead;
    let before = repo.snapshot();
    let mut child = Command::new(fanout_bin())
        .args([
            "run",
            "--workspace",
            "worktree",
            "--no-readback",
            "--jobs",
            "2",
            "--tasks",
        ])
        .arg(tasks)
        .arg("--repo")
        .arg(&repo.path)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fanout starts");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("integrating") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(Duration::from_secs(240)).is_err() {
        let _ = child.kill();
        panic!("the run never reached integration");
    }
    if stops_integration {
        // Past the first few merged commits (150 ms each), well before the last.
        std::thread::sleep(Duration::from_millis(500));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    let status = child.wait().expect("fanout exits");
    let err = reader.join().expect("stderr reader");
    assert_eq!(status.code(), Some(130), "{err}");
    let runs = repo.path.join(".git/fanout/runs");
    let run_id = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.join(&run_id).join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["status"], "interrupted", "{err}");
    assert!(
        state["tasks"]
            .as_object()
            .unwrap()
            .values()
            .all(|t| t["status"] == "verified"),
        "{state}"
    );
    if stops_integration {
        // Some commits were left for `resume` to integrate.
        let left = state["tasks"]
            .as_object()
            .unwrap()
            .values()
            .filter(|t| {
                t["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("interrupted before integration"))
            })
            .count();
        assert!(
            left > 0 && left < n,
            "{left} of {n} not integrated\n{state}"
        );
    }
    let out = repo.fanout(&["resume", &run_id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{n} merged")),
        "{}",
        stdout(&out)
    );
    let merged = repo.tree_files(&format!("fanout/{run_id}/merged"));
    for i in 0..n {
        let id = format!("t{i:03}");
        assert_eq!(
            merged.get(&format!("t/{id}.txt")).map(Vec::as_slice),
            Some(format!("{id}\n").as_bytes()),
            "{id}"
        );
    }
    assert_eq!(merged.len(), 2 + 1 + n); // two source files, .gitignore, one per task
    repo.assert_left_as(&before);
}

/// Many trivial tasks make integration and cleanup take measurable time; a SIGTERM that
/// lands in either must stop the run resumably.
#[test]
fn sigterm_after_the_agents_stops_a_large_run_resumably() {
    let repo = TestRepo::with_files(2);
    let tasks = many_tasks(&repo, 150);
    sigterm_while_integrating(&repo, &tasks, 150, &[], false);
}

/// With a delay before every merged commit (test hook), the SIGTERM surely lands between two
/// merged commits.
#[cfg(feature = "test-hooks")]
#[test]
fn sigterm_between_merged_commits_stops_integration_resumably() {
    let repo = TestRepo::with_files(2);
    let tasks = many_tasks(&repo, 20);
    sigterm_while_integrating(
        &repo,
        &tasks,
        20,
        &[("FANOUT_TEST_MERGE_DELAY_MS", "150")],
        true,
    );
}

/// A second signal stops at once — without `std::process::exit` and still without leaving any
/// process behind; the run stays resumable.
#[test]
fn a_second_signal_stops_at_once_without_leaving_processes() {
    let repo = TestRepo::with_files(2);
    let before = repo.snapshot();
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", leaving_children("$FANOUT_TASK_ID.txt")]}},
        "tasks": [{"id": "a", "prompt": "x", "agent": "sh"}, {"id": "b", "prompt": "x", "agent": "sh"}]
    }));
    let mut child = spawn_run(&repo, &file, "2", "1");
    let run_dir = wait_for_run(&repo, &mut child, |run| {
        ["a", "b"]
            .iter()
            .all(|t| workspace_has(run, t, "started.txt"))
    });
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    std::thread::sleep(Duration::from_millis(30));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    let out = child.wait_with_output().expect("fanout exits");
    let left = repo.live_processes();
    if !left.is_empty() {
        fail_killing_leftovers(&repo, format!("left running: {left:?}\n{}", stderr(&out)));
    }
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("again"), "{}", stderr(&out));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["status"], "interrupted", "{state}");
    let out = Command::new(fanout_bin())
        .args(["resume", &run_id, "--repo"])
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 merged"), "{}", stdout(&out));
    repo.assert_left_as(&before);
}

#[test]
fn kill_9_in_a_200_task_run_then_resume_redoes_only_unfinished_tasks() {
    let repo = TestRepo::with_files(3);
    let before = repo.snapshot();
    // t190–t199 hang in the first phase. With 4 jobs and tasks started in task-file order, once
    // four of them run every earlier task has ended.
    let script = "echo started > started.txt; n=${FANOUT_TASK_ID#t}; \
        if [ \"$n\" -ge 190 ] && [ \"$FANOUT_TEST_PHASE\" = 1 ]; then exec sleep 300; fi; \
        rm started.txt; echo x > f_$FANOUT_TASK_ID.txt";
    let tasks: Vec<_> = (0..200)
        .map(|i| json!({"id": format!("t{i:03}"), "prompt": "x"}))
        .collect();
    let file = repo.write_tasks(&json!({
        "agents": {"w": {"protocol": "exec", "command": "sh", "args": ["-c", script]}},
        "defaults": {"agent": "w"},
        "tasks": tasks
    }));
    let mut child = spawn_run(&repo, &file, "4", "1");
    let run_dir = {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let run = std::fs::read_dir(repo.path.join(".git/fanout/runs"))
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .map(|e| e.path());
            let hanging = run.as_ref().map_or(0, |r| {
                (190..200)
                    .filter(|i| workspace_has(r, &format!("t{i}"), "started.txt"))
                    .count()
            });
            if hanging == 4 {
                break run.unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the hanging tasks did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    // The state left behind knows the 190 finished tasks.
    let status = repo.fanout(&["status", &run_id]);
    let verified = stdout(&status).matches(" verified ").count();
    assert_eq!(verified, 190, "{}", stdout(&status));

    let out = Command::new(fanout_bin())
        .args(["resume", &run_id, "--jobs", "4", "--report"])
        .arg(repo.report_path())
        .arg("--repo")
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.report_path()).unwrap()).unwrap();
    assert_eq!(report["counts"], json!({"merged": 200}));
    // Finished tasks were not started again; the cut-off ones ran twice.
    for i in 0..200 {
        let log = std::fs::read_to_string(run_dir.join(format!("events/t{i:03}.jsonl"))).unwrap();
        let starts = log.matches("\"task_started\"").count();
        let expected = if i < 190 {
            1
        } else if i < 194 {
            2
        } else {
            1
        };
        assert_eq!(starts, expected, "t{i:03}: {log}");
    }
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert!((0..200).all(|i| merged.contains_key(&format!("f_t{i:03}.txt"))));
    assert!(!merged.keys().any(|k| k.ends_with("started.txt")));
    repo.assert_left_as(&before);
}
