//! After a run: `fanout merge` into the user's branch, `fanout clean` that loses nothing,
//! readable task commits, workspace setup and included ignored files.

use serde_json::{json, Value};

use crate::support::*;

fn exec_agent(script: &str) -> Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// One task that rewrites the first line of `src/file_01.txt`, run to the end.
fn run_one_edit(repo: &TestRepo) -> Value {
    let file = repo.write_tasks(&json!({
        "agents": {"ed": exec_agent("sed -i '1s/.*/edited by the agent/' src/file_01.txt")},
        "tasks": [{"id": "edit", "prompt": "Edit the first line\nmore words", "agent": "ed"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    report
}

#[test]
fn merge_fast_forwards_the_checked_out_branch_and_updates_the_checkout() {
    let repo = TestRepo::with_files(2);
    let report = run_one_edit(&repo);
    let merged = git_text(
        &repo.path,
        &["rev-parse", report["integration_branch"].as_str().unwrap()],
    );
    let out = repo.fanout(&["merge", "last"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("fast-forwarded"), "{}", show(&out));
    assert_eq!(repo.head(), merged);
    // The working tree and the index follow the branch.
    let text = std::fs::read_to_string(repo.path.join("src/file_01.txt")).unwrap();
    assert!(text.starts_with("edited by the agent\n"), "{text}");
    assert_eq!(git_text(&repo.path, &["status", "--porcelain"]), "");
    // Again: nothing to do.
    let out = repo.fanout(&["merge", "last"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("already contains"), "{}", show(&out));
}

#[test]
fn merge_refuses_uncommitted_changes_and_touches_nothing() {
    let repo = TestRepo::with_files(2);
    run_one_edit(&repo);
    std::fs::write(repo.path.join("src/file_00.txt"), "mine, not committed\n").unwrap();
    let before = repo.snapshot();
    let out = repo.fanout(&["merge", "last"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("uncommitted changes") && err.contains("src/file_00.txt"),
        "{err}"
    );
    assert_eq!(repo.snapshot(), before);
}

#[test]
fn merge_makes_a_clean_merge_and_refuses_a_conflicting_one() {
    let repo = TestRepo::with_files(3);
    let report = run_one_edit(&repo);
    let run = report["run_id"].as_str().unwrap().to_string();
    // A side branch that changed another file: a clean merge commit.
    git(&repo.path, &["branch", "side"]);
    git(&repo.path, &["checkout", "--quiet", "side"]);
    std::fs::write(repo.path.join("src/file_02.txt"), "side change\n").unwrap();
    git(&repo.path, &["commit", "--quiet", "-am", "side"]);
    git(&repo.path, &["checkout", "--quiet", "main"]);
    let out = repo.fanout(&["merge", &run, "--into", "side"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("merged"), "{}", show(&out));
    let files = repo.tree_files("side");
    assert_eq!(files["src/file_02.txt"], b"side change\n");
    assert!(files["src/file_01.txt"].starts_with(b"edited by the agent\n"));
    assert_eq!(
        git_text(&repo.path, &["rev-list", "--parents", "-n1", "side"])
            .split(' ')
            .count(),
        3,
        "a merge commit"
    );
    // The checked-out main changed the same line: refused, nothing moves.
    std::fs::write(repo.path.join("src/file_01.txt"), "user's own first line\n").unwrap();
    git(&repo.path, &["commit", "--quiet", "-am", "mine"]);
    let before = repo.snapshot();
    let out = repo.fanout(&["merge", &run]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("conflicts in src/file_01.txt"),
        "{}",
        show(&out)
    );
    assert_eq!(repo.snapshot(), before);
}

/// A run with a merged task and a task that failed its gate (its branch holds the only copy).
fn run_merged_and_failed(repo: &TestRepo) -> String {
    let file = repo.write_tasks(&json!({
        "agents": {"w": exec_agent("echo \"$FANOUT_TASK_ID\" > \"out-$FANOUT_TASK_ID.txt\"")},
        "defaults": {"agent": "w"},
        "tasks": [{"id": "good", "prompt": "write"},
                  {"id": "bad", "prompt": "write", "verify": "exit 1", "max_attempts": 1}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(task(&report, "bad")["status"], "verify_failed");
    report["run_id"].as_str().unwrap().to_string()
}

#[test]
fn clean_keeps_unmerged_work_until_forced() {
    let repo = TestRepo::with_files(1);
    let run = run_merged_and_failed(&repo);
    let run_dir = repo.path.join(".git/fanout/runs").join(&run);
    let (merged, bad, good) = (
        format!("fanout/{run}/merged"),
        format!("fanout/{run}/task/bad"),
        format!("fanout/{run}/task/good"),
    );
    // Dry run: lists, deletes nothing.
    let out = repo.fanout(&["clean", "last", "--branches", "--force", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!("would delete branch {bad}")),
        "{}",
        show(&out)
    );
    assert!(repo.branches().contains(&bad) && run_dir.is_dir());
    // Not merged anywhere: the integration branch and the failed task's branch stay.
    let out = repo.fanout(&["clean", "last", "--branches"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!("keeping {bad}")),
        "{}",
        show(&out)
    );
    let branches = repo.branches();
    assert!(
        branches.contains(&merged) && branches.contains(&bad),
        "{branches:?}"
    );
    assert!(
        !branches.contains(&good),
        "its change is in {merged}: {branches:?}"
    );
    assert!(
        run_dir.is_dir(),
        "the run folder stays with the kept branches"
    );
    // Once merged into main, the integration branch may go; the failed task stays.
    let out = repo.fanout(&["merge", &run]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = repo.fanout(&["clean", &run, "--branches"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let branches = repo.branches();
    assert!(
        !branches.contains(&merged) && branches.contains(&bad),
        "{branches:?}"
    );
    // --force drops it, and the run folder with it.
    let out = repo.fanout(&["clean", &run, "--branches", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(repo.branches(), vec!["main".to_string()]);
    assert!(!run_dir.exists());
}

#[test]
fn clean_older_than_keeps_a_fresh_run_and_an_empty_run_has_no_integration_branch() {
    let repo = TestRepo::with_files(1);
    let run = run_merged_and_failed(&repo);
    let run_dir = repo.path.join(".git/fanout/runs").join(&run);
    let before = repo.branches();
    let out = repo.fanout(&["clean", "--branches", "--force", "--older-than", "1h"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(repo.branches(), before);
    assert!(run_dir.is_dir());
    let out = repo.fanout(&["clean", "--older-than", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    // A run that changed nothing leaves no branch.
    let file = repo.write_tasks(&json!({
        "agents": {"noop": exec_agent("true")},
        "tasks": [{"id": "noop", "prompt": "nothing", "agent": "noop"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let empty = report["run_id"].as_str().unwrap();
    assert!(
        !repo
            .branches()
            .iter()
            .any(|b| b.starts_with(&format!("fanout/{empty}/"))),
        "{:?}",
        repo.branches()
    );
    let out = repo.fanout(&["merge", empty]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("no integration branch"),
        "{}",
        show(&out)
    );
}

#[test]
fn task_commits_carry_the_author_the_first_prompt_line_and_trailers() {
    let repo = TestRepo::with_files(1);
    let tasks = |author: Option<&str>| {
        let mut v = json!({
            "agents": {"w": exec_agent("echo hi > hi.txt")},
            "tasks": [{"id": "greet", "prompt": "\nSay hi in hi.txt\nsecond line", "agent": "w"}]
        });
        if let Some(a) = author {
            v["commit"] = json!({"author": a});
        }
        repo.write_tasks(&v)
    };
    let show_commit = |report: &Value| {
        let branch = task(report, "greet")["branch"]
            .as_str()
            .unwrap()
            .to_string();
        git_text(
            &repo.path,
            &["log", "-1", "--format=%an <%ae>|%cn|%B", &branch],
        )
    };
    // No identity in the repository: the task file's author.
    let (out, report) = repo.run(
        &tasks(Some("Nightly Bot <bot@example.com>")),
        &["--no-readback"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = report["run_id"].as_str().unwrap();
    let text = show_commit(&report);
    assert!(
        text.starts_with("Nightly Bot <bot@example.com>|fanout|greet: Say hi in hi.txt\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Fanout-Run: {run}\nFanout-Task: greet")),
        "{text}"
    );
    // Neither: fanout.
    let (_, report) = repo.run(&tasks(None), &["--no-readback"]);
    assert!(show_commit(&report).starts_with("fanout <fanout@localhost>|fanout|"));
    // The repository's identity comes first.
    git(&repo.path, &["config", "user.name", "Ada Dev"]);
    git(&repo.path, &["config", "user.email", "ada@example.com"]);
    let (_, report) = repo.run(
        &tasks(Some("Nightly Bot <bot@example.com>")),
        &["--no-readback"],
    );
    assert!(
        show_commit(&report).starts_with("Ada Dev <ada@example.com>|fanout|"),
        "{}",
        show_commit(&report)
    );
    // A malformed author is a task-file error.
    let out = repo.fanout(&[
        "validate",
        "--tasks",
        tasks(Some("no email")).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stdout(&out).contains("$.commit.author") || stderr(&out).contains("$.commit.author"),
        "{}",
        show(&out)
    );
}

#[test]
fn setup_prepares_the_workspace_and_a_failing_setup_fails_its_task() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        // Per workspace (`once: false`): it writes the task's own id.
        "defaults": {"setup": {"run": "mkdir -p build && echo \"prepared for $FANOUT_TASK_ID\" > build/config.txt", "once": false}},
        "agents": {"w": exec_agent("cp build/config.txt used.txt")},
        "tasks": [
            {"id": "uses-setup", "prompt": "use it", "agent": "w"},
            {"id": "broken", "prompt": "never runs", "agent": "w",
             "setup": ["sh", "-c", "echo 'npm ERR! missing lockfile' >&2; exit 3"],
             "setup_timeout_secs": 30}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let t = task(&report, "uses-setup");
    assert_eq!(t["status"], "merged", "{t}");
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert_eq!(merged["used.txt"], b"prepared for uses-setup\n");
    assert!(
        !merged.contains_key("build/config.txt"),
        "ignored setup output is not committed"
    );
    let t = task(&report, "broken");
    assert_eq!(t["status"], "failed", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("setup")
            && error.contains("exit")
            && error.contains("3")
            && error.contains("npm ERR! missing lockfile"),
        "{error}"
    );
    let log = repo
        .path
        .join(".git/fanout/runs")
        .join(report["run_id"].as_str().unwrap())
        .join("logs/broken.setup.log");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("missing lockfile"));
}

#[test]
fn include_copies_ignored_files_never_through_symlinks_and_warns_of_uncommitted_changes() {
    let repo = TestRepo::with_files(1);
    std::fs::write(
        repo.path.join(".gitignore"),
        "*.log\nbuild/\n.env\n.env.outside\n.env.inside\nlocal/\n",
    )
    .unwrap();
    std::fs::write(repo.path.join(".worktreeinclude"), "# more\nlocal/\n").unwrap();
    git(&repo.path, &["add", "-A"]);
    git(
        &repo.path,
        &["commit", "--quiet", "-m", "ignore local files"],
    );
    std::fs::write(repo.path.join(".env"), "API_URL=http://localhost\n").unwrap();
    std::fs::create_dir_all(repo.path.join("local")).unwrap();
    std::fs::write(repo.path.join("local/settings.toml"), "debug = true\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", repo.path.join(".env.outside")).unwrap();
    std::os::unix::fs::symlink(".env", repo.path.join(".env.inside")).unwrap();
    // Untracked and not ignored: matched, but never copied (it would be committed).
    std::fs::write(repo.path.join("notes.env.txt"), "mine\n").unwrap();
    let file = repo.write_tasks(&json!({
        "include": [".env*", "notes.env.txt"],
        "agents": {"w": exec_agent(
            "{ cat .env local/settings.toml; readlink .env.inside; \
               test -e .env.outside || test -L .env.outside || echo no-outside; \
               test -e notes.env.txt || echo no-notes; true; } > seen.txt")},
        "tasks": [{"id": "reads-env", "prompt": "read", "agent": "w"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert_eq!(
        String::from_utf8_lossy(&merged["seen.txt"]),
        "API_URL=http://localhost\ndebug = true\n.env\nno-outside\nno-notes\n"
    );
    // Only what the agent wrote is committed; the copies are ignored.
    assert!(!merged.contains_key(".env") && !merged.contains_key("local/settings.toml"));
    let all = show(&out);
    assert!(
        all.contains(".env.outside is a symlink leading outside"),
        "{all}"
    );
    assert!(all.contains("notes.env.txt is not ignored"), "{all}");
    assert!(
        all.contains("uncommitted changes the run does not include"),
        "{all}"
    );
}

#[test]
fn doctor_checks_the_exec_agents_of_a_task_file() {
    use std::os::unix::fs::PermissionsExt;
    let repo = TestRepo::with_files(1);
    std::fs::create_dir_all(repo.path.join("tools")).unwrap();
    std::fs::write(repo.path.join("tools/good.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        repo.path.join("tools/good.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(repo.path.join("tools/plain.sh"), "#!/bin/sh\n").unwrap();
    let file = repo.write_tasks(&json!({
        "agents": {
            "good": {"protocol": "exec", "command": "./tools/good.sh"},
            "plain": {"protocol": "exec", "command": "./tools/plain.sh"},
            "missing": {"protocol": "exec", "command": "no-such-codemod-anywhere"}
        },
        "tasks": [{"id": "t", "prompt": "x", "agent": "good"}]
    }));
    let out = repo.fanout(&["doctor", "--tasks", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text.contains("ok    agent good: exec agent"), "{text}");
    assert!(
        text.contains("error agent plain:") && text.contains("not executable"),
        "{text}"
    );
    assert!(
        text.contains("error agent missing: exec agent: no `no-such-codemod-anywhere` on PATH"),
        "{text}"
    );
}
