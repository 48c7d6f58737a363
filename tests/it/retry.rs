//! `fanout retry RUN [ID…]` (tasks run again into the same run), `fanout run --only ID…`, and
//! `fanout resume` deciding from each task's phase after kill -9 in different phases.

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn exec_agent(script: &str) -> Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

fn show(out: &Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// An agent that writes its task id to `src/<id>.txt`, and one that fails until
/// `FANOUT_TEST_PHASE` (fanout passes its environment on) says it is fixed: `2` succeeds,
/// `1` hangs, anything else fails.
fn agents() -> Value {
    let fixable = "case \"$FANOUT_TEST_PHASE\" in 2) ;; 1) exec sleep 300 ;; *) echo broken >&2; exit 1 ;; esac; \
                   echo \"$FANOUT_TASK_ID\" >> \"src/$FANOUT_TASK_ID.txt\"";
    json!({
        "ok": exec_agent("echo \"$FANOUT_TASK_ID\" >> \"src/$FANOUT_TASK_ID.txt\""),
        "fixable": exec_agent(fixable)
    })
}

/// Tasks `a`, `b` (agent `ok`) and `c` (agent `fixable`), each writing its own file.
fn three_tasks(repo: &TestRepo) -> PathBuf {
    repo.write_tasks(&json!({
        "agents": agents(),
        "tasks": [
            {"id": "a", "prompt": "x", "agent": "ok"},
            {"id": "b", "prompt": "x", "agent": "ok"},
            {"id": "c", "prompt": "x", "agent": "fixable"}
        ]
    }))
}

fn run_dir(repo: &TestRepo, run_id: &str) -> PathBuf {
    repo.path.join(".git/fanout/runs").join(run_id)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or(Value::Null)
}

/// The run's own report.json, as the last command left it.
fn run_report(repo: &TestRepo, run_id: &str) -> Value {
    read_json(&run_dir(repo, run_id).join("report.json"))
}

fn started_count(repo: &TestRepo, run_id: &str, task: &str) -> usize {
    let log = std::fs::read_to_string(run_dir(repo, run_id).join(format!("events/{task}.jsonl")))
        .unwrap_or_default();
    log.matches("\"task_started\"").count()
}

/// Whether the task's file at `rev` holds exactly its id (written once).
fn has(repo: &TestRepo, rev: &str, id: &str) -> bool {
    repo.tree_files(rev)
        .get(&format!("src/{id}.txt"))
        .is_some_and(|b| *b == format!("{id}\n").into_bytes())
}

/// The first run: `a` and `b` merge, `c` fails. Returns its id and report.
fn first_run(repo: &TestRepo) -> (String, Value) {
    let file = three_tasks(repo);
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "merged", "{st:?}");
    assert_eq!(st["c"], "failed", "{st:?}");
    (report["run_id"].as_str().unwrap().to_string(), report)
}

