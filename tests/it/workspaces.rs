//! Overlay and worktree workspaces (`--workspace`): the same agent actions give the same task
//! tree either way; overlays leave no mount, process or folder behind.

use serde_json::{json, Value};

use crate::both_ways;
use crate::support::*;

/// Every kind of change an agent makes, as one shell script.
const ACTIONS: &str = r#"set -e
echo changed >> src/file_00.txt
echo new > added.txt
rm src/file_01.txt
mv src/file_02.txt src/renamed.txt
chmod +x src/file_03.txt
ln -s src/file_00.txt link
printf '\000\001bin' > bin.dat
echo ign > debug.log
mkdir -p build && echo x > build/out.txt
rm -r nested
rm -r tree2 && mkdir tree2 && echo again > tree2/only.txt
rm src/file_04.txt && mkdir src/file_04.txt && echo d > src/file_04.txt/inner
rm -r dir2f && echo now-a-file > dir2f
printf '!keep.log\n' >> .gitignore && echo kept > keep.log
mkdir -p deep/er/est && echo deep > deep/er/est/f.txt
"#;

fn repo_with_folders(runner: Runner) -> TestRepo {
    let repo = TestRepo::with_files(6).run_by(runner);
    for (p, c) in [
        ("nested/a/b.txt", "b\n"),
        ("nested/c.txt", "c\n"),
        ("tree2/x.txt", "x\n"),
        ("tree2/sub/y.txt", "y\n"),
        ("dir2f/z.txt", "z\n"),
    ] {
        let path = repo.path.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, c).expect("write");
    }
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "folders"]);
    repo
}

