//! The task file's `merge` rules (union merge of list files), `group`, placeholders and
//! `contains` of templates, commit authors and subjects, kept workspaces.

use serde_json::{json, Value};

use crate::support::*;
use crate::{both_ways, every_way};

fn exec_agent(script: &str) -> Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// A repository with `allowlist.txt` (host1 … host8) and `main.txt` committed.
fn list_repo(runner: Runner) -> TestRepo {
    let repo = TestRepo::with_files(1);
    let list: String = (1..=8).map(|i| format!("host{i}\n")).collect();
    std::fs::write(repo.path.join("allowlist.txt"), list).expect("write");
    std::fs::write(repo.path.join("main.txt"), "one\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "lists"]);
    repo.run_by(runner)
}

fn text_at(repo: &TestRepo, rev: &str, path: &str) -> String {
    String::from_utf8_lossy(&repo.tree_files(rev)[path]).into_owned()
}

/// Six tasks each remove a neighbouring line of one allowlist: with a union rule they all
/// merge in the first round, without retries.
fn union_takes_neighbouring_removals(runner: Runner) {
    let repo = list_repo(runner);
    let tasks: Vec<Value> = (2..=7)
        .map(|i| json!({"id": format!("host{i}"), "prompt": format!("remove host{i}")}))
        .collect();
    let file = repo.write_tasks(&json!({
        "merge": [{"paths": ["allowlist.txt"], "strategy": "union"}],
        "agents": {"w": exec_agent("sed -i \"/^$FANOUT_TASK_ID\\$/d\" allowlist.txt")},
        "defaults": {"agent": "w", "on_conflict": "fail"},
        "tasks": tasks
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let branch = report["integration_branch"].as_str().expect("branch");
    assert_eq!(text_at(&repo, branch, "allowlist.txt"), "host1\nhost8\n");
    // One round: no task ran twice.
    for t in report["tasks"].as_array().expect("tasks") {
        assert!(
            t["conflict_paths"].as_array().is_none_or(|p| p.is_empty()),
            "{t}"
        );
    }
}
every_way!(
    union_merges_neighbouring_removals_in_one_round,
    union_takes_neighbouring_removals
);

/// A real conflict in a file no rule names still conflicts, while the union file merges.
fn other_files_still_conflict(runner: Runner) {
    let repo = list_repo(runner);
    let file = repo.write_tasks(&json!({
        "merge": [{"paths": ["allow*.txt"], "strategy": "union"}, {"paths": ["main.txt"], "strategy": "theirs"}],
        "agents": {"w": exec_agent(
            "echo \"$FANOUT_TASK_ID\" >> allowlist.txt; echo \"$FANOUT_TASK_ID\" > src/file_00.txt")},
        "defaults": {"agent": "w"},
        "tasks": [{"id": "a", "prompt": "a"}, {"id": "b", "prompt": "b"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "conflict", "{st:?}");
    assert_eq!(
        task(&report, "b")["conflict_paths"],
        json!(["src/file_00.txt"]),
        "only the file no rule names"
    );
    let branch = report["integration_branch"].as_str().expect("branch");
    assert!(text_at(&repo, branch, "allowlist.txt").ends_with("host8\na\n"));
}
every_way!(
    a_file_no_rule_names_still_conflicts,
    other_files_still_conflict
);

/// Both tasks append to the list: the union keeps both lines, ours then theirs.
fn union_keeps_both_additions(runner: Runner) {
    let repo = list_repo(runner);
    let file = repo.write_tasks(&json!({
        "merge": [{"paths": ["allowlist.txt"], "strategy": "union"}],
        "agents": {"w": exec_agent("echo \"new-$FANOUT_TASK_ID\" >> allowlist.txt")},
        "defaults": {"agent": "w"},
        "tasks": [{"id": "a", "prompt": "a"}, {"id": "b", "prompt": "b"}, {"id": "c", "prompt": "c"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let branch = report["integration_branch"].as_str().expect("branch");
    let list = text_at(&repo, branch, "allowlist.txt");
    assert!(list.ends_with("host8\nnew-a\nnew-b\nnew-c\n"), "{list}");
}
every_way!(
    union_keeps_every_addition_in_task_order,
    union_keeps_both_additions
);

#[test]
fn merge_rules_are_validated_with_their_path() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "merge": [{"paths": ["a["], "strategy": "union"}, {"paths": ["x"], "strategy": "both"}, {"strategy": "ours"}],
        "tasks": [{"id": "t", "prompt": "p"}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = stderr(&out);
    assert!(text.contains("$.merge[0].paths[0]"), "{text}");
    assert!(text.contains("$.merge[1].strategy"), "{text}");
    assert!(
        text.contains("$.merge[2]: missing field \"paths\""),
        "{text}"
    );
}

/// `for_each.contains` gives a task only to the files whose content matches; a binary file
/// never matches.
fn contains_selects_by_content(runner: Runner) {
    let repo = TestRepo::with_files(4);
    std::fs::write(repo.path.join("src/file_01.txt"), "uses legacyApi here\n").expect("write");
    std::fs::write(repo.path.join("src/file_03.txt"), "call legacyApi()\n").expect("write");
    std::fs::write(repo.path.join("src/blob.txt"), b"legacyApi\0\x01binary").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "legacy"]);
    let repo = repo.run_by(runner);
    let file = repo.write_tasks(&json!({
        "agents": {"w": exec_agent("sed -i 's/legacyApi/newApi/' \"${FANOUT_PROMPT#port }\"")},
        "tasks": [{"id": "port-{stem}", "prompt": "port {path}", "agent": "w", "paths": ["{path}"],
                   "for_each": {"files": "src/*.txt", "contains": "legacy[A-Z]pi"}}]
    }));
    let out = repo.fanout(&["validate", "--expand", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    let st = statuses(&report);
    let ids: Vec<&str> = st.keys().map(String::as_str).collect();
    assert_eq!(ids, ["port-file_01", "port-file_03"], "{}", show(&out));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let branch = report["integration_branch"].as_str().expect("branch");
    assert_eq!(text_at(&repo, branch, "src/file_03.txt"), "call newApi()\n");
    // No file matches: an error naming the template, before anything runs.
    let file = repo.write_tasks(&json!({
        "tasks": [{"id": "x-{stem}", "prompt": "p", "for_each": {"files": "src/*.txt", "contains": "nowhere"}}]
    }));
    let out = repo.fanout(&["validate", "--expand", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("$.tasks[0].for_each: no tracked file matching"),
        "{}",
        show(&out)
    );
}
every_way!(
    for_each_contains_selects_files_by_content,
    contains_selects_by_content
);

/// The task file's `commit.author` wins over a global identity (root's `~/.gitconfig` as
/// root); the repository's own identity still comes first; without the task file's author the
/// global identity is used.
fn author_over_global_identity(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let global = repo.tmp.path().join("global.gitconfig");
    std::fs::write(
        &global,
        "[user]\n\tname = Root Global\n\temail = root@machine\n",
    )
    .expect("write");
    let global: &'static str = Box::leak(global.display().to_string().into_boxed_str());
    let tasks = |author: Option<&str>| {
        let mut v = json!({
            "agents": {"w": exec_agent("echo hi > hi.txt")},
            "tasks": [{"id": "greet", "prompt": "Say hi", "agent": "w"}]
        });
        if let Some(a) = author {
            v["commit"] = json!({"author": a});
        }
        repo.write_tasks(&v)
    };
    let author_of = |file: &std::path::Path| {
        let (out, report) = with_env("GIT_CONFIG_GLOBAL", global, || {
            repo.run(file, &["--no-readback"])
        });
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let branch = task(&report, "greet")["branch"]
            .as_str()
            .unwrap()
            .to_string();
        git_text(&repo.path, &["log", "-1", "--format=%an <%ae>", &branch])
    };
    let bot = tasks(Some("Nightly Bot <bot@example.com>"));
    assert_eq!(author_of(&bot), "Nightly Bot <bot@example.com>");
    assert_eq!(author_of(&tasks(None)), "Root Global <root@machine>");
    git(&repo.path, &["config", "user.name", "Ada Dev"]);
    git(&repo.path, &["config", "user.email", "ada@example.com"]);
    assert_eq!(author_of(&bot), "Ada Dev <ada@example.com>");
}
both_ways!(
    commit_author_wins_over_a_global_identity,
    author_over_global_identity
);

/// Commit subjects stay within 72 characters, cut on a word boundary, with the full prompt
/// in the body; the integration commit too.
#[test]
fn commit_subjects_are_short_and_the_body_holds_the_prompt() {
    let repo = TestRepo::with_files(1);
    let prompt = "Rename every use of the deprecated rate keyword to throughput across the pricing module and its tests, keeping behaviour\nSecond line of detail.";
    let file = repo.write_tasks(&json!({
        "agents": {"w": exec_agent("echo hi > hi.txt")},
        "tasks": [{"id": "rename-rate", "prompt": prompt, "agent": "w"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let branch = task(&report, "rename-rate")["branch"]
        .as_str()
        .unwrap()
        .to_string();
    let merged = report["integration_branch"].as_str().unwrap().to_string();
    for (rev, prefix) in [
        (branch.as_str(), "rename-rate: Rename every use"),
        (
            merged.as_str(),
            "fanout: merge rename-rate \u{2014} Rename every",
        ),
    ] {
        let subject = git_text(&repo.path, &["log", "-1", "--format=%s", rev]);
        assert!(subject.chars().count() <= 72, "{subject}");
        assert!(subject.starts_with(prefix), "{subject}");
        assert!(subject.ends_with('\u{2026}'), "{subject}");
        let cut = subject.trim_end_matches('\u{2026}');
        let words = cut.split_once(" \u{2014} ").map_or(cut, |(_, w)| w);
        let words = words.strip_prefix("rename-rate: ").unwrap_or(words);
        assert!(
            prompt.starts_with(&format!("{words} ")),
            "cut on a word: {subject}"
        );
        let body = git_text(&repo.path, &["log", "-1", "--format=%b", rev]);
        assert!(body.contains(prompt), "{body}");
        assert!(body.contains("Fanout-Task: rename-rate"), "{body}");
    }
}

/// Workspaces (kept ones too) live below `/var/tmp`, which survives a reboot where `/tmp` may
/// be a tmpfs (`$TMPDIR` when set), never below the repository's `.git`, for every user.
fn kept_workspace_location(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&json!({
        "agents": {"w": exec_agent("echo kept > kept.txt")},
        "tasks": [{"id": "keep", "prompt": "write kept.txt", "agent": "w"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--keep-worktrees"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run_id = report["run_id"].as_str().expect("run id");
    let run = repo.path.join(".git/fanout/runs").join(run_id);
    let worktrees = std::fs::canonicalize(run.join("worktrees")).expect("worktrees");
    let expected = std::env::var_os("TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp".into());
    let expected = std::fs::canonicalize(&expected).expect("expected folder");
    assert!(!worktrees.starts_with(repo.path.join(".git")));
    assert!(
        worktrees.starts_with(&expected),
        "{} not under {}",
        worktrees.display(),
        expected.display()
    );
    let kept = if worktrees.join(".layers").is_dir() {
        worktrees.join(".layers/keep/upper/kept.txt")
    } else {
        worktrees.join("keep/kept.txt")
    };
    assert!(kept.is_file(), "{}", kept.display());
    let out = repo.fanout(&["clean", run_id, "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!worktrees.exists(), "{} left", worktrees.display());
}
every_way!(kept_workspaces_survive_a_reboot, kept_workspace_location);

/// A rename across three files, one task each, in one group, plus a task of its own.
fn group_file(repo: &TestRepo, failing: Option<&str>, extra: Value) -> std::path::PathBuf {
    let fail = failing.map_or(String::new(), |f| {
        format!("; if [ \"$FANOUT_TASK_ID\" = {f} ]; then exit 3; fi")
    });
    let mut v = json!({
        "agents": {"w": exec_agent(&format!("echo renamed > \"$FANOUT_TASK_ID.txt\"{fail}"))},
        "defaults": {"agent": "w"},
        "tasks": [
            {"id": "r1", "prompt": "rename in file 1", "group": "rename-foo"},
            {"id": "alone", "prompt": "unrelated"},
            {"id": "r2", "prompt": "rename in file 2", "group": "rename-foo"},
            {"id": "r3", "prompt": "rename in file 3", "group": "rename-foo"}
        ]
    });
    if let Value::Object(extra) = extra {
        for (k, x) in extra {
            v[k] = x;
        }
    }
    repo.write_tasks(&v)
}

/// One member fails: no member lands, the others say which one; a group that all passes
/// lands whole.
fn group_lands_whole_or_not_at_all(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let (out, report) = repo.run(
        &group_file(&repo, Some("r2"), json!({})),
        &["--no-readback", "--jobs", "2"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["alone"], "merged", "{st:?}");
    assert_eq!(st["r2"], "failed", "{st:?}");
    for id in ["r1", "r3"] {
        assert_eq!(st[id], "skipped", "{st:?}");
        let error = task(&report, id)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.contains("group rename-foo") && error.contains("r2 ended failed"),
            "{error}"
        );
    }
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert!(files.contains_key("alone.txt"));
    for id in ["r1", "r2", "r3"] {
        assert!(
            !files.contains_key(&format!("{id}.txt")),
            "{id} landed: {st:?}"
        );
    }
    // All pass: all land, as a unit at the place of the group's first task, in task-file order.
    let (out, report) = repo.run(
        &group_file(&repo, None, json!({})),
        &["--no-readback", "--jobs", "2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let log = git_text(&repo.path, &["log", "--format=%s", branch]);
    let order: Vec<&str> = log
        .lines()
        .rev()
        .skip(1)
        .map(|l| l.split(' ').nth(2).unwrap_or(""))
        .collect();
    assert_eq!(order, ["r1", "r2", "r3", "alone"], "{log}");
}
every_way!(
    a_group_lands_whole_or_not_at_all,
    group_lands_whole_or_not_at_all
);

/// A member that conflicts with what merged before it keeps the whole group out.
fn group_member_conflicts(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&json!({
        "agents": {
            "w": exec_agent("echo renamed > \"$FANOUT_TASK_ID.txt\"; echo \"$FANOUT_TASK_ID\" > src/file_00.txt"),
            "g": exec_agent("echo renamed > \"$FANOUT_TASK_ID.txt\"")
        },
        "tasks": [
            {"id": "first", "prompt": "edit file 0", "agent": "w"},
            {"id": "g1", "prompt": "part 1", "agent": "g", "group": "pair"},
            {"id": "g2", "prompt": "part 2, touching file 0", "agent": "w", "group": "pair"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["first"], "merged", "{st:?}");
    assert_eq!(st["g2"], "conflict", "{st:?}");
    assert_eq!(st["g1"], "skipped", "{st:?}");
    let error = task(&report, "g1")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("g2 conflicted"), "{error}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert!(
        !files.contains_key("g1.txt") && !files.contains_key("g2.txt"),
        "{st:?}"
    );
}
every_way!(
    a_conflicting_member_keeps_its_group_out,
    group_member_conflicts
);

/// The integration gate's bisection takes a breaking group out whole, and keeps the rest.
#[test]
fn the_integration_gate_ejects_a_group_together() {
    let repo = TestRepo::with_files(1);
    let gate = json!({"integrate": {"verify": "test ! -e r3.txt"}});
    let (out, report) = repo.run(
        &group_file(&repo, None, gate),
        &["--no-readback", "--jobs", "2"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["alone"], "merged", "{st:?}");
    for id in ["r1", "r2", "r3"] {
        assert_eq!(st[id], "integration_failed", "{st:?}");
    }
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert!(files.contains_key("alone.txt"));
    assert!(!files.contains_key("r1.txt") && !files.contains_key("r3.txt"));
}

/// `"group": true` on a template groups what it generates; names are checked.
#[test]
fn a_template_forms_a_group_and_group_names_are_checked() {
    let repo = TestRepo::with_files(3);
    let script = "echo renamed >> \"${FANOUT_PROMPT#rename in }\"; case \"$FANOUT_PROMPT\" in *file_01*) exit 3;; esac";
    let file = repo.write_tasks(&json!({
        "agents": {"w": exec_agent(script)},
        "tasks": [{"id": "ren-{stem}", "prompt": "rename in {path}", "agent": "w", "group": true,
                   "for_each": {"files": "src/*.txt"}}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["ren-file_01"], "failed", "{st:?}");
    for id in ["ren-file_00", "ren-file_02"] {
        assert_eq!(st[id], "skipped", "{st:?}");
        let error = task(&report, id)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains("group ren-stem"), "{error}");
    }
    let file = repo.write_tasks(&json!({"tasks": [
        {"id": "a", "prompt": "p", "group": true},
        {"id": "b", "prompt": "p", "group": ""},
        {"id": "c", "prompt": "p", "group": 3}
    ]}));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = stderr(&out);
    for at in [
        "$.tasks[0].group",
        "$.tasks[1].group: invalid group name",
        "$.tasks[2].group",
    ] {
        assert!(text.contains(at), "{at}: {text}");
    }
}

/// With `on_conflict: retry`, the conflicting member runs again and the whole group lands.
fn group_lands_after_a_retry(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&json!({
        "agents": {
            "w": exec_agent("echo renamed > \"$FANOUT_TASK_ID.txt\"; echo \"$FANOUT_TASK_ID\" > src/file_00.txt"),
            "g": exec_agent("echo renamed > \"$FANOUT_TASK_ID.txt\"")
        },
        "defaults": {"on_conflict": "retry"},
        "tasks": [
            {"id": "first", "prompt": "edit file 0", "agent": "w"},
            {"id": "g1", "prompt": "part 1", "agent": "g", "group": "pair"},
            {"id": "g2", "prompt": "part 2, touching file 0", "agent": "w", "group": "pair"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert!(files.contains_key("g1.txt") && files.contains_key("g2.txt"));
    assert_eq!(String::from_utf8_lossy(&files["src/file_00.txt"]), "g2\n");
}
every_way!(
    a_group_lands_whole_after_its_member_is_retried,
    group_lands_after_a_retry
);

/// A task that depends on a group's task, written between the group's tasks, is integrated
/// after the whole group.
#[test]
fn a_dependent_of_a_group_task_lands_after_the_group() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"w": exec_agent("echo done > \"$FANOUT_TASK_ID.txt\"")},
        "defaults": {"agent": "w"},
        "tasks": [
            {"id": "def", "prompt": "rename the definition", "group": "rename"},
            {"id": "user", "prompt": "use the new name", "depends_on": ["def"]},
            {"id": "call", "prompt": "rename a call", "group": "rename", "depends_on": ["def"]}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let log = git_text(&repo.path, &["log", "--format=%s", branch]);
    let order: Vec<&str> = log
        .lines()
        .rev()
        .skip(1)
        .map(|l| l.split(' ').nth(2).unwrap_or(""))
        .collect();
    assert_eq!(order, ["def", "call", "user"], "{log}");
}