fn retry_default_set_merges_the_fixed_task(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let before = repo.snapshot();
    let (run_id, first) = first_run(&repo);
    let out = with_env("FANOUT_TEST_PHASE", "2", || repo.fanout(&["retry", "last"]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stderr(&out).contains("retry: c: failed; it runs again"),
        "{}",
        show(&out)
    );
    let report = run_report(&repo, &run_id);
    assert_eq!(report["run_id"], run_id.as_str());
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    // The merged tasks were carried over, not redone: same commits, started once, and their
    // reports keep the details of the attempt that made them.
    for id in ["a", "b"] {
        assert_eq!(task(&report, id)["commit"], task(&first, id)["commit"]);
        assert_eq!(task(&report, id)["attempts"], 1, "{report}");
        assert_eq!(task(&report, id)["verify"], task(&first, id)["verify"]);
        assert_eq!(
            task(&report, id)["duration_ms"],
            task(&first, id)["duration_ms"]
        );
        assert_eq!(started_count(&repo, &run_id, id), 1, "{id}");
    }
    assert_eq!(started_count(&repo, &run_id, "c"), 2);
    // The integration branch holds all three, and moved forward from the first integration.
    let merged = report["integration_branch"].as_str().unwrap();
    let earlier = first["integration_commit"].as_str().unwrap();
    // `git` fails the test unless the first integration is an ancestor.
    git(
        &repo.path,
        &["merge-base", "--is-ancestor", earlier, merged],
    );
    assert_eq!(
        git_text(&repo.path, &["rev-parse", merged]),
        report["integration_commit"].as_str().unwrap()
    );
    assert!(has(&repo, merged, "a"));
    assert!(has(&repo, merged, "b"));
    assert!(has(&repo, merged, "c"));
    let state = read_json(&run_dir(&repo, &run_id).join("state.json"));
    assert_eq!(state["status"], "finished", "{state}");
    assert_eq!(state["tasks"]["c"]["status"], "merged", "{state}");
    // The first attempt's report is kept beside the new one.
    let earlier = read_json(&run_dir(&repo, &run_id).join("report.1.json"));
    assert_eq!(statuses(&earlier)["c"], "failed", "{earlier}");
    // The HTML report is rendered again from the run's events: both attempts, c merged.
    let html = repo.tmp.path().join("r.html");
    let out = repo.fanout(&["report", "last", "--html", html.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("data-id=\"c\" data-status=\"merged\""),
        "c's row says merged"
    );
    assert_eq!(page.matches("data-id=\"c\"").count(), 1, "one row per task");
    // Nothing is left to retry.
    let again = repo.fanout(&["retry", "last"]);
    assert_eq!(again.status.code(), Some(2), "{}", show(&again));
    assert!(
        stderr(&again).contains("nothing to retry"),
        "{}",
        show(&again)
    );
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
    repo.assert_left_as(&before);
}

crate::every_way!(
    retry_default_set_merges_the_fixed_task,
    retry_default_set_merges_the_fixed_task
);

fn retry_of_named_ids(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    // A checkout with work of the user's own in it: uncommitted, staged and untracked.
    std::fs::write(repo.path.join("src/file_00.txt"), "the user's edit\n").unwrap();
    std::fs::write(repo.path.join("src/file_01.txt"), "staged by the user\n").unwrap();
    git(&repo.path, &["add", "src/file_01.txt"]);
    std::fs::write(repo.path.join("notes.txt"), "untracked\n").unwrap();
    let before = repo.snapshot();
    let file = repo.write_tasks(&json!({
        "agents": agents(),
        "tasks": [
            {"id": "a", "prompt": "x", "agent": "fixable"},
            {"id": "b", "prompt": "x", "agent": "fixable"},
            {"id": "c", "prompt": "x", "agent": "ok"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run_id = report["run_id"].as_str().unwrap().to_string();
    // Only b: a stays failed, so the run still fails.
    let out = with_env("FANOUT_TEST_PHASE", "2", || {
        repo.fanout(&["retry", &run_id, "b"])
    });
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&run_report(&repo, &run_id));
    assert_eq!(st["a"], "failed", "{st:?}");
    assert_eq!(st["b"], "merged", "{st:?}");
    assert_eq!(st["c"], "merged", "{st:?}");
    assert_eq!(started_count(&repo, &run_id, "a"), 1);
    // A merged task is not run again unless forced.
    let refused = repo.fanout(&["retry", &run_id, "c"]);
    assert_eq!(refused.status.code(), Some(2), "{}", show(&refused));
    assert!(
        stderr(&refused).contains("task c of run") && stderr(&refused).contains("--force"),
        "{}",
        show(&refused)
    );
    let forced = with_env("FANOUT_TEST_PHASE", "2", || {
        repo.fanout(&["retry", &run_id, "--force", "c,a"])
    });
    assert_eq!(forced.status.code(), Some(0), "{}", show(&forced));
    let report = run_report(&repo, &run_id);
    assert!(statuses(&report).values().all(|s| s == "merged"));
    assert_eq!(started_count(&repo, &run_id, "c"), 2);
    assert_eq!(started_count(&repo, &run_id, "b"), 2);
    let merged = report["integration_branch"].as_str().unwrap();
    // c ran twice, but its change is in the integration once.
    assert!(has(&repo, merged, "c"));
    assert!(has(&repo, merged, "a"));
    repo.assert_left_as(&before);
}

crate::every_way!(retry_of_named_ids, retry_of_named_ids);

fn retry_refusals(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let before = repo.snapshot();
    let none = repo.fanout(&["retry", "last"]);
    assert_eq!(none.status.code(), Some(2), "{}", show(&none));
    let (run_id, _) = first_run(&repo);
    let unknown_run = repo.fanout(&["retry", "20200101-000000-abcd"]);
    assert_eq!(unknown_run.status.code(), Some(2), "{}", show(&unknown_run));
    let unknown_id = repo.fanout(&["retry", &run_id, "zz"]);
    assert_eq!(unknown_id.status.code(), Some(2), "{}", show(&unknown_id));
    assert!(
        stderr(&unknown_id).contains("has no task zz; its tasks: a, b, c"),
        "{}",
        show(&unknown_id)
    );
    // A run whose process is alive (this test's own pid stands in for it) is not touched.
    let state_path = run_dir(&repo, &run_id).join("state.json");
    let saved = std::fs::read(&state_path).unwrap();
    let mut state: Value = serde_json::from_slice(&saved).unwrap();
    state["status"] = json!("running");
    state["pid"] = json!(std::process::id());
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let running = repo.fanout(&["retry", &run_id]);
    assert_eq!(running.status.code(), Some(2), "{}", show(&running));
    assert!(
        stderr(&running).contains("still running"),
        "{}",
        show(&running)
    );
    std::fs::write(&state_path, &saved).unwrap();
    // Nothing of the refused retries happened: c is still failed, started once.
    assert_eq!(started_count(&repo, &run_id, "c"), 1);
    assert_eq!(statuses(&run_report(&repo, &run_id))["c"], "failed");
    repo.assert_left_as(&before);
}

crate::every_way!(retry_refusals, retry_refusals);

fn retry_after_merge_advances_the_integration(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let (run_id, _) = first_run(&repo);
    let out = repo.fanout(&["merge", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let merged_once = repo.snapshot();
    let out = with_env("FANOUT_TEST_PHASE", "2", || {
        repo.fanout(&["retry", &run_id])
    });
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stderr(&out).contains("integration is already in main"),
        "{}",
        show(&out)
    );
    // The retry never touches the user's checkout; a second merge brings c in, as a
    // fast-forward: the new integration descends from the one already merged.
    repo.assert_left_as(&merged_once);
    let out = repo.fanout(&["merge", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("fast-forwarded"), "{}", show(&out));
    for id in ["a", "b", "c"] {
        let text = std::fs::read_to_string(repo.path.join(format!("src/{id}.txt"))).unwrap();
        assert_eq!(text, format!("{id}\n"));
    }
}

crate::every_way!(
    retry_after_merge_advances_the_integration,
    retry_after_merge_advances_the_integration
);

/// a, b (depends on a), c; one generated task per item of `for_each`.
fn dependent_tasks(repo: &TestRepo) -> PathBuf {
    repo.write_tasks(&json!({
        "agents": agents(),
        "defaults": {"agent": "ok"},
        "tasks": [
            {"id": "a", "prompt": "x"},
            {"id": "b", "prompt": "x", "depends_on": ["a"]},
            {"id": "c", "prompt": "x", "agent": "fixable"},
            {"id": "gen-{item}", "prompt": "x",
             "for_each": {"items": ["3", "4"]}}
        ]
    }))
}

fn only_runs_the_selected_tasks(runner: Runner) {
    let repo = TestRepo::with_files(5).run_by(runner);
    let before = repo.snapshot();
    let file = dependent_tasks(&repo);
    let (out, report) = repo.run(&file, &["--no-readback", "--only", "a", "--only", "gen-4"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st.keys().collect::<Vec<_>>(), ["a", "gen-4"], "{st:?}");
    assert!(has(
        &repo,
        report["integration_branch"].as_str().unwrap(),
        "gen-4"
    ));
    // A dependency left out is named, and nothing runs.
    let runs_before = std::fs::read_dir(repo.path.join(".git/fanout/runs"))
        .unwrap()
        .count();
    let (out, _) = repo.run(&file, &["--no-readback", "--only", "b"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("b, which depends on a") && stderr(&out).contains("--with-deps"),
        "{}",
        show(&out)
    );
    let (out, _) = repo.run(&file, &["--no-readback", "--only", "nope,a"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("no task nope; the tasks are: a, b, c, gen-3, gen-4"),
        "{}",
        show(&out)
    );
    let runs_after = std::fs::read_dir(repo.path.join(".git/fanout/runs"))
        .unwrap()
        .count();
    assert_eq!(
        runs_before, runs_after,
        "a refused selection creates no run"
    );
    // --with-deps brings the dependency; a comma list selects several.
    let (out, report) = repo.run(&file, &["--no-readback", "--only", "b,c", "--with-deps"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st.keys().collect::<Vec<_>>(), ["a", "b", "c"], "{st:?}");
    assert_eq!(st["c"], "failed");
    // A retry of that run runs within the same selection: the generated tasks stay out.
    let run_id = report["run_id"].as_str().unwrap().to_string();
    let out = with_env("FANOUT_TEST_PHASE", "2", || {
        repo.fanout(&["retry", &run_id])
    });
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&run_report(&repo, &run_id));
    assert_eq!(st.keys().collect::<Vec<_>>(), ["a", "b", "c"], "{st:?}");
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    repo.assert_left_as(&before);
}

crate::every_way!(only_runs_the_selected_tasks, only_runs_the_selected_tasks);

/// `fanout <args>` in the background, as the repository's runner, in workspace `kind`.
fn spawn(repo: &TestRepo, args: &[&str], kind: &str, phase: &str) -> Child {
    let mut cmd = repo.fanout_command();
    cmd.args(args).arg("--repo").arg(&repo.path);
    if args.first() == Some(&"run") {
        cmd.arg("--workspace").arg(kind);
    }
    cmd.env("FANOUT_TEST_PHASE", phase)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fanout starts")
}

/// Waits until the run's state (snapshot with its journal, as `fanout status` reads it) holds
/// `ready`; kills the child and fails on timeout.
fn wait_for_state(
    repo: &TestRepo,
    run_id: &str,
    child: &mut Child,
    ready: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = read_json(&run_dir(repo, run_id).join("state.json"));
        if ready(&state) {
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run did not reach the awaited state: {state}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The repository's run ids, oldest first.
fn run_ids(repo: &TestRepo) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(repo.path.join(".git/fanout/runs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The id of the newest run, once its folder exists.
fn newest_run(repo: &TestRepo, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(id) = run_ids(repo).pop() {
            return id;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no run folder appeared");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn phase_of(state: &Value, task: &str) -> String {
    state["tasks"][task]["phase"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// kill -9 (or SIGINT) while a retry runs c: the retry leaves a state `fanout resume`
/// finishes, without redoing a or b.
/// The first run of [`three_tasks`] in workspace `kind`: its id and report.
fn first_run_in(repo: &TestRepo, kind: &str) -> (String, Value) {
    let file = three_tasks(repo);
    let out = repo
        .fanout_command()
        .args(["run", "--no-readback", "--workspace", kind, "--tasks"])
        .arg(&file)
        .arg("--repo")
        .arg(&repo.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run_id = run_ids(repo).pop().expect("the run's folder");
    let first = run_report(repo, &run_id);
    (run_id, first)
}

fn stopped_retry_resumes(runner: Runner, kind: &str, signal: nix::sys::signal::Signal) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let before = repo.snapshot();
    let (run_id, first) = first_run_in(&repo, kind);
    let mut child = spawn(&repo, &["retry", &run_id], kind, "1");
    wait_for_state(&repo, &run_id, &mut child, |s| {
        s["status"] == "running" && phase_of(s, "c") == "agent_turn"
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).expect("kill");
    let out = child.wait_with_output().expect("fanout exits");
    if signal == nix::sys::signal::Signal::SIGINT {
        assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    }
    let status = repo.fanout(&["status", &run_id]);
    assert!(
        stdout(&status).contains("(agent turn 1)"),
        "{}",
        show(&status)
    );
    let out = with_env("FANOUT_TEST_PHASE", "2", || {
        repo.fanout(&["resume", &run_id])
    });
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stderr(&out).contains("resume: c: cut off in agent turn 1; it runs again"),
        "{}",
        show(&out)
    );
    let report = run_report(&repo, &run_id);
    assert!(statuses(&report).values().all(|s| s == "merged"));
    for id in ["a", "b"] {
        assert_eq!(task(&report, id)["commit"], task(&first, id)["commit"]);
        assert_eq!(started_count(&repo, &run_id, id), 1, "{id}");
    }
    let merged = report["integration_branch"].as_str().unwrap();
    assert!(has(&repo, merged, "c"));
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
    repo.assert_left_as(&before);
}

fn killed_retry_resumes(runner: Runner) {
    for kind in ["overlay", "worktree"] {
        stopped_retry_resumes(runner, kind, nix::sys::signal::Signal::SIGKILL);
    }
}

fn interrupted_retry_resumes(runner: Runner) {
    for kind in ["overlay", "worktree"] {
        stopped_retry_resumes(runner, kind, nix::sys::signal::Signal::SIGINT);
    }
}

crate::both_ways!(killed_retry_resumes, killed_retry_resumes);

/// An interrupted run can be retried instead of resumed: its unfinished task runs too, said
/// with the phase it was cut off in, and the kept commits stay.
fn an_interrupted_run_can_be_retried(runner: Runner) {
    for kind in ["overlay", "worktree"] {
        let repo = TestRepo::with_files(1).run_by(runner);
        let before = repo.snapshot();
        let file = three_tasks(&repo);
        let mut child = spawn(
            &repo,
            &["run", "--no-readback", "--tasks", file.to_str().unwrap()],
            kind,
            "1",
        );
        let run_id = newest_run(&repo, &mut child);
        wait_for_state(&repo, &run_id, &mut child, |s| {
            s["tasks"]["a"]["status"] == "verified" && phase_of(s, "c") == "agent_turn"
        });
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
        let out = child.wait_with_output().expect("fanout exits");
        assert_eq!(out.status.code(), Some(130), "{}", show(&out));
        let a_commit =
            read_json(&run_dir(&repo, &run_id).join("state.json"))["tasks"]["a"]["commit"].clone();
        let out = with_env("FANOUT_TEST_PHASE", "2", || {
            repo.fanout(&["retry", &run_id])
        });
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert!(
            stderr(&out).contains("retry: c: cut off in agent turn 1; it runs again"),
            "{}",
            show(&out)
        );
        let report = run_report(&repo, &run_id);
        assert!(
            statuses(&report).values().all(|s| s == "merged"),
            "{report}"
        );
        assert_eq!(task(&report, "a")["commit"], a_commit);
        assert_eq!(started_count(&repo, &run_id, "a"), 1);
        assert!(has(
            &repo,
            report["integration_branch"].as_str().unwrap(),
            "c"
        ));
        assert!(
            repo.live_processes().is_empty(),
            "{:?}",
            repo.live_processes()
        );
        repo.assert_left_as(&before);
    }
}

crate::both_ways!(
    an_interrupted_run_can_be_retried,
    an_interrupted_run_can_be_retried
);

/// kill -9 while the retry integrates (c verified, waiting before its merge): resume keeps c's
/// new commit and integrates it, nothing runs a third time.
fn retry_killed_while_integrating_resumes(runner: Runner) {
    for kind in ["overlay", "worktree"] {
        let repo = TestRepo::with_files(3).run_by(runner);
        let before = repo.snapshot();
        let (run_id, first) = first_run_in(&repo, kind);
        let mut cmd = repo.fanout_command();
        cmd.args(["retry", &run_id, "--repo"])
            .arg(&repo.path)
            .env("FANOUT_TEST_PHASE", "2")
            .env("FANOUT_TEST_MERGE_DELAY_MS", "60000")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("fanout starts");
        wait_for_state(&repo, &run_id, &mut child, |s| {
            s["status"] == "running"
                && phase_of(s, "c") == "ready"
                && s["tasks"]["c"]["status"] == "verified"
        });
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let out = repo.fanout(&["resume", &run_id]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert!(!stderr(&out).contains("runs again"), "{}", show(&out));
        let report = run_report(&repo, &run_id);
        assert!(
            statuses(&report).values().all(|s| s == "merged"),
            "{report}"
        );
        assert_eq!(started_count(&repo, &run_id, "c"), 2);
        for id in ["a", "b"] {
            assert_eq!(task(&report, id)["commit"], task(&first, id)["commit"]);
        }
        assert!(has(
            &repo,
            report["integration_branch"].as_str().unwrap(),
            "c"
        ));
        assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
        repo.assert_left_as(&before);
    }
}

crate::both_ways!(
    retry_killed_while_integrating_resumes,
    retry_killed_while_integrating_resumes
);
crate::both_ways!(interrupted_retry_resumes, interrupted_retry_resumes);

/// kill -9 of a run while task `t` is in a phase; `fanout status` shows it, and `fanout
/// resume` redoes or keeps the task as docs/cli.md says.
fn kill_9_in_phase(
    runner: Runner,
    kind: &str,
    tasks: Value,
    phase: &str,
    env: &[(&str, &str)],
) -> (TestRepo, String, Output) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let before = repo.snapshot();
    let file = repo.write_tasks(&tasks);
    let mut cmd = repo.fanout_command();
    cmd.args(["run", "--no-readback", "--workspace", kind, "--tasks"])
        .arg(&file)
        .arg("--repo")
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("fanout starts");
    let run_id = newest_run(&repo, &mut child);
    // The phase is in the snapshot (about a second behind); at `ready` the commit too.
    wait_for_state(&repo, &run_id, &mut child, |s| {
        phase_of(s, "t") == phase && (phase != "ready" || s["tasks"]["t"]["status"] == "verified")
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let out = with_env("FANOUT_TEST_PHASE", "2", || {
        repo.fanout(&["resume", &run_id])
    });
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = run_report(&repo, &run_id);
    assert!(
        statuses(&report).values().all(|s| s == "merged"),
        "{report}"
    );
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
    repo.assert_left_as(&before);
    (repo, run_id, out)
}

fn one_task(extra: Value) -> Value {
    let mut t = json!({"id": "t", "prompt": "x", "agent": "ok"});
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    json!({"agents": agents(), "tasks": [t]})
}

const HANG_IN_PHASE_1: &str = "if [ \"$FANOUT_TEST_PHASE\" = 1 ]; then exec sleep 300; fi; true";

fn kill_9_in_gates_redoes_the_task(runner: Runner) {
    for kind in ["overlay", "worktree"] {
        let tasks = one_task(json!({"verify": ["sh", "-c", HANG_IN_PHASE_1]}));
        let (repo, run_id, out) = kill_9_in_phase(runner, kind, tasks, "gates", &[]);
        assert!(
            stderr(&out).contains("resume: t: cut off in gates (turn 1); it runs again"),
            "{}",
            show(&out)
        );
        assert_eq!(started_count(&repo, &run_id, "t"), 2);
    }
}

fn kill_9_in_setup_redoes_the_task(runner: Runner) {
    for kind in ["overlay", "worktree"] {
        let tasks = one_task(json!({"setup": ["sh", "-c", HANG_IN_PHASE_1]}));
        let (repo, run_id, out) = kill_9_in_phase(runner, kind, tasks, "setup", &[]);
        assert!(
            stderr(&out).contains("resume: t: cut off in setup; it runs again"),
            "{}",
            show(&out)
        );
        assert_eq!(started_count(&repo, &run_id, "t"), 2);
    }
}

fn kill_9_at_ready_keeps_the_commit(runner: Runner) {
    for kind in ["overlay", "worktree"] {
        // Integration waits before each merge: the task is verified, its commit recorded.
        let env = [("FANOUT_TEST_MERGE_DELAY_MS", "60000")];
        let (repo, run_id, out) = kill_9_in_phase(runner, kind, one_task(json!({})), "ready", &env);
        assert!(!stderr(&out).contains("runs again"), "{}", show(&out));
        assert_eq!(started_count(&repo, &run_id, "t"), 1);
    }
}

crate::both_ways!(
    kill_9_in_gates_redoes_the_task,
    kill_9_in_gates_redoes_the_task
);
crate::both_ways!(
    kill_9_in_setup_redoes_the_task,
    kill_9_in_setup_redoes_the_task
);
crate::both_ways!(
    kill_9_at_ready_keeps_the_commit,
    kill_9_at_ready_keeps_the_commit
);

#[test]
fn validate_checks_an_only_selection() {
    let repo = TestRepo::with_files(1);
    let file = dependent_tasks(&repo);
    let tasks = file.to_str().unwrap();
    let dir = repo.path.to_str().unwrap();
    let ok = repo
        .fanout_command()
        .args([
            "validate", "--tasks", tasks, "--expand", "--repo", dir, "--only", "gen-3,c",
        ])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", show(&ok));
    assert!(stdout(&ok).contains("valid — 2 task(s)"), "{}", show(&ok));
    assert!(stdout(&ok).contains("gen-3\t") && !stdout(&ok).contains("gen-4\t"));
    let missing = repo
        .fanout_command()
        .args(["validate", "--tasks", tasks, "--only", "b"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2), "{}", show(&missing));
    assert!(
        stderr(&missing).contains("depends on a"),
        "{}",
        show(&missing)
    );
    let with_deps = repo
        .fanout_command()
        .args(["validate", "--tasks", tasks, "--only", "b", "--with-deps"])
        .output()
        .unwrap();
    assert_eq!(with_deps.status.code(), Some(0), "{}", show(&with_deps));
    assert!(
        stdout(&with_deps).contains("valid — 2 task(s)"),
        "{}",
        show(&with_deps)
    );
}

/// The integration gate judges the retry's result again: the retried task's change breaks it
/// (the gate refuses any `src/c.txt`), so the gate takes c out and a and b stay merged.
fn the_integration_gate_judges_a_retry(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let before = repo.snapshot();
    let file = repo.write_tasks(&json!({
        "agents": agents(),
        "integrate": {"verify": ["sh", "-c", "test ! -e src/c.txt"], "timeout_secs": 120},
        "tasks": [
            {"id": "a", "prompt": "x", "agent": "ok"},
            {"id": "b", "prompt": "x", "agent": "ok"},
            {"id": "c", "prompt": "x", "agent": "fixable"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(report["integration"]["passed"], true, "{report}");
    let run_id = report["run_id"].as_str().unwrap().to_string();
    let out = with_env("FANOUT_TEST_PHASE", "2", || {
        repo.fanout(&["retry", &run_id])
    });
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report = run_report(&repo, &run_id);
    let st = statuses(&report);
    assert_eq!(st["c"], "integration_failed", "{report}");
    assert_eq!(st["a"], "merged");
    assert_eq!(st["b"], "merged");
    assert_eq!(report["integration"]["ejected"], json!(["c"]), "{report}");
    let merged = report["integration_branch"].as_str().unwrap();
    assert!(has(&repo, merged, "a") && has(&repo, merged, "b"));
    assert!(!repo.tree_files(merged).contains_key("src/c.txt"));
    repo.assert_left_as(&before);
}

crate::both_ways!(
    the_integration_gate_judges_a_retry,
    the_integration_gate_judges_a_retry
);
