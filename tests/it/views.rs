//! Looking at a finished run: `fanout diff` (`--stat`, `--word-diff`, colour), `fanout log`,
//! and `last` for the newest run.

use serde_json::{json, Value};

use crate::support::*;

/// A run with an exec agent: `edit` changes one word of a line and adds a file, `quiet`
/// changes nothing. Returns the run id.
fn exec_run(repo: &TestRepo) -> String {
    let file = repo.write_tasks(&json!({
        "agents": {
            "edit": {"protocol": "exec", "command": "sh", "args": ["-c",
                "sed -i 's/file 0 line 5/file 0 line FIVE/' src/file_00.txt && printf 'new\\n' > src/added.txt && echo edited"]},
            "idle": {"protocol": "exec", "command": "sh", "args": ["-c", "echo nothing to do"]}
        },
        "tasks": [
            {"id": "edit", "prompt": "edit", "agent": "edit"},
            {"id": "quiet", "prompt": "nothing", "agent": "idle"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    report["run_id"].as_str().expect("run id").to_string()
}

fn fanout_env(repo: &TestRepo, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = repo.fanout_command();
    cmd.args(args)
        .arg("--repo")
        .arg(&repo.path)
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("fanout runs")
}

#[test]
fn diff_stat_word_diff_colour_and_unknown_tasks() {
    let repo = TestRepo::with_files(1);
    let run = exec_run(&repo);

    let out = repo.fanout(&["diff", "last", "edit", "--stat"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(" src/file_00.txt | "), "{text}");
    assert!(text.contains(" src/added.txt   | "), "{text}");
    assert!(
        text.ends_with(" 2 files changed, 2 insertions(+), 1 deletion(-)\n"),
        "{text}"
    );

    let out = repo.fanout(&["diff", &run, "edit", "--word-diff"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("\nfile 0 line [-5-]{+FIVE+}\n"), "{text}");
    assert!(text.contains("\n{+new+}\n"), "{text}");
    assert!(!text.contains('\x1b'), "{text}");

    // Colour: on when asked, off when not, and `auto` is off on a pipe or with NO_COLOR.
    for (args, env, coloured) in [
        (vec!["--color", "always"], vec![], true),
        (vec!["--color", "always", "--word-diff"], vec![], true),
        (vec!["--color", "always", "--stat"], vec![], true),
        (vec!["--color", "never"], vec![], false),
        (vec![], vec![], false),
        (vec![], vec![("NO_COLOR", "1")], false),
    ] {
        let mut all = vec!["diff", "last", "edit"];
        all.extend(args.iter().copied());
        let out = fanout_env(&repo, &all, &env);
        assert_eq!(out.status.code(), Some(0), "{all:?}: {}", stderr(&out));
        assert_eq!(
            stdout(&out).contains("\x1b["),
            coloured,
            "{all:?} {env:?}: {}",
            stdout(&out)
        );
    }
    let word = fanout_env(
        &repo,
        &["diff", "last", "edit", "--word-diff", "--color", "always"],
        &[],
    );
    assert!(
        stdout(&word).contains("file 0 line \x1b[31m5\x1b[0m\x1b[32mFIVE\x1b[0m"),
        "{}",
        stdout(&word)
    );

    // An unknown task is named as such, with the run's tasks; a quiet one says it changed nothing.
    let out = repo.fanout(&["diff", &run, "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "run {run} has no task nope; its tasks: edit, quiet"
        )),
        "{}",
        stderr(&out)
    );
    let out = repo.fanout(&["diff", &run, "quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("changed nothing"), "{}", stderr(&out));
    let out = repo.fanout(&["diff", "20000101-000000-0000", "edit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no run 20000101-000000-0000"));
}

/// `auto` colours a terminal unless NO_COLOR is set (needs util-linux `script` for a pty).
#[test]
fn diff_colours_a_terminal_unless_no_color() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` to give fanout a terminal");
        return;
    }
    let repo = TestRepo::with_files(1);
    exec_run(&repo);
    let line = format!(
        "{} diff last edit --repo {}",
        fanout_bin(),
        repo.path.display()
    );
    for (no_color, coloured) in [(None, true), (Some("1"), false)] {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().expect("script runs");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out).contains("\x1b[32m"),
            coloured,
            "NO_COLOR={no_color:?}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn log_of_an_exec_agent_and_last_everywhere() {
    let repo = TestRepo::with_files(1);
    let first = exec_run(&repo);
    let run = exec_run(&repo);
    assert_ne!(first, run);

    // `last` is the newer run, even when both started within the same second.
    let out = repo.fanout(&["status", "last"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("run {run}:")),
        "{}",
        stdout(&out)
    );

    let out = repo.fanout(&["log", "last", "edit"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "task_started",
        "exec_start",
        "stdout               edited",
        "exec_exit",
        "verify",
        "verified             commit ",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }
    // Every line starts with a time relative to the first event.
    assert!(
        text.lines().all(|l| l.trim_start().starts_with('+')),
        "{text}"
    );
    assert!(
        text.lines().next().unwrap_or("").contains("+0.000s"),
        "{text}"
    );

    let raw = repo.fanout(&["log", &run, "edit", "--json"]);
    assert_eq!(raw.status.code(), Some(0), "{}", stderr(&raw));
    let lines: Vec<Value> = stdout(&raw)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), text.lines().count());
    assert!(lines
        .iter()
        .all(|v| v["kind"].is_string() && v["t"].is_u64()));

    let tail = repo.fanout(&["log", "last", "edit", "--tail", "2"]);
    assert_eq!(stdout(&tail).lines().count(), 2, "{}", stdout(&tail));
    assert!(stdout(&tail).contains("verified"), "{}", stdout(&tail));

    let out = repo.fanout(&["log", "last", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no task nope; its tasks: edit, quiet"),
        "{}",
        stderr(&out)
    );
    let out = repo.fanout(&["diff", "last", "edit", "--stat"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn log_of_the_fake_mcp_agent_with_long_messages_cut() {
    let repo = TestRepo::with_files(1);
    let long = "word ".repeat(200);
    let file = repo.write_tasks(&json!({
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "tasks": [{"id": "m", "agent": "fake",
                   "prompt": format!("write notes.txt <<<hello\nrun echo ran-it\nsay {long}")}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(statuses(&report)["m"], "merged");

    let out = repo.fanout(&["log", "last", "m"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "initialized          fake-agent",
        "tool_call            codex (turn ",
        "patch_apply_begin",
        "exec_command_begin",
        "ran-it",
        "exec_command_end     exit 0",
        "agent_message        word word",
        "chars cut; --max-chars 0 shows all)",
        "task_complete",
        "verified",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }
    assert!(text.lines().all(|l| l.chars().count() < 400), "{text}");
    let full = repo.fanout(&["log", "last", "m", "--max-chars", "0"]);
    assert!(stdout(&full).contains(long.trim_end()), "{}", stdout(&full));
}

#[test]
fn views_end_quietly_on_a_closed_pipe_and_fail_on_a_full_disk() {
    let repo = TestRepo::with_files(1);
    exec_run(&repo);
    let repo_arg = repo.path.to_str().expect("utf-8").to_string();
    for args in [
        vec!["diff", "last", "edit", "--stat"],
        vec!["diff", "last", "edit", "--word-diff"],
        vec!["log", "last", "edit"],
        vec!["log", "last", "edit", "--json"],
        vec!["schema", "tasks"],
    ] {
        let mut all = args.clone();
        all.extend(["--repo", &repo_arg]);
        if args[0] == "schema" {
            all.truncate(2);
        }
        // The reader is gone before fanout starts: closing it after the spawn would race
        // with a fast command that fills the pipe's buffer first.
        let (reader, writer) = nix::unistd::pipe().expect("pipe");
        drop(reader);
        let out = repo
            .fanout_command()
            .args(&all)
            .stdout(std::process::Stdio::from(writer))
            .output()
            .expect("fanout runs");
        assert_eq!(out.status.code(), Some(141), "{all:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{all:?}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = repo
            .fanout_command()
            .args(&all)
            .stdout(full)
            .output()
            .expect("fanout runs");
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot write to standard output"),
            "{all:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{all:?}");
    }
}
