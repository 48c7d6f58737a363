//! Candidates (best-of-N): candidates of known quality — an exec agent whose work depends on
//! `FANOUT_CANDIDATE`: candidate 1 fails its verify, 2 passes with a large change, 3 passes
//! with a small one — and each `select` mode picks as documented; `first` stops the rest;
//! candidate branches stay until `fanout clean --branches`; `fanout diff --candidate K`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::anthropic_server::{AnthropicServer, Reply as A};
use crate::every_way;
use crate::support::*;

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// Candidate 1 breaks the file (its verify fails), 2 fixes it with ten more lines, 3 fixes it
/// alone; `slow` (a candidate number) first sleeps, then leaves a marker in its workspace.
fn quality_script(slow: Option<u32>, sleep_secs: u32) -> String {
    let slow = slow.map(|k| k.to_string()).unwrap_or_else(|| "0".into());
    format!(
        r#"
if [ "$FANOUT_CANDIDATE" = "{slow}" ]; then sleep {sleep_secs}; echo late > marker.txt; fi
case "$FANOUT_CANDIDATE" in
  1) echo broken > src/file_00.txt ;;
  2) echo FIXED > src/file_00.txt; for i in 1 2 3 4 5 6 7 8 9 10; do echo "extra $i" >> src/file_00.txt; done ;;
  3) echo FIXED > src/file_00.txt ;;
  *) exit 3 ;;
esac
"#
    )
}

fn tasks(script: &str, select: &str) -> Value {
    json!({
        "agents": {"script": {"protocol": "exec", "command": "sh", "args": ["-c", script]}},
        "defaults": {"agent": "script", "max_attempts": 1},
        "tasks": [{
            "id": "fix",
            "prompt": "fix src/file_00.txt",
            "verify": ["grep", "-q", "FIXED", "src/file_00.txt"],
            "candidates": 3,
            "select": select
        }]
    })
}

