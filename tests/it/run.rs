//! `fanout run` end to end through the fake MCP agent and the exec protocol.

use serde_json::json;

use crate::support::*;

#[test]
fn twenty_tasks_merge_and_leave_the_checkout_untouched_in_an_overlay() {
    in_workspace(
        "overlay",
        twenty_tasks_merge_and_leave_the_checkout_untouched,
    );
}

#[test]
fn twenty_tasks_merge_and_leave_the_checkout_untouched_in_worktrees() {
    in_workspace(
        "worktree",
        twenty_tasks_merge_and_leave_the_checkout_untouched,
    );
}

fn twenty_tasks_merge_and_leave_the_checkout_untouched() {
    let repo = TestRepo::with_files(50);
    // Uncommitted work of the user: a modified tracked file, a staged change, an untracked file.
    std::fs::write(
        repo.path.join("src/file_49.txt"),
        "user edit, not committed\n",
    )
    .unwrap();
    std::fs::write(repo.path.join("staged.txt"), "staged\n").unwrap();
    git(&repo.path, &["add", "staged.txt"]);
    std::fs::write(repo.path.join("untracked.txt"), "mine\n").unwrap();
    let before = repo.snapshot();
    let base = repo.head();

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            json!({
                "id": format!("edit-{i:02}"),
                "prompt": format!("replace src/file_{i:02}.txt \"file {i} line 5\" \"FILE {i} LINE FIVE\""),
                "paths": [format!("src/file_{i:02}.txt")]
            })
        })
        .collect();
    let file = repo.write_tasks(&json!({
        "version": 1,
        "defaults": {"agent": "fake"},
        "agents": {"fake": fake_mcp_profile(&["mcp-server"])},
        "tasks": tasks
    }));
    let (out, report) = repo.run(&file, &["--jobs", "4", "--no-readback"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        stderr(&out),
        stdout(&out)
    );
    let st = statuses(&report);
    assert_eq!(st.len(), 20);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    assert_eq!(report["base"], base.as_str());

    // The integration tree is the base plus exactly the 20 edits.
    let branch = report["integration_branch"].as_str().unwrap().to_string();
    assert!(branch.starts_with("fanout/") && branch.ends_with("/merged"));
    let mut expected = repo.tree_files(&base);
    for i in 0..20 {
        let key = format!("src/file_{i:02}.txt");
        let text = String::from_utf8(expected[&key].clone()).unwrap();
        expected.insert(
            key,
            text.replace(
                &format!("file {i} line 5\n"),
                &format!("FILE {i} LINE FIVE\n"),
            )
            .into_bytes(),
        );
    }
    assert_eq!(repo.tree_files(&branch), expected);
    assert_eq!(
        git_text(&repo.path, &["rev-parse", &branch]),
        report["integration_commit"].as_str().unwrap()
    );

    // Each task: its branch, one file, +1 -1, a patch.
    let t = task(&report, "edit-07");
    assert_eq!(t["files"], json!(["src/file_07.txt"]));
    assert_eq!(
        (t["insertions"].as_u64(), t["deletions"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(t["error"].is_null());
    assert!(t["duration_ms"].as_u64().is_some());
    let patch = std::fs::read_to_string(t["patch"].as_str().unwrap()).unwrap();
    assert!(patch.contains("+FILE 7 LINE FIVE"), "{patch}");
    assert!(repo
        .branches()
        .contains(&t["branch"].as_str().unwrap().to_string()));

    // The user's checkout is byte-identical; no worktree, no process left.
    repo.assert_left_as(&before);
    // The table names every task.
    let table = stdout(&out);
    assert!(
        table.contains("edit-19") && table.contains("merged"),
        "{table}"
    );
}

#[test]
fn same_lines_edited_twice_conflict_in_task_order() {
    let repo = TestRepo::with_files(3);
    let file = repo.write_tasks(&json!({
        "agents": {"fake": fake_mcp_profile(&[])},
        "defaults": {"agent": "fake"},
        "tasks": [
            {"id": "first", "prompt": "replace src/file_01.txt \"file 1 line 3\" \"first\""},
            {"id": "second", "prompt": "sleep 300\nreplace src/file_01.txt \"file 1 line 3\" \"second\""},
            {"id": "other", "prompt": "write notes/new.md <<<hello\\n"}
        ]
    }));
    let before = repo.snapshot();
    let (out, report) = repo.run(&file, &["--jobs", "3", "--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let st = statuses(&report);
    assert_eq!(st["first"], "merged");
    assert_eq!(st["second"], "conflict");
    assert_eq!(st["other"], "merged");
    let second = task(&report, "second");
    assert_eq!(second["conflict_paths"], json!(["src/file_01.txt"]));
    assert!(second["error"]
        .as_str()
        .unwrap()
        .contains("src/file_01.txt"));
    // The conflicting task's branch is kept for the user.
    let branch = second["branch"].as_str().unwrap();
    assert!(repo.branches().contains(&branch.to_string()));
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert!(String::from_utf8_lossy(&merged["src/file_01.txt"]).contains("first\n"));
    assert_eq!(merged["notes/new.md"], b"hello\n");
    assert_eq!(repo.snapshot(), before);
}

#[test]
fn collects_every_kind_of_change_in_an_overlay() {
    in_workspace("overlay", collects_every_kind_of_change);
}

#[test]
fn collects_every_kind_of_change_in_worktrees() {
    in_workspace("worktree", collects_every_kind_of_change);
}

fn collects_every_kind_of_change() {
    let repo = TestRepo::with_files(4);
    std::fs::write(repo.path.join("tool.sh"), "#!/bin/sh\necho hi\n").unwrap();
    git(&repo.path, &["add", "tool.sh"]);
    git(&repo.path, &["commit", "--quiet", "-m", "tool"]);
    let script = [
        "replace src/file_00.txt \"file 0 line 1\" changed",
        "delete src/file_01.txt",
        "rename src/file_02.txt src/moved.txt",
        "chmod tool.sh 755",
        "run printf '\\000\\001\\002binary' > blob.bin",
        "write build/out.txt <<<ignored",
        "write debug.log <<<ignored",
        "write new/dir/file.txt <<<added",
    ]
    .join("\n");
    let file = repo.write_tasks(&json!({
        "agents": {"fake": fake_mcp_profile(&[])},
        // tool.sh turning executable is a risky change: the task names it to keep it.
        "tasks": [{"id": "kinds", "prompt": script, "agent": "fake", "paths": ["**", "tool.sh"]}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = task(&report, "kinds");
    assert_eq!(t["risky"][0]["path"], "tool.sh", "{t}");
    let files: Vec<String> = serde_json::from_value(t["files"].clone()).unwrap();
    for f in [
        "src/file_00.txt",
        "src/file_01.txt",
        "src/file_02.txt",
        "src/moved.txt",
        "tool.sh",
        "blob.bin",
        "new/dir/file.txt",
    ] {
        assert!(files.contains(&f.to_string()), "{f} missing from {files:?}");
    }
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with(".log") || f.starts_with("build/")),
        "{files:?}"
    );
    let kinds: Vec<(String, String)> = t["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("src/moved.txt".into(), "renamed".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("src/file_01.txt".into(), "deleted".into())),
        "{kinds:?}"
    );
    let merged = report["integration_branch"].as_str().unwrap();
    let tree = repo.tree_files(merged);
    assert_eq!(tree["blob.bin"], b"\x00\x01\x02binary");
    assert!(!tree.contains_key("src/file_01.txt"));
    let mode = git_text(&repo.path, &["ls-tree", merged, "tool.sh"]);
    assert!(mode.starts_with("100755"), "{mode}");
}

#[test]
fn a_task_without_changes_ends_no_changes() {
    let repo = TestRepo::with_files(2);
    let file = repo.write_tasks(&json!([
        {"id": "nothing", "prompt": "Please look around but change nothing.", "agent": "fake"}
    ]));
    // A bare array has no agents section: pass the fake agent through a file with one.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("nothing"));
    let file = repo.write_tasks(&json!({
        "agents": {"fake": fake_mcp_profile(&[])},
        "tasks": [{"id": "nothing", "prompt": "Please look around but change nothing.", "agent": "fake"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(statuses(&report)["nothing"], "no_changes");
    assert_eq!(report["integration_commit"], report["base"]);
    // No empty task branch is left behind, and no integration branch for a run that
    // changed nothing.
    assert!(task(&report, "nothing")["branch"].is_null());
    assert_eq!(repo.branches(), vec!["main".to_string()]);
}

#[test]
fn exec_agent_codemod_runs_in_the_worktree() {
    let repo = TestRepo::with_files(3);
    let file = repo.write_tasks(&json!({
        "agents": {"sed": {"protocol": "exec", "command": "sh", "args": ["-c",
            "test \"$FANOUT_TASK_ID\" = t1 && read line && sed -i \"s/line 2/$line/\" src/file_00.txt"]}},
        "tasks": [{"id": "t1", "prompt": "from stdin\n", "agent": "sed"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tree = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert!(String::from_utf8_lossy(&tree["src/file_00.txt"]).contains("file 0 from stdin\n"));
}

#[test]
fn refuses_bare_and_empty_repositories() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("bare.git");
    git(
        tmp.path(),
        &["init", "--quiet", "--bare", bare.to_str().unwrap()],
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    git(&empty, &["init", "--quiet"]);
    let tasks = tmp.path().join("t.json");
    std::fs::write(&tasks, r#"[{"id":"a","prompt":"x"}]"#).unwrap();
    for (dir, needle) in [(&bare, "bare repository"), (&empty, "no commits")] {
        let out = std::process::Command::new(fanout_bin())
            .args([
                "run",
                "--tasks",
                tasks.to_str().unwrap(),
                "--repo",
                dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(!dir.join("fanout").exists() && !dir.join(".git/fanout").exists());
    }
}

#[test]
fn keep_worktrees_leaves_them_for_inspection_and_clean_removes_them() {
    let repo = TestRepo::with_files(2);
    let file = repo.write_tasks(&json!({
        "agents": {"fake": fake_mcp_profile(&[])},
        "tasks": [{"id": "kept", "prompt": "write kept.txt <<<kept", "agent": "fake"},
                  {"id": "same", "prompt": "nothing to do", "agent": "fake"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--keep-worktrees"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let wts = repo.worktrees();
    assert_eq!(wts.len(), 2, "{wts:?}");
    let kept = wts
        .iter()
        .find(|w| w.ends_with("/kept"))
        .expect("kept worktree");
    assert_eq!(
        std::fs::read_to_string(format!("{kept}/kept.txt")).unwrap(),
        "kept"
    );
    // A real git worktree on the task branch, its index at the task commit.
    let wt = std::path::Path::new(kept.as_str());
    assert_eq!(git_text(wt, &["status", "--porcelain"]), "");
    assert_eq!(
        git_text(wt, &["rev-parse", "--abbrev-ref", "HEAD"]),
        task(&report, "kept")["branch"].as_str().unwrap()
    );
    // Every task has a patch, empty when it changed nothing.
    let patch = task(&report, "same")["patch"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(&patch).unwrap(), b"");
    let clean = repo.fanout(&["clean", report["run_id"].as_str().unwrap()]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
    // Without --branches the results stay.
    assert!(repo.branches().iter().any(|b| b.ends_with("/merged")));
}

/// `n` tasks `t000`…, each writing its own new file `out/f_<id>.txt` through `sh -c script`.
fn own_file_tasks(repo: &TestRepo, n: usize, script: &str) -> std::path::PathBuf {
    let tasks: Vec<_> = (0..n)
        .map(|i| json!({"id": format!("t{i:03}"), "prompt": "x"}))
        .collect();
    repo.write_tasks(&json!({
        "agents": {"w": {"protocol": "exec", "command": "sh", "args": ["-c", script]}},
        "defaults": {"agent": "w"},
        "tasks": tasks
    }))
}

#[test]
fn workspaces_are_removed_as_tasks_end_so_at_most_jobs_exist() {
    let repo = TestRepo::with_files(5);
    let before = repo.snapshot();
    // Each agent writes down how many task worktrees exist while it runs (its own included).
    let file = own_file_tasks(
        &repo,
        40,
        "mkdir -p out && ls .. | wc -l | tr -d ' ' > out/f_$FANOUT_TASK_ID.txt",
    );
    // The test watches too: worktree folders and their registrations in .git/worktrees.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, git_dir) = (stop.clone(), repo.path.join(".git"));
        std::thread::spawn(move || {
            // Task workspaces only: an overlay run's shared lower checkout (`.lower`, its
            // registration `…-lower-…`) and layer folder (`.layers`) are one per run.
            let count = |dir: std::path::PathBuf| {
                std::fs::read_dir(dir)
                    .map(|d| {
                        d.flatten()
                            .filter(|e| {
                                let n = e.file_name().to_string_lossy().into_owned();
                                !n.starts_with('.') && !n.contains("-lower-")
                            })
                            .count()
                    })
                    .unwrap_or(0)
            };
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let runs = std::fs::read_dir(git_dir.join("fanout/runs"))
                    .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                    .unwrap_or_default();
                for run in runs {
                    peak = peak.max(count(run.join("worktrees")));
                }
                peak = peak.max(count(git_dir.join("worktrees")));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        })
    };
    let (out, report) = repo.run(&file, &["--jobs", "2", "--no-readback"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = watcher.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let st = statuses(&report);
    assert_eq!(st.len(), 40);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    // Two jobs: two worktrees at most (one more of slack for the sampling).
    assert!(peak <= 3, "up to {peak} worktrees at once with --jobs 2");
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    for i in 0..40 {
        let seen = String::from_utf8_lossy(&merged[&format!("out/f_t{i:03}.txt")]).into_owned();
        let seen: usize = seen.trim().parse().unwrap_or(usize::MAX);
        // As root the agent runs as another uid that cannot list fanout's workspace folder.
        if !is_root() {
            assert!((1..=3).contains(&seen), "t{i:03} saw {seen} worktrees");
        }
    }
    // Nothing left: no worktree, no registration, no scratch folder.
    let run_dir = std::path::PathBuf::from(report["run_dir"].as_str().unwrap());
    assert!(!run_dir.join("worktrees").exists());
    assert!(!run_dir.join("scratch").exists());
    let admin = std::fs::read_dir(repo.path.join(".git/worktrees"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(admin, 0);
    repo.assert_left_as(&before);
}

#[test]
fn a_thousand_tasks_at_eight_jobs_all_merge() {
    let repo = TestRepo::with_files(20);
    let file = own_file_tasks(&repo, 1000, "echo x > f_$FANOUT_TASK_ID.txt");
    let (out, report) = repo.run(&file, &["--jobs", "8", "--no-readback", "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["counts"], json!({"merged": 1000}));
    assert!(stdout(&out).contains("1000 merged"), "{}", stdout(&out));
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    assert_eq!(merged.len(), 20 + 1 + 1000);
    // One integration commit per task on top of the base.
    let count = git_text(
        &repo.path,
        &[
            "rev-list",
            "--count",
            &format!("main..{}", report["integration_branch"].as_str().unwrap()),
        ],
    );
    assert_eq!(count, "1000");
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
}
