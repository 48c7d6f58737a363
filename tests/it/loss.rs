//! Nothing lost, nothing followed: hostile and unlucky agents against fanout's collection.
//! Every test runs as the invoker (root in CI) and as an unprivileged uid, compares the user's
//! repository byte for byte before and after, and checks that the agent's work is findable
//! after every failure.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::*;
use crate::{both_ways, every_way};

/// A task file whose tasks each run their prompt as a shell script in the worktree.
fn script_tasks(tasks: &[(&str, String)]) -> Value {
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(id, script)| json!({"id": id, "prompt": script}))
        .collect();
    json!({
        "version": 1,
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]}},
        "defaults": {"agent": "sh", "timeout_secs": 60, "max_attempts": 1},
        "tasks": tasks
    })
}

fn run_tasks(
    repo: &TestRepo,
    tasks: &[(&str, String)],
    extra: &[&str],
) -> (std::process::Output, Value) {
    let file = repo.write_tasks(&script_tasks(tasks));
    let mut args = vec!["--jobs", "3", "--no-readback"];
    args.extend_from_slice(extra);
    repo.run(&file, &args)
}

fn run_id(report: &Value) -> String {
    report["run_id"].as_str().expect("run id").to_string()
}

fn merged_files(repo: &TestRepo, report: &Value) -> std::collections::BTreeMap<String, Vec<u8>> {
    repo.tree_files(&format!("fanout/{}/merged", run_id(report)))
}