fn candidate(t: &Value, k: u64) -> &Value {
    t["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["candidate"] == k))
        .unwrap_or_else(|| panic!("no candidate {k} in {t:#}"))
}

fn merged_file(repo: &TestRepo, report: &Value) -> String {
    let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    String::from_utf8_lossy(&files["src/file_00.txt"]).into_owned()
}

fn events(out: &std::process::Output, name: &str) -> Vec<Value> {
    stdout(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == name)
        .collect()
}

/// `smallest`: the passing candidate with the fewest changed lines is the task's; the one
/// that failed its verify says why; every candidate has its own branch.
fn smallest_picks_the_fewest_changed_lines(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&tasks(&quality_script(None, 0), "smallest"));
    let html = repo.tmp.path().join("page.html");
    let html_arg = html.to_str().expect("utf-8").to_string();
    let (out, report) = repo.run(
        &file,
        &[
            "--no-readback",
            "--jobs",
            "3",
            "--json",
            "--html",
            &html_arg,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(t["status"], "merged", "{t:#}");
    assert_eq!(t["candidate"], 3, "{t:#}");
    // The page and the table show every candidate and the choice.
    let page = std::fs::read_to_string(&html).expect("html page");
    assert_eq!(page.matches("<tr data-candidate=").count(), 3, "{page}");
    assert!(
        page.contains("<tr data-candidate=\"3\" class=\"chosen\">"),
        "{page}"
    );
    assert!(page.contains("verify_failed"), "{page}");
    assert!(
        stderr(&out).contains("fix: candidate 3 of 3 chosen: the fewest changed lines"),
        "{}",
        show(&out)
    );
    assert_eq!(candidate(t, 1)["status"], "verify_failed", "{t:#}");
    assert_eq!(candidate(t, 2)["status"], "passed", "{t:#}");
    assert_eq!(candidate(t, 3)["chosen"], true, "{t:#}");
    assert_eq!(candidate(t, 2)["chosen"], false, "{t:#}");
    assert!(candidate(t, 2)["insertions"].as_u64() > candidate(t, 3)["insertions"].as_u64());
    assert!(
        candidate(t, 3)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("fewest")),
        "{t:#}"
    );
    assert!(candidate(t, 1)["reason"]
        .as_str()
        .is_some_and(|r| r.contains("did not pass")));
    assert_eq!(merged_file(&repo, &report), "FIXED\n");
    let run = report["run_id"].as_str().expect("run id");
    for k in 1..=3 {
        let branch = format!("fanout/{run}/task/fix/candidate-{k}");
        assert_eq!(candidate(t, k)["branch"], branch.as_str());
        assert!(
            !git_text(&repo.path, &["branch", "--list", &branch]).is_empty(),
            "{branch} is missing"
        );
    }
    assert_eq!(
        git_text(
            &repo.path,
            &["rev-parse", &format!("fanout/{run}/task/fix/candidate-3")]
        ),
        t["commit"].as_str().expect("commit")
    );
    // The events: three started, three ended, one selected.
    assert_eq!(
        events(&out, "candidate_started").len(),
        3,
        "{}",
        stdout(&out)
    );
    let ended = events(&out, "candidate_ended");
    assert_eq!(ended.len(), 3);
    // The events and the report agree on each candidate.
    for e in &ended {
        let c = candidate(t, e["candidate"].as_u64().expect("candidate"));
        assert_eq!(e["status"], c["status"], "{e} {c:#}");
        assert_eq!(e["insertions"], c["insertions"], "{e} {c:#}");
        assert_eq!(e["deletions"], c["deletions"], "{e} {c:#}");
    }
    let selected = events(&out, "candidate_selected");
    assert_eq!(selected.len(), 1);
    assert_eq!(selected[0]["candidate"], 3);
    assert_eq!(selected[0]["task"], "fix");
}
every_way!(smallest_mode, smallest_picks_the_fewest_changed_lines);

/// `first`: the first candidate to pass is the task's; a slower one is stopped at once — its
/// agent never got to write its marker, and the run did not wait for it.
fn first_stops_the_others(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&tasks(&quality_script(Some(3), 6), "first"));
    let started = Instant::now();
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3", "--keep-worktrees"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(t["candidate"], 2, "{t:#}");
    assert_eq!(candidate(t, 3)["status"], "stopped", "{t:#}");
    assert!(
        candidate(t, 3)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stopped")),
        "{t:#}"
    );
    assert!(
        took < Duration::from_secs(6),
        "the run waited for the stopped candidate: {took:?}"
    );
    assert_eq!(
        merged_file(&repo, &report),
        format!(
            "FIXED\n{}",
            (1..=10).map(|i| format!("extra {i}\n")).collect::<String>()
        )
    );
    // Past the stopped agent's sleep: had it lived on, its (kept) workspace would hold it.
    std::thread::sleep(Duration::from_secs(8));
    let run_dir = Path::new(report["run_dir"].as_str().expect("run dir"));
    assert!(
        run_dir.join("worktrees").join("fix+candidate-3").exists()
            || run_dir.join("worktrees/.layers/fix+candidate-3").exists(),
        "the stopped candidate's workspace was not made"
    );
    assert!(
        !workspace_has(run_dir, "fix+candidate-3", "marker.txt"),
        "the stopped candidate's agent lived on and wrote its marker"
    );
    let run = report["run_id"].as_str().expect("run id");
    assert!(
        processes_under(repo.tmp.path()).is_empty(),
        "processes of the run live on"
    );
    let _ = run;
}
every_way!(first_mode, first_stops_the_others);

/// No candidate passes: the task fails with each candidate's failure.
fn no_passing_candidate_fails_with_each_failure(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let script = "echo broken-$FANOUT_CANDIDATE > src/file_00.txt";
    let file = repo.write_tasks(&tasks(script, "smallest"));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(t["status"], "verify_failed", "{t:#}");
    let error = t["error"].as_str().unwrap_or_default();
    for k in 1..=3 {
        assert!(error.contains(&format!("candidate {k}")), "{error}");
        assert_eq!(candidate(t, k)["status"], "verify_failed", "{t:#}");
    }
    assert!(t["candidate"].is_null(), "{t:#}");
}
every_way!(none_pass, no_passing_candidate_fails_with_each_failure);

/// `review`: Claude Code (real, on a scripted Anthropic server) reads the passing candidates'
/// diffs and names candidate 2, though 3 is smaller; the reason is the reviewer's.
fn review_picks_the_reviewers_choice(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let reviewer = AnthropicServer::start(|req| {
        let asked = req.body["messages"].to_string();
        if asked.contains("Candidate 2")
            && asked.contains("Candidate 3")
            && !asked.contains("Candidate 1 ")
        {
            A::Text("CHOOSE 2: it documents the fix with extra lines".into())
        } else {
            A::Text("I cannot tell".into())
        }
    });
    let mut t = priced(tasks(&with_usage(&quality_script(None, 0)), "review"));
    t["verifier"] = claude_verifier();
    let file = repo.write_tasks(&t);
    let (out, report) = with_env("ANTHROPIC_BASE_URL", leak(reviewer.base_url()), || {
        with_env("ANTHROPIC_API_KEY", "sk-ant-test-judge-0123456789", || {
            repo.run(&file, &["--no-readback", "--jobs", "3", "--json"])
        })
    });
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(t["candidate"], 2, "{t:#}");
    let why = candidate(t, 2)["reason"].as_str().unwrap_or_default();
    assert!(why.contains("documents the fix"), "{why}");
    assert!(
        candidate(t, 3)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("candidate 2 was chosen")),
        "{t:#}"
    );
    assert!(
        !reviewer.requests().is_empty(),
        "the reviewer was not asked"
    );
    assert!(merged_file(&repo, &report).contains("extra 10"));
    // Issue 23: the review is the task's judge: the task spent its candidates' 6000 tokens
    // and what the review did, said in `candidate_selected` too.
    let review = &t["select_usage"];
    assert!(total_tokens(review) > 0, "{t:#}");
    assert_eq!(
        total_tokens(&t["usage"]),
        6000 + total_tokens(review),
        "{t:#}"
    );
    assert_eq!(report["usage"], t["usage"]);
    let selected = events(&out, "candidate_selected");
    assert_eq!(selected[0]["usage"], *review, "{}", show(&out));
}
every_way!(review_mode, review_picks_the_reviewers_choice);

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// `fanout diff --candidate K` shows candidate K's change; candidate branches stay until
/// `fanout clean --branches`.
fn diff_and_clean(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&tasks(&quality_script(None, 0), "smallest"));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = report["run_id"].as_str().expect("run id").to_string();
    let two = repo.fanout(&["diff", &run, "fix", "--candidate", "2", "--color", "never"]);
    assert_eq!(two.status.code(), Some(0), "{}", show(&two));
    assert!(stdout(&two).contains("+extra 10"), "{}", stdout(&two));
    let three = repo.fanout(&["diff", &run, "fix", "--candidate", "3", "--color", "never"]);
    assert!(!stdout(&three).contains("extra"), "{}", stdout(&three));
    assert!(stdout(&three).contains("+FIXED"), "{}", stdout(&three));
    let none = repo.fanout(&["diff", &run, "fix", "--candidate", "9"]);
    assert_ne!(none.status.code(), Some(0));
    let prefix = format!("fanout/{run}/task/fix/candidate-");
    let count = |repo: &TestRepo| {
        git_text(&repo.path, &["branch", "--list", &format!("{prefix}*")])
            .lines()
            .count()
    };
    assert_eq!(count(&repo), 3);
    let clean = repo.fanout(&["clean", &run, "--branches"]);
    assert_eq!(clean.status.code(), Some(0), "{}", show(&clean));
    assert_eq!(count(&repo), 0, "{}", show(&clean));
}
every_way!(diff_candidate, diff_and_clean);