fn run_actions(runner: Runner, mode: &'static str) -> (TestRepo, Value) {
    let repo = repo_with_folders(runner);
    let before = repo.snapshot();
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", ACTIONS]}},
        // The new executable is a risky change: the task names it to keep it.
        "tasks": [{"id": "all", "prompt": "x", "agent": "sh", "paths": ["**", "src/file_03.txt"]}]
    }));
    let (out, report) = in_workspace(mode, || repo.run(&file, &["--no-readback"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{mode}: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(report["workspace"]["mode"], mode, "{}", report["workspace"]);
    repo.assert_left_as(&before);
    let run_id = report["run_id"].as_str().expect("run id");
    let mounts = overlay_mounts_under(std::path::Path::new("/"));
    assert!(
        !mounts.iter().any(|m| m.contains(run_id)),
        "mounts left: {mounts:?}"
    );
    assert_eq!(memory_lowers_of(run_id), Vec::<String>::new());
    (repo, report)
}

fn same_tree_both_ways(runner: Runner) {
    let (a, ra) = run_actions(runner, "overlay");
    let (b, rb) = run_actions(runner, "worktree");
    // The lower checkout in memory (where there is room, as here) or on disk: the same tree.
    let (c, rc) = lowers_on_disk(|| run_actions(runner, "overlay"));
    let tree = |repo: &TestRepo, report: &Value| {
        let branch = task(report, "all")["branch"]
            .as_str()
            .expect("branch")
            .to_string();
        git_text(&repo.path, &["rev-parse", &format!("{branch}^{{tree}}")])
    };
    let ls = |repo: &TestRepo, report: &Value| {
        let branch = task(report, "all")["branch"]
            .as_str()
            .expect("branch")
            .to_string();
        git_text(&repo.path, &["ls-tree", "-r", &branch])
    };
    assert_eq!(
        tree(&a, &ra),
        tree(&b, &rb),
        "overlay:\n{}\nworktree:\n{}",
        ls(&a, &ra),
        ls(&b, &rb)
    );
    assert_eq!(tree(&c, &rc), tree(&b, &rb), "overlay, lower on disk");
    let files = a.tree_files(task(&ra, "all")["branch"].as_str().expect("branch"));
    assert_eq!(files["keep.log"], b"kept\n");
    assert!(!files.contains_key("debug.log") && !files.contains_key("build/out.txt"));
    assert!(!files.keys().any(|f| f.starts_with("nested/")));
    assert_eq!(
        files
            .keys()
            .filter(|f| f.starts_with("tree2/"))
            .collect::<Vec<_>>(),
        vec!["tree2/only.txt"]
    );
    assert_eq!(files["dir2f"], b"now-a-file\n");
    assert_eq!(files["src/file_04.txt/inner"], b"d\n");
}
both_ways!(the_same_actions_give_the_same_tree, same_tree_both_ways);

/// git inside the overlay view sees the task's branch and its change (the agent uid must be
/// able to read the repository's `.git`: the unprivileged pass owns it).
#[test]
fn git_works_inside_an_overlay() {
    let repo = TestRepo::with_files(3).run_by(Runner::Unprivileged);
    let script = "echo more >> src/file_00.txt; rm src/file_01.txt; \
                  { git status --porcelain; git rev-parse --abbrev-ref HEAD; git diff --stat; } > git.txt 2>&1";
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", script]}},
        "tasks": [{"id": "g", "prompt": "x", "agent": "sh"}]
    }));
    let (out, report) = in_workspace("overlay", || repo.run(&file, &["--no-readback"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    let seen = String::from_utf8_lossy(&files["git.txt"]).into_owned();
    assert!(seen.contains(" M src/file_00.txt"), "{seen}");
    assert!(seen.contains(" D src/file_01.txt"), "{seen}");
    assert!(seen.contains("?? git.txt"), "{seen}");
    assert!(
        seen.contains(task(&report, "g")["branch"].as_str().expect("b")),
        "{seen}"
    );
    assert!(seen.contains("2 files changed"), "{seen}");
}

#[test]
fn overlay_needs_the_sandbox() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "true"}},
        "tasks": [{"id": "t", "prompt": "x", "agent": "sh"}]
    }));
    let (out, _) = repo.run(&file, &["--workspace", "overlay", "--sandbox", "off"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("sandbox is off"), "{}", stderr(&out));
    let (out, report) = repo.run(&file, &["--sandbox", "off", "--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["workspace"]["mode"], "worktree");
}

/// `defaults.workspace` in the task file picks the kind; `--workspace` overrides it; a bad
/// value is a validation error naming the field.
#[test]
fn the_task_file_picks_the_workspace_and_the_flag_overrides_it() {
    let repo = TestRepo::with_files(2);
    let tasks = |workspace: &str| {
        repo.write_tasks(&json!({
            "defaults": {"workspace": workspace},
            "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "echo x >> src/file_00.txt"]}},
            "tasks": [{"id": "t", "prompt": "x", "agent": "sh"}]
        }))
    };
    // Without the suite's own FANOUT_WORKSPACE (scripts/test.sh's worktree pass), which
    // would override the task file as the flag does.
    let run = |file: &std::path::Path, extra: &[&str]| {
        let report_path = repo.report_path();
        let _ = std::fs::remove_file(&report_path);
        let out = repo
            .fanout_command()
            .env_remove("FANOUT_WORKSPACE")
            .args(["run", "--tasks", file.to_str().expect("utf-8"), "--report"])
            .arg(&report_path)
            .args(extra)
            .arg("--repo")
            .arg(&repo.path)
            .output()
            .expect("fanout runs");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report_path).unwrap_or_default())
                .unwrap_or_default();
        (out, report)
    };
    let file = tasks("worktree");
    let (out, report) = run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["workspace"]["mode"], "worktree");
    assert!(
        report["workspace"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("defaults.workspace")),
        "{}",
        report["workspace"]
    );
    let (out, report) = run(&file, &["--no-readback", "--workspace", "overlay"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["workspace"]["mode"], "overlay");
    let file = tasks("overlay");
    let (out, report) = run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["workspace"]["mode"], "overlay");
    let file = tasks("sparse");
    let out = repo.fanout(&["validate", "--tasks", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("$.defaults.workspace"), "{said}");
}