/// A second repository beside the test's: a target an agent may try to point fanout at.
fn other_repo(repo: &TestRepo) -> std::path::PathBuf {
    let other = repo.tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    git(&other, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(other.join("o.txt"), "other\n").expect("write");
    git(&other, &["add", "-A"]);
    git(&other, &["commit", "--quiet", "-m", "other"]);
    other
}

fn other_state(other: &Path) -> (String, Vec<u8>, String) {
    (
        git_text(other, &["for-each-ref"]),
        std::fs::read(other.join(".git/index")).unwrap_or_default(),
        git_text(other, &["status", "--porcelain", "--ignored"]),
    )
}

/// Item 1: whatever the agent leaves at its worktree's `.git`, fanout never follows it.
fn agent_controlled_dot_git(runner: Runner) {
    let repo = TestRepo::with_files(6).run_by(runner);
    // The user has a staged change and an untracked file: both must stay exactly as they are.
    std::fs::write(repo.path.join("src/file_00.txt"), "staged by the user\n").expect("write");
    git(&repo.path, &["add", "src/file_00.txt"]);
    std::fs::write(repo.path.join("notes.txt"), "untracked\n").expect("write");
    let other = other_repo(&repo);
    let main_git = repo.path.join(".git");
    let edit =
        |n: usize| format!("echo agent{n} > agent{n}.txt; echo changed >> src/file_0{n}.txt");
    let tasks = vec![
        (
            "point-at-user",
            format!("echo \"gitdir: $(git rev-parse --git-common-dir)\" > .git; {}", edit(1)),
        ),
        (
            "point-at-other",
            format!("echo 'gitdir: {}/.git' > .git; {}", other.display(), edit(2)),
        ),
        ("deleted", format!("rm -f .git; {}", edit(3))),
        (
            "symlink",
            format!("rm -f .git; ln -s '{}' .git; {}", main_git.display(), edit(4)),
        ),
        (
            "own-repo-with-hooks",
            format!(
                "rm -f .git; git init -q . && git config core.worktree '{}' && \
                 printf '#!/bin/sh\\ntouch {}/HOOK_RAN\\n' > .git/hooks/post-commit && \
                 chmod +x .git/hooks/post-commit; printf '[core]\\n\\tworktree = {}\\n' >> .git/config; {}",
                repo.path.display(),
                repo.tmp.path().display(),
                repo.path.display(),
                edit(5)
            ),
        ),
    ];
    let before = repo.snapshot();
    let other_before = other_state(&other);
    let (out, report) = run_tasks(&repo, &tasks, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let st = statuses(&report);
    for (id, _) in &tasks {
        assert_eq!(
            st.get(*id).map(String::as_str),
            Some("merged"),
            "{id}: {report:#}"
        );
    }
    let files = merged_files(&repo, &report);
    for n in 1..=5 {
        assert_eq!(
            files[&format!("agent{n}.txt")],
            format!("agent{n}\n").as_bytes()
        );
        assert!(
            String::from_utf8_lossy(&files[&format!("src/file_0{n}.txt")]).ends_with("changed\n")
        );
    }
    assert!(
        !files.keys().any(|k| k == ".git" || k.starts_with(".git/")),
        "{:?}",
        files.keys()
    );
    repo.assert_left_as(&before);
    assert_eq!(
        other_state(&other),
        other_before,
        "the other repository changed"
    );
    assert!(
        !repo.tmp.path().join("HOOK_RAN").exists(),
        "a hook the agent planted ran"
    );
}
every_way!(
    agent_controlled_dot_git_is_never_followed,
    agent_controlled_dot_git
);

/// Item 3: what the agent made unreadable is read (never turned into a deletion or dropped).
fn unreadable_entries(runner: Runner) {
    let repo = TestRepo::with_files(6).run_by(runner);
    let tasks = vec![
        (
            "locked-dir",
            "echo new > src/new.txt; echo more >> src/file_01.txt; chmod 000 src".to_string(),
        ),
        (
            "locked-file",
            "echo more >> src/file_02.txt; chmod 000 src/file_02.txt; echo n > fresh.txt; chmod 000 fresh.txt"
                .to_string(),
        ),
        (
            "write-only-dir",
            "mkdir -p deep/er; echo d > deep/er/d.txt; chmod 300 deep/er; chmod 100 deep".to_string(),
        ),
    ];
    let before = repo.snapshot();
    let (out, report) = run_tasks(&repo, &tasks, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let files = merged_files(&repo, &report);
    assert_eq!(files["src/new.txt"], b"new\n");
    assert!(files["src/file_01.txt"].ends_with(b"more\n"));
    assert!(
        files.contains_key("src/file_00.txt"),
        "a locked folder became a deletion"
    );
    assert!(files["src/file_02.txt"].ends_with(b"more\n"));
    assert_eq!(files["fresh.txt"], b"n\n");
    assert_eq!(files["deep/er/d.txt"], b"d\n");
    let locked = task(&report, "locked-dir");
    assert_eq!(locked["deletions"], 0, "{locked:#}");
    repo.assert_left_as(&before);
}
every_way!(unreadable_entries_are_read_not_deleted, unreadable_entries);

/// Item 4: when the agent's work cannot be committed, the task fails naming the path and the
/// workspace stays; `fanout collect` commits it once the cause is gone.
fn collect_failures(runner: Runner) {
    let repo = TestRepo::with_files(4).run_by(runner);
    let tasks = vec![
        (
            "nested-repo",
            "mkdir -p vendor/dep && cd vendor/dep && git init -q . && echo lib > lib.txt; cd ../..; echo work > work.txt"
                .to_string(),
        ),
        ("fifo", "echo work > work.txt; rm src/file_01.txt; mkfifo src/file_01.txt".to_string()),
        ("new-fifo", "echo work > work.txt; mkfifo pipe".to_string()),
        ("fine", "echo fine > fine.txt".to_string()),
    ];
    let before = repo.snapshot();
    let (out, report) = run_tasks(&repo, &tasks, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let st = statuses(&report);
    assert_eq!(st["fine"], "merged");
    for (id, named) in [
        ("nested-repo", "vendor/dep"),
        ("fifo", "src/file_01.txt"),
        ("new-fifo", "pipe"),
    ] {
        let t = task(&report, id);
        assert_eq!(t["status"], "failed", "{t:#}");
        let error = t["error"].as_str().unwrap_or("");
        assert!(error.contains(named), "{id}: {error}");
        let ws = t["workspace"].as_str().expect("the workspace is kept");
        assert_eq!(
            std::fs::read_to_string(Path::new(ws).join("work.txt"))
                .expect("the agent's work is there"),
            "work\n"
        );
    }
    repo.assert_left_as_except_worktrees(&before);
    // The user removes the nested repository's .git, then has fanout commit the workspace.
    let run = run_id(&report);
    // A lower checkout in memory never outlives the run; `fanout collect` makes it again.
    assert_eq!(memory_lowers_of(&run), Vec::<String>::new());
    let ws = task(&report, "nested-repo")["workspace"]
        .as_str()
        .expect("kept")
        .to_string();
    let cleanup = std::process::Command::new("rm")
        .args(["-rf", &format!("{ws}/vendor/dep/.git")])
        .status()
        .expect("rm");
    assert!(cleanup.success());
    let out = repo.fanout(&["collect", &run, "nested-repo"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let files = repo.tree_files(&format!("fanout/{run}/task/nested-repo"));
    assert_eq!(files["vendor/dep/lib.txt"], b"lib\n");
    assert_eq!(files["work.txt"], b"work\n");
    let out = repo.fanout(&["clean", &run]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    repo.assert_left_as(&before);
}
every_way!(collect_failures_keep_the_work, collect_failures);

/// Item 6: file sizes do not reach fanout's memory; limits fail the task naming the file.
fn big_files(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let tasks = vec![
        (
            "sparse-1",
            "truncate -s 2G big.img; echo w > w1.txt".to_string(),
        ),
        ("sparse-2", "mkdir d; truncate -s 3G d/huge.bin".to_string()),
        (
            "many",
            "for i in 1 2 3 4 5 6; do head -c 300000 /dev/zero > f$i.bin; done".to_string(),
        ),
        ("small", "head -c 200000 /dev/urandom > ok.bin".to_string()),
    ];
    let file = repo.write_tasks(&script_tasks(&tasks));
    let before = repo.snapshot();
    let report_path = repo.report_path();
    // Peak RSS of fanout and everything it waited for, measured by a parent that waits for it.
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c")
        .arg("import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)");
    let inner = repo.fanout_command();
    cmd.arg(inner.get_program());
    cmd.args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args([
        "run",
        "--tasks",
        file.to_str().expect("utf-8"),
        "--report",
        report_path.to_str().expect("utf-8"),
        "--repo",
        repo.path.to_str().expect("utf-8"),
        "--jobs",
        "2",
        "--no-readback",
        "--max-file-bytes",
        "1000000",
        "--max-change-bytes",
        "1000000",
    ]);
    let out = cmd.output().expect("fanout runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let peak_kib: u64 = stdout(&out)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("peak RSS");
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    for (id, named, limit) in [
        ("sparse-1", "big.img", "max_file_bytes"),
        ("sparse-2", "d/huge.bin", "max_file_bytes"),
        ("many", "f", "max_change_bytes"),
    ] {
        let t = task(&report, id);
        assert_eq!(t["status"], "failed", "{t:#}");
        let error = t["error"].as_str().unwrap_or("");
        assert!(
            error.contains(named) && error.contains(limit),
            "{id}: {error}"
        );
        assert!(t["workspace"].is_string(), "{t:#}");
    }
    assert_eq!(task(&report, "small")["status"], "merged");
    repo.assert_left_as_except_worktrees(&before);
}
both_ways!(big_files_are_streamed_and_limited, big_files);

/// Item 9: submodules stay as they are; a task that changes one fails naming it.
fn submodules(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    add_submodule(&repo);
    let tasks = vec![
        (
            "write-inside",
            "echo x > sub/inside.txt; echo w > w.txt".to_string(),
        ),
        ("remove", "rmdir sub; echo w > w.txt".to_string()),
        ("replace", "rmdir sub; echo file > sub".to_string()),
        (
            "init-inside",
            "git init -q sub; echo x > sub/a.txt".to_string(),
        ),
        ("elsewhere", "echo fine > fine.txt".to_string()),
    ];
    let before = repo.snapshot();
    let (out, report) = run_tasks(&repo, &tasks, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    for id in ["write-inside", "remove", "replace", "init-inside"] {
        let t = task(&report, id);
        assert_eq!(t["status"], "failed", "{t:#}");
        assert!(t["error"].as_str().unwrap_or("").contains("sub"), "{t:#}");
        assert!(t["workspace"].is_string(), "{t:#}");
    }
    assert_eq!(task(&report, "elsewhere")["status"], "merged");
    let tree = git_text(
        &repo.path,
        &[
            "ls-tree",
            &format!("fanout/{}/merged", run_id(&report)),
            "sub",
        ],
    );
    assert!(tree.starts_with("160000 commit"), "{tree}");
    repo.assert_left_as_except_worktrees(&before);
}
both_ways!(submodule_changes_fail_by_name, submodules);

/// Risky changes are flagged, and fail the scope gate unless the task's paths name them.
fn risky_changes(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    std::fs::write(
        repo.path.join(".gitattributes"),
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    )
    .expect("write");
    git(&repo.path, &["add", ".gitattributes"]);
    git(&repo.path, &["commit", "--quiet", "-m", "attributes"]);
    let mut file = script_tasks(&[
        (
            "workflow",
            "mkdir -p .github/workflows; echo 'on: push' > .github/workflows/x.yml".to_string(),
        ),
        (
            "executable",
            "printf '#!/bin/sh\\n' > run.sh; chmod +x run.sh".to_string(),
        ),
        ("link-out", "ln -s /etc/passwd passwd".to_string()),
        ("link-up", "ln -s ../../outside up".to_string()),
        (
            "attributes",
            "echo '*.txt text' >> .gitattributes".to_string(),
        ),
        (
            "hooks",
            "mkdir .husky; echo 'curl x' > .husky/pre-commit".to_string(),
        ),
        (
            "named",
            "mkdir -p .github/workflows; echo 'on: push' > .github/workflows/ci.yml".to_string(),
        ),
        ("lfs", "head -c 100 /dev/urandom > data.bin".to_string()),
        (
            "plain",
            "echo plain > plain.txt; ln -s src/file_00.txt inside-link".to_string(),
        ),
    ]);
    file["tasks"][6]["paths"] = json!([".github/workflows/ci.yml"]);
    let file = repo.write_tasks(&file);
    let before = repo.snapshot();
    let (out, report) = repo.run(&file, &["--jobs", "3", "--no-readback"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("filter drivers") && err.contains("lfs"),
        "{err}"
    );
    for (id, path) in [
        ("workflow", ".github/workflows/x.yml"),
        ("executable", "run.sh"),
        ("link-out", "passwd"),
        ("link-up", "up"),
        ("attributes", ".gitattributes"),
        ("hooks", ".husky/pre-commit"),
    ] {
        let t = task(&report, id);
        assert_eq!(t["status"], "verify_failed", "{id}: {t:#}");
        assert!(
            t["risky"]
                .as_array()
                .is_some_and(|r| r.iter().any(|c| c["path"] == path)),
            "{t:#}"
        );
        assert!(
            err.contains(path),
            "{path} not flagged on the terminal: {err}"
        );
    }
    let named = task(&report, "named");
    assert_eq!(named["status"], "merged", "{named:#}");
    assert!(named["risky"].as_array().is_some_and(|r| !r.is_empty()));
    let lfs = task(&report, "lfs");
    assert_eq!(lfs["status"], "failed", "{lfs:#}");
    assert!(
        lfs["error"].as_str().unwrap_or("").contains("data.bin"),
        "{lfs:#}"
    );
    assert_eq!(task(&report, "plain")["status"], "merged");
    repo.assert_left_as_except_worktrees(&before);
    // The same raw content goes in when the user says so.
    let file = repo.write_tasks(&script_tasks(&[(
        "lfs",
        "head -c 100 /dev/urandom > data.bin".to_string(),
    )]));
    let (out, report) = repo.run(&file, &["--no-readback", "--allow-unfiltered"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(task(&report, "lfs")["status"], "merged");
}
both_ways!(risky_changes_are_flagged_and_gated, risky_changes);