/// The pinned Codex launcher of `version`.
fn codex_bin(version: &str) -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents")
        .join(format!("codex-{version}"))
        .join("node_modules/.bin/codex");
    assert!(
        p.is_file(),
        "Codex {version} is not installed at {}",
        p.display()
    );
    p
}

/// Real Codex 0.171.0 on the scripted Responses server: three candidates, each its own
/// Codex thread. Codex's commands get only the core environment (no `FANOUT_CANDIDATE`), so
/// the scripted model tells candidates apart by the working folder Codex reports
/// (`…/<id>+candidate-<k>`): candidate 1 breaks the file (its verify fails), 2 writes more
/// lines, so candidate 3 is chosen (`smallest`).
fn codex_candidates(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let server = crate::model_server::ModelServer::start(|req| {
        use crate::model_server::Reply as M;
        if req.after_tool_output() {
            return M::Message("done".into());
        }
        let body = req.body.to_string();
        let k = body
            .split("+candidate-")
            .nth(1)
            .and_then(|r| r.chars().next())
            .unwrap_or('?');
        M::Command(
            match k {
                '1' => "echo broken > out.txt",
                '2' => "printf 'fixed\\nmore\\nlines\\n' > out.txt",
                '3' => "echo fixed > out.txt",
                _ => "echo unknown > out.txt",
            }
            .into(),
        )
    });
    let home = repo.tmp.path().join("codex-home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(
        home.join("config.toml"),
        crate::model_server::codex_config_for_port(server.port()),
    )
    .expect("write");
    let file = repo.write_tasks(&json!({
        "version": 1,
        "defaults": {"max_attempts": 1},
        "tasks": [{
            "id": "codex-fix",
            "prompt": "Write out.txt.",
            "verify": "grep -q fixed out.txt",
            "candidates": 3,
            "select": "smallest"
        }]
    }));
    let bin = leak(codex_bin("0.171.0").display().to_string());
    let home = leak(home.display().to_string());
    let (out, report) = with_env("FANOUT_CODEX_BIN", bin, || {
        with_env("CODEX_HOME", home, || {
            repo.run(&file, &["--no-readback", "--jobs", "3"])
        })
    });
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "codex-fix");
    assert_eq!(t["candidate"], 3, "{t:#}");
    assert_eq!(candidate(t, 1)["status"], "verify_failed", "{t:#}");
    assert_eq!(candidate(t, 2)["status"], "passed", "{t:#}");
    let threads: std::collections::BTreeSet<String> = (1..=3)
        .map(|k| {
            let c = candidate(t, k);
            assert_eq!(c["agent"]["version"], "0.171.0", "{c:#}");
            c["agent"]["thread_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(threads.len(), 3, "each candidate its own thread: {t:#}");
    let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    assert_eq!(String::from_utf8_lossy(&files["out.txt"]), "fixed\n");
    assert!(
        server.requests().len() >= 6,
        "two model calls per candidate"
    );
    // Issue 23: each candidate's tokens are its own thread's; together they are the task's
    // and the run's, and what the model server counted.
    let reported = server.reported();
    let mut sum = crate::model_server::Reported {
        responses: reported.responses,
        ..Default::default()
    };
    for k in 1..=3 {
        let u = &candidate(t, k)["usage"];
        assert!(total_tokens(u) > 0, "candidate {k}: {t:#}");
        sum.input_tokens += u["input_tokens"].as_u64().unwrap_or_default();
        sum.cached_tokens += u["cached_input_tokens"].as_u64().unwrap_or_default();
        sum.output_tokens += u["output_tokens"].as_u64().unwrap_or_default();
        sum.reasoning_tokens += u["reasoning_tokens"].as_u64().unwrap_or_default();
        sum.total_tokens += total_tokens(u);
    }
    assert_eq!(sum, reported, "{t:#}");
    let u = &t["usage"];
    assert_eq!(
        (
            u["input_tokens"].as_u64(),
            u["cached_input_tokens"].as_u64(),
            u["output_tokens"].as_u64(),
            u["total_tokens"].as_u64()
        ),
        (
            Some(reported.input_tokens),
            Some(reported.cached_tokens),
            Some(reported.output_tokens),
            Some(reported.total_tokens)
        ),
        "{u:#}"
    );
    assert_eq!(report["usage"], *u);
}
every_way!(codex_0171, codex_candidates);

/// `fanout resume` of a run cut off while its candidates ran: the task's candidates run again
/// (each from the start), and one is chosen as in a run that was never cut off.
fn resume_reruns_the_candidates(mode: &str) {
    let repo = TestRepo::with_files(1);
    let script = format!(
        "echo started > started.txt; if [ \"$FANOUT_TEST_PHASE\" = 1 ]; then sleep 60; fi; rm started.txt; {}",
        quality_script(None, 0)
    );
    let file = repo.write_tasks(&tasks(&script, "smallest"));
    let mut child = std::process::Command::new(fanout_bin())
        .args([
            "run",
            "--workspace",
            mode,
            "--no-readback",
            "--jobs",
            "3",
            "--tasks",
        ])
        .arg(&file)
        .arg("--repo")
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fanout starts");
    let runs = repo.path.join(".git/fanout/runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let run_dir = loop {
        let run = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path());
        if let Some(run) = run.filter(|r| {
            (1..=3).all(|k| workspace_has(r, &format!("fix+candidate-{k}"), "started.txt"))
        }) {
            break run;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the candidates did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run_id = run_dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let out = child.wait_with_output().expect("fanout exits");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let report_path = repo.report_path();
    let out = std::process::Command::new(fanout_bin())
        .args(["resume", &run_id, "--report"])
        .arg(&report_path)
        .arg("--repo")
        .arg(&repo.path)
        .env("FANOUT_TEST_PHASE", "2")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("resume runs");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    let t = task(&report, "fix");
    assert_eq!(t["status"], "merged", "{t:#}");
    assert_eq!(t["candidate"], 3, "{t:#}");
    assert_eq!(candidate(t, 2)["status"], "passed", "{t:#}");
    assert_eq!(merged_file(&repo, &report), "FIXED\n");
}

#[test]
fn resume_reruns_the_candidates_overlay() {
    resume_reruns_the_candidates("overlay");
}

#[test]
fn resume_reruns_the_candidates_worktree() {
    resume_reruns_the_candidates("worktree");
}

/// `first` without `--keep-worktrees`: the stopped candidate's workspace goes with it, and
/// nothing of it is left (no registered worktree, no process, no warning).
fn first_leaves_nothing_of_the_stopped(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&tasks(&quality_script(Some(3), 6), "first"));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(t["candidate"], 2, "{t:#}");
    assert_eq!(candidate(t, 3)["status"], "stopped", "{t:#}");
    assert!(!stderr(&out).contains("warning"), "{}", show(&out));
    let worktrees = git_text(&repo.path, &["worktree", "list", "--porcelain"]);
    assert_eq!(worktrees.matches("worktree ").count(), 1, "{worktrees}");
    let run_dir = Path::new(report["run_dir"].as_str().expect("run dir"));
    assert!(!run_dir.join("worktrees").join("fix+candidate-3").exists());
    assert!(processes_under(repo.tmp.path()).is_empty());
}
every_way!(first_mode_cleanup, first_leaves_nothing_of_the_stopped);

/// `review` without a working reviewer (its Claude Code fails): the smallest is chosen, with a
/// warning, and the reason says the review failed.
fn review_that_fails_falls_back_to_the_smallest(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let bin = repo.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let claude = bin.join("claude");
    std::fs::write(&claude, "#!/bin/sh\necho 'no model here' >&2\nexit 1\n").expect("write");
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut t = tasks(&quality_script(None, 0), "review");
    t["verifier"] = json!({"command": claude.display().to_string(), "args": ["mcp", "serve"]});
    let file = repo.write_tasks(&t);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(t["candidate"], 3, "{t:#}");
    let why = candidate(t, 3)["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("fewest") && why.contains("review failed"),
        "{why}"
    );
    assert!(
        stderr(&out).contains("the review of the candidates failed"),
        "{}",
        show(&out)
    );
}
every_way!(
    review_fallback,
    review_that_fails_falls_back_to_the_smallest
);

/// A list of profiles: each candidate runs its own agent, named in its report; the task's
/// `agent_name` is the chosen candidate's.
fn profiles_each_run_their_own_agent(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&json!({
        "agents": {
            "wordy": {"protocol": "exec", "command": "sh", "args": ["-c", "printf 'FIXED\\nand more\\n' > src/file_00.txt"]},
            "terse": {"protocol": "exec", "command": "sh", "args": ["-c", "echo \"FIXED $FANOUT_CANDIDATE\" > src/file_00.txt"]}
        },
        "defaults": {"max_attempts": 1},
        "tasks": [{
            "id": "fix",
            "prompt": "fix src/file_00.txt",
            "verify": ["grep", "-q", "FIXED", "src/file_00.txt"],
            "candidates": [{"agent": "wordy"}, {"agent": "terse"}]
        }]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(candidate(t, 1)["agent_name"], "wordy", "{t:#}");
    assert_eq!(candidate(t, 2)["agent_name"], "terse", "{t:#}");
    assert_eq!(t["candidate"], 2, "{t:#}");
    assert_eq!(t["agent_name"], "terse", "{t:#}");
    assert_eq!(merged_file(&repo, &report), "FIXED 2\n");
}
every_way!(profiles, profiles_each_run_their_own_agent);

/// A task that depends on a task with candidates starts from the chosen candidate's commit.
fn dependents_start_from_the_chosen_commit(runner: Runner) {
    let repo = TestRepo::with_files(2).run_by(runner);
    let mut t = tasks(&quality_script(None, 0), "smallest");
    t["agents"]["copy"] = json!({"protocol": "exec", "command": "sh", "args": ["-c", "cp src/file_00.txt src/file_01.txt"]});
    t["tasks"]
        .as_array_mut()
        .expect("tasks")
        .push(json!({"id": "next", "prompt": "copy", "agent": "copy", "depends_on": ["fix"]}));
    let file = repo.write_tasks(&t);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(task(&report, "fix")["candidate"], 3);
    assert_eq!(task(&report, "next")["status"], "merged");
    let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    assert_eq!(
        String::from_utf8_lossy(&files["src/file_01.txt"]),
        "FIXED\n"
    );
}
every_way!(dependents, dependents_start_from_the_chosen_commit);

/// `on_conflict: retry`: a task with candidates that conflicts runs all its candidates again
/// from the integration head, and lands in round 2.
fn a_conflicting_task_reruns_its_candidates(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let mut t = tasks(&quality_script(None, 0), "smallest");
    t["agents"]["first"] = json!({"protocol": "exec", "command": "sh", "args": ["-c", "echo early > src/file_00.txt"]});
    t["defaults"]["on_conflict"] = json!("retry");
    t["tasks"]
        .as_array_mut()
        .expect("tasks")
        .insert(0, json!({"id": "early", "prompt": "x", "agent": "first"}));
    let file = repo.write_tasks(&t);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let fix = task(&report, "fix");
    assert_eq!(fix["status"], "merged", "{fix:#}");
    assert_eq!(fix["candidate"], 3, "{fix:#}");
    assert_eq!(fix["rounds"].as_array().map(Vec::len), Some(2), "{fix:#}");
    assert_eq!(merged_file(&repo, &report), "FIXED\n");
}
every_way!(conflict_retry, a_conflicting_task_reruns_its_candidates);

// Spending (issue 23): each candidate's tokens and money, the task's as their sum (and the
// review's), the run's the same everywhere; budgets and candidates.

/// `script` after writing candidate k's usage: 900·k input tokens (100 of them cached) and
/// 100·k output tokens of model `m` (so 1000·k in all; $0.0013·k at [`priced`]'s prices).
fn with_usage(script: &str) -> String {
    usage_then("${FANOUT_CANDIDATE:-1}", script)
}

/// `script` after writing a usage of 1000·`k` tokens (`k`: a shell word).
fn usage_then(k: &str, script: &str) -> String {
    format!(
        r#"k={k}
printf '{{"input_tokens": %d, "cached_input_tokens": 100, "output_tokens": %d, "model": "m"}}' $((900 * k)) $((100 * k)) > "$FANOUT_USAGE"
{script}"#
    )
}

fn priced(mut t: Value) -> Value {
    t["pricing"] = json!({"m": {"input": 1.0, "output": 4.0}});
    t
}

fn total_tokens(u: &Value) -> u64 {
    u["total_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total_tokens in {u:#}"))
}

fn usd(u: &Value) -> f64 {
    u["usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("no usd in {u:#}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Every candidate's spend is in its `candidate_ended` event, its report entry, its row of the
/// HTML table and the first line of `fanout diff --candidate K`; the task's is their sum; the
/// run's agrees in report.json, `run_ended`, JUnit and HTML.
fn every_candidates_spend_is_told(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&priced(tasks(
        &with_usage(&quality_script(None, 0)),
        "smallest",
    )));
    let dir = repo.tmp.path();
    let (html, junit) = (dir.join("page.html"), dir.join("junit.xml"));
    let (html_arg, junit_arg) = (
        html.to_str().expect("utf-8").to_string(),
        junit.to_str().expect("utf-8").to_string(),
    );
    let (out, report) = repo.run(
        &file,
        &[
            "--no-readback",
            "--jobs",
            "3",
            "--json",
            "--html",
            &html_arg,
            "--junit",
            &junit_arg,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(t["candidate"], 3, "{t:#}");
    let ended = events(&out, "candidate_ended");
    for k in 1..=3u64 {
        let c = candidate(t, k);
        assert_eq!(total_tokens(&c["usage"]), 1000 * k, "{c:#}");
        assert!(close(usd(&c["usage"]), 0.0013 * k as f64), "{c:#}");
        let e = ended
            .iter()
            .find(|e| e["candidate"] == k)
            .unwrap_or_else(|| panic!("no candidate_ended {k}: {}", show(&out)));
        assert_eq!(e["usage"], c["usage"], "{e:#}");
    }
    // The task spent what its three candidates did, not only the chosen one's.
    assert_eq!(total_tokens(&t["usage"]), 6000, "{t:#}");
    assert!(close(usd(&t["usage"]), 0.0078), "{t:#}");
    assert!(t.get("select_usage").is_none(), "{t:#}");
    // The run's figures agree everywhere.
    assert_eq!(report["usage"], t["usage"], "{:#}", report["usage"]);
    let run_ended = events(&out, "run_ended");
    assert_eq!(run_ended[0]["report"]["usage"], report["usage"]);
    let junit = std::fs::read_to_string(&junit).expect("junit");
    assert_eq!(
        junit
            .matches("<property name=\"usage.total_tokens\" value=\"6000\"/>")
            .count(),
        2,
        "the suite's and the task's: {junit}"
    );
    assert!(
        junit.contains("<property name=\"usage.usd\" value=\"0.007800\"/>"),
        "{junit}"
    );
    let page = std::fs::read_to_string(&html).expect("html page");
    assert!(page.contains("data-total-tokens=\"6000\""), "{page}");
    for k in 1..=3u64 {
        let row = page
            .split(&format!("<tr data-candidate=\"{k}\""))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row of candidate {k}: {page}"));
        assert!(
            row.contains(&format!("data-total-tokens=\"{}\"", 1000 * k)),
            "{row}"
        );
        assert!(
            row.contains(&format!("data-usd=\"{:.6}\"", 0.0013 * k as f64)),
            "{row}"
        );
    }
    // `fanout diff --candidate K` says what K spent, before its patch and its stat.
    let run = report["run_id"].as_str().expect("run id");
    let two = repo.fanout(&["diff", run, "fix", "--candidate", "2", "--color", "never"]);
    assert_eq!(
        stdout(&two).lines().next(),
        Some("# candidate 2 of fix: passed, spent 2000 tokens ($0.0026) (in 1800, out 200)"),
        "{}",
        show(&two)
    );
    assert!(stdout(&two).contains("+extra 10"), "{}", stdout(&two));
    let stat = repo.fanout(&["diff", run, "fix", "--candidate", "3", "--stat"]);
    let text = stdout(&stat);
    assert_eq!(
        text.lines().next(),
        Some(
            "# candidate 3 of fix: passed (chosen), spent 3000 tokens ($0.0039) (in 2700, out 300)"
        ),
        "{text}"
    );
    assert!(text.contains("src/file_00.txt"), "{text}");
}
every_way!(candidate_spend, every_candidates_spend_is_told);

/// Once the run's budget is spent no further candidate starts. A task whose dependency spent
/// it: none of its candidates starts, each ends `skipped` with the reason, and so does the
/// task. With one job, the first candidate to run spends it: the others end `skipped`, the task
/// is stopped by the budget with its work on its branches. `fanout resume --budget` runs them.
fn run_budget_stops_further_candidates(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let mut t = priced(tasks(
        &usage_then("1", "echo FIXED > src/file_00.txt"),
        "smallest",
    ));
    t["budget"] = json!({"run": {"tokens": 1000}});
    let fix = t["tasks"][0].clone();
    let mut first = t.clone();
    first["agents"]["one"] = json!({"protocol": "exec", "command": "sh",
        "args": ["-c", usage_then("1", "echo a > a.txt")]});
    first["tasks"] = json!([{"id": "a", "prompt": "x", "agent": "one"},
        {"depends_on": ["a"], "id": "fix", "prompt": fix["prompt"], "verify": fix["verify"],
         "candidates": 3}]);
    let file = repo.write_tasks(&first);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "1", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(task(&report, "a")["status"], "merged", "{}", show(&out));
    let none = task(&report, "fix");
    assert_eq!(none["status"], "skipped", "{none:#}");
    assert!(
        none["error"].as_str().is_some_and(
            |e| e.starts_with("run budget spent: 1000 tokens spent, the budget is 1000")
        ),
        "{none:#}"
    );
    for k in 1..=3 {
        let c = candidate(none, k);
        assert_eq!(c["status"], "skipped", "{c:#}");
        assert!(
            c["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("run budget spent")),
            "{c:#}"
        );
        assert!(c.get("usage").is_none(), "{c:#}");
    }
    assert!(none.get("usage").is_none(), "{none:#}");
    assert!(
        events(&out, "candidate_started").is_empty(),
        "{}",
        show(&out)
    );
    assert_eq!(events(&out, "candidate_ended").len(), 3, "{}", show(&out));

    // One task: the first candidate to get the job spends the budget.
    let file = repo.write_tasks(&t);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "1", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let fix = task(&report, "fix");
    assert_eq!(fix["status"], "budget_exceeded", "{fix:#}");
    let error = fix["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("run budget spent: 1000 tokens spent, the budget is 1000")
            && error.contains("their work is on their branches, not merged"),
        "{fix:#}"
    );
    assert_eq!(total_tokens(&fix["usage"]), 1000, "{fix:#}");
    assert!(fix.get("candidate").is_none(), "{fix:#}");
    let ran: Vec<u64> = (1..=3)
        .filter(|&k| candidate(fix, k)["status"] != "skipped")
        .collect();
    assert_eq!(ran.len(), 1, "{fix:#}");
    let ran = candidate(fix, ran[0]);
    assert_eq!(ran["status"], "passed", "{ran:#}");
    assert_eq!(total_tokens(&ran["usage"]), 1000, "{ran:#}");
    assert_eq!(events(&out, "candidate_started").len(), 1, "{}", show(&out));
    // Its work is on its branch; nothing merged.
    let files = repo.tree_files(ran["branch"].as_str().expect("branch"));
    assert_eq!(
        String::from_utf8_lossy(&files["src/file_00.txt"]),
        "FIXED\n"
    );
    let merged = report["integration_branch"].as_str().expect("branch");
    assert!(
        !repo.branches().iter().any(|b| b == merged),
        "{:?}",
        repo.branches()
    );

    // A larger budget: the task runs its candidates, afresh, and merges.
    let run = report["run_id"].as_str().expect("run id").to_string();
    let report_path = repo.report_path();
    let resumed = repo.fanout(&[
        "resume",
        &run,
        "--budget",
        "run.tokens=100000",
        "--jobs",
        "3",
        "--report",
        report_path.to_str().expect("utf-8"),
    ]);
    assert_eq!(resumed.status.code(), Some(0), "{}", show(&resumed));
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    let fix = task(&report, "fix");
    assert_eq!(fix["status"], "merged", "{fix:#}");
    assert_eq!(total_tokens(&fix["usage"]), 3000, "{fix:#}");
    for k in 1..=3 {
        assert_eq!(candidate(fix, k)["status"], "passed", "{fix:#}");
    }
    assert_eq!(merged_file(&repo, &report), "FIXED\n");
}
every_way!(run_budget_candidates, run_budget_stops_further_candidates);

/// The task's budget counts all its candidates. One job, 1000 tokens a candidate, a budget of
/// 2000: the first passes, the second takes the task to 2000 and ends `budget_exceeded` after
/// its turn, the third never starts; the task is `budget_exceeded`, nothing merged, though
/// each candidate alone stayed under the budget.
fn task_budget_counts_every_candidate(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let mut t = priced(tasks(
        &usage_then("1", "echo FIXED > src/file_00.txt"),
        "smallest",
    ));
    t["budget"] = json!({"task": {"tokens": 2000}});
    let file = repo.write_tasks(&t);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let fix = task(&report, "fix");
    assert_eq!(fix["status"], "budget_exceeded", "{fix:#}");
    assert_eq!(total_tokens(&fix["usage"]), 2000, "{fix:#}");
    assert!(fix.get("candidate").is_none(), "{fix:#}");
    let all: Vec<&Value> = (1..=3).map(|k| candidate(fix, k)).collect();
    let with = |status: &str, says: &str| -> Vec<&Value> {
        all.iter()
            .copied()
            .filter(|c| {
                c["status"] == status && c["error"].as_str().unwrap_or_default().contains(says)
            })
            .collect()
    };
    assert_eq!(
        all.iter().filter(|c| c["status"] == "passed").count(),
        1,
        "{fix:#}"
    );
    let over = with(
        "budget_exceeded",
        "task budget exceeded: 2000 tokens spent, the budget is 2000 (",
    );
    assert_eq!(over.len(), 1, "{fix:#}");
    let never = with("budget_exceeded", "before it started");
    assert_eq!(never.len(), 1, "{fix:#}");
    assert!(never[0].get("usage").is_none(), "{fix:#}");
    // The candidate that went over kept its work on its branch; nothing merged.
    let files = repo.tree_files(over[0]["branch"].as_str().expect("branch"));
    assert_eq!(
        String::from_utf8_lossy(&files["src/file_00.txt"]),
        "FIXED\n"
    );
    let merged = report["integration_branch"].as_str().expect("branch");
    assert!(
        !repo.branches().iter().any(|b| b == merged),
        "{:?}",
        repo.branches()
    );
}
every_way!(task_budget_candidates, task_budget_counts_every_candidate);

/// The review that chose is the task's judge: when it takes the task over its budget (the
/// candidates spent 6000 of 6001 tokens), the task ends `budget_exceeded`, nothing merged.
#[test]
fn a_review_over_the_task_budget_merges_nothing() {
    let repo = TestRepo::with_files(1);
    let reviewer = AnthropicServer::start(|_| A::Text("CHOOSE 2: it documents the fix".into()));
    let mut t = priced(tasks(&with_usage(&quality_script(None, 0)), "review"));
    t["verifier"] = claude_verifier();
    t["budget"] = json!({"task": {"tokens": 6001}});
    let file = repo.write_tasks(&t);
    let (out, report) = with_env("ANTHROPIC_BASE_URL", leak(reviewer.base_url()), || {
        with_env("ANTHROPIC_API_KEY", "sk-ant-test-judge-0123456789", || {
            repo.run(&file, &["--no-readback", "--jobs", "3"])
        })
    });
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let t = task(&report, "fix");
    assert_eq!(t["status"], "budget_exceeded", "{t:#}");
    assert!(
        t["error"]
            .as_str()
            .is_some_and(|e| e.contains("after the review that chose among its candidates")),
        "{t:#}"
    );
    let review = total_tokens(&t["select_usage"]);
    assert!(review > 0, "{t:#}");
    assert_eq!(total_tokens(&t["usage"]), 6000 + review, "{t:#}");
    assert!(t.get("candidate").is_none(), "{t:#}");
    let merged = report["integration_branch"].as_str().expect("branch");
    assert!(
        !repo.branches().iter().any(|b| b == merged),
        "{:?}",
        repo.branches()
    );
}
