//! Shards (docs/shards.md): `fanout run --shard K/N` on separate clones, hand-overs as bundles
//! or pushed refs, and `fanout combine` integrating them as one run.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::support::*;

const RUN: &str = "nightly-42";

fn show(out: &Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// An agent for the 40-task file: `tNN` appends its id to `src/file_NN.txt`; `clash-*`
/// overwrite `src/file_00.txt` (the second one conflicts); `broken` fails until
/// `FANOUT_TEST_PHASE=fixed` is in fanout's environment.
fn agent() -> Value {
    let script = "case \"$FANOUT_TASK_ID\" in \
        clash-*) echo \"$FANOUT_TASK_ID\" > src/file_00.txt ;; \
        broken) [ \"$FANOUT_TEST_PHASE\" = fixed ] || exit 1; echo fixed >> src/file_39.txt ;; \
        *) n=${FANOUT_TASK_ID#t}; echo \"$FANOUT_TASK_ID\" >> \"src/file_$n.txt\" ;; esac";
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

/// 37 tasks `t01`..`t37` (`t10` depends on `t03`, `t20`..`t22` form a group), two clashing
/// tasks and one broken one: 40 in all, plus `extra` ids. The integration gate refuses a
/// `t05` in `src/file_05.txt`, so bisect takes `t05` out.
fn task_file(repo: &TestRepo, extra: &[&str]) -> PathBuf {
    let mut tasks: Vec<Value> = (1..=37)
        .map(|i| json!({"id": format!("t{i:02}"), "prompt": "append"}))
        .collect();
    tasks[9]["depends_on"] = json!(["t03"]);
    for t in &mut tasks[19..=21] {
        t["group"] = json!("trio");
    }
    for id in ["clash-a", "clash-b", "broken"].iter().chain(extra) {
        tasks.push(json!({"id": id, "prompt": "x"}));
    }
    repo.write_tasks(&json!({
        "version": 1,
        "agents": {"ed": agent()},
        "defaults": {"agent": "ed"},
        "integrate": {"verify": ["sh", "-c", "! grep -q t05 src/file_05.txt"], "timeout_secs": 60},
        "tasks": tasks
    }))
}

/// A clone of the test repository in the test's temp folder, made by the repository's runner
/// (git refuses to clone a repository another user owns).
fn clone(repo: &TestRepo, name: &str) -> PathBuf {
    let dir = repo.tmp.path().join(name);
    let from = repo.path.to_str().expect("utf-8");
    git_as(
        repo,
        repo.tmp.path(),
        &["clone", "-q", from, dir.to_str().expect("utf-8")],
    );
    dir
}

/// git as the repository's runner: for the unprivileged pass as root, through `setpriv` as
/// [`UNPRIVILEGED_UID`] on the temp folder handed to it.
fn git_as(repo: &TestRepo, dir: &Path, args: &[&str]) {
    if !repo.runner.drops_privileges() {
        git(dir, args);
        return;
    }
    chown_tree(repo.tmp.path(), UNPRIVILEGED_UID);
    let o = std::process::Command::new("setpriv")
        .arg(format!("--reuid={UNPRIVILEGED_UID}"))
        .arg(format!("--regid={UNPRIVILEGED_UID}"))
        .arg("--clear-groups")
        .arg("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        .env("HOME", repo.tmp.path())
        .output()
        .expect("git runs");
    assert!(o.status.success(), "git {args:?}: {}", show(&o));
}

/// `fanout ARGS --repo DIR` as the repository's runner, with `env` added.
fn fanout_in(repo: &TestRepo, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = repo.fanout_command();
    cmd.args(args).arg("--repo").arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("fanout runs")
}

fn shard_args<'a>(tasks: &'a str, shard: &'a str, bundle: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--tasks",
        tasks,
        "--shard",
        shard,
        "--run-id",
        RUN,
        "--bundle",
        bundle,
        "--no-readback",
        "-q",
        "-j",
        "2",
    ]
}

/// Runs the four shards as four processes at once, each on its own clone; the bundles land
/// in `<tmp>/bundles`.
fn four_shards(repo: &TestRepo, tasks: &Path) -> PathBuf {
    let out = repo.tmp.path().join("bundles");
    let tasks = tasks.to_str().expect("utf-8");
    let clones: Vec<PathBuf> = (1..=4)
        .map(|k| clone(repo, &format!("shard-{k}")))
        .collect();
    let children: Vec<_> = (1..=4)
        .map(|k| {
            let bundle = out.join(format!("shard-{k}.bundle"));
            let shard = format!("{k}/4");
            let mut cmd = repo.fanout_command();
            cmd.args(shard_args(tasks, &shard, bundle.to_str().expect("utf-8")))
                .arg("--repo")
                .arg(&clones[k - 1]);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("fanout starts")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("shard ends");
        // `broken` fails and the gate ejects t05: a shard holding either exits 1.
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", show(&o));
    }
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or(Value::Null)
}

fn run_report(dir: &Path, run: &str) -> Value {
    read_json(&dir.join(".git/fanout/runs").join(run).join("report.json"))
}

fn merged_tree(dir: &Path, run: &str) -> String {
    git_text(
        dir,
        &["rev-parse", &format!("fanout/{run}/merged^{{tree}}")],
    )
}

fn combine(repo: &TestRepo, dir: &Path, tasks: &Path, from: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["combine", "--tasks", tasks.to_str().expect("utf-8"), "-q"];
    if !from.is_empty() {
        args.push("--from");
        args.extend_from_slice(from);
    }
    args.extend_from_slice(extra);
    fanout_in(repo, dir, &args, &[])
}

/// The 40-task file in four shards, combined: the same tree and statuses as one run, every
/// task once with its shard and host in report.json, JUnit and HTML.
fn four_shards_combine_as_one_run(runner: Runner) {
    let repo = TestRepo::with_files(40).run_by(runner);
    let tasks = task_file(&repo, &[]);
    let single = clone(&repo, "single");
    let t = tasks.to_str().expect("utf-8");
    let o = fanout_in(
        &repo,
        &single,
        &[
            "run",
            "--tasks",
            t,
            "--run-id",
            "single",
            "--no-readback",
            "-q",
            "-j",
            "2",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let bundles = four_shards(&repo, &tasks);
    let combined = clone(&repo, "combined");
    let (junit, html) = (
        repo.tmp.path().join("j.xml"),
        repo.tmp.path().join("r.html"),
    );
    let o = combine(
        &repo,
        &combined,
        &tasks,
        &[bundles.to_str().expect("utf-8")],
        &[
            "--junit",
            junit.to_str().expect("utf-8"),
            "--html",
            html.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "broken fails, t05 is ejected: {}",
        show(&o)
    );
    let (one, all) = (run_report(&single, "single"), run_report(&combined, RUN));
    assert_eq!(statuses(&all), statuses(&one));
    assert_eq!(statuses(&all).len(), 40);
    assert_eq!(statuses(&all)["clash-b"], "conflict");
    assert_eq!(statuses(&all)["t05"], "integration_failed");
    assert_eq!(statuses(&all)["broken"], "failed");
    assert_eq!(merged_tree(&combined, RUN), merged_tree(&single, "single"));
    let order: Vec<&str> = all["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["id"].as_str().unwrap_or(""))
        .collect();
    let file_order: Vec<&str> = one["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(order, file_order, "task-file order");
    for t in all["tasks"].as_array().expect("tasks") {
        assert!(
            t["shard"].as_str().is_some_and(|s| s.ends_with("/4")),
            "{t}"
        );
        assert!(t["host"].as_str().is_some_and(|h| !h.is_empty()), "{t}");
    }
    // The chain and the group each ran in one shard.
    let shard = |id: &str| task(&all, id)["shard"].as_str().unwrap_or("").to_string();
    assert_eq!(shard("t03"), shard("t10"));
    assert_eq!(shard("t20"), shard("t22"));
    let junit = std::fs::read_to_string(&junit).expect("junit");
    assert_eq!(
        junit.matches("<testcase ").count(),
        41,
        "40 tasks and the gate"
    );
    assert_eq!(junit.matches("name=\"shard\"").count(), 40);
    let html = std::fs::read_to_string(&html).expect("html");
    for id in ["t01", "t37", "clash-a", "broken"] {
        assert_eq!(
            html.matches(&format!("data-id=\"{id}\"")).count(),
            1,
            "{id} once"
        );
    }
    assert!(html.contains("shard 1/4 on "));
}
crate::both_ways!(
    four_shards_combine_like_one_run,
    four_shards_combine_as_one_run
);

/// Adding a task to the file moves no other task between shards (`fanout validate --shards`).
#[test]
fn adding_a_task_moves_no_other_task() {
    let repo = TestRepo::with_files(40);
    let assignment = |tasks: &Path| -> Vec<String> {
        let o = repo
            .fanout_command()
            .args([
                "validate",
                "--tasks",
                tasks.to_str().expect("utf-8"),
                "--shards",
                "4",
            ])
            .output()
            .expect("validate");
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        stdout(&o)
            .lines()
            .filter(|l| l.contains("\tshard "))
            .map(str::to_string)
            .collect()
    };
    let before = assignment(&task_file(&repo, &[]));
    let after = assignment(&task_file(&repo, &["added-later", "another-one"]));
    assert_eq!(before.len(), 40);
    assert_eq!(after.len(), 42);
    assert_eq!(after[..40], before[..], "no task moved");
    let o = repo
        .fanout_command()
        .args([
            "validate",
            "--tasks",
            task_file(&repo, &[]).to_str().expect("utf-8"),
            "--shards",
            "4",
        ])
        .output()
        .expect("validate");
    let balance = stdout(&o);
    assert_eq!(balance.matches(" task(s)\n").count(), 4, "{balance}");
    assert!(balance.contains("balance: "), "{balance}");
}

/// A missing shard: its tasks are `missing`, exit 4 and nothing else changes; with
/// `--allow-missing` the rest is integrated and the exit code is the run's own.
fn a_missing_shard_is_reported(runner: Runner) {
    let repo = TestRepo::with_files(40).run_by(runner);
    let tasks = task_file(&repo, &[]);
    let bundles = four_shards(&repo, &tasks);
    std::fs::remove_file(bundles.join("shard-3.bundle")).expect("drop shard 3");
    let strict = clone(&repo, "strict");
    let o = combine(
        &repo,
        &strict,
        &tasks,
        &[bundles.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(
        stderr(&o).contains("shard 3/4 handed nothing over"),
        "{}",
        show(&o)
    );
    let report = run_report(&strict, RUN);
    let missing: Vec<String> = statuses(&report)
        .into_iter()
        .filter(|(_, s)| s == "missing")
        .map(|(id, _)| id)
        .collect();
    assert!(!missing.is_empty());
    for id in &missing {
        assert_eq!(task(&report, id)["shard"], "3/4");
    }
    let lenient = clone(&repo, "lenient");
    let o = combine(
        &repo,
        &lenient,
        &tasks,
        &[bundles.to_str().expect("utf-8")],
        &["--allow-missing"],
    );
    let report = run_report(&lenient, RUN);
    let others_fail = statuses(&report)
        .values()
        .any(|s| !matches!(s.as_str(), "merged" | "no_changes" | "missing"));
    assert_eq!(
        o.status.code(),
        Some(if others_fail { 1 } else { 0 }),
        "{}",
        show(&o)
    );
    let merged = statuses(&report)
        .values()
        .filter(|s| *s == "merged")
        .count();
    assert!(merged >= 40 - missing.len() - 3, "{report}");
    // What was integrated is there: a merged task's line is in the integration tree.
    let (id, _) = statuses(&report)
        .into_iter()
        .find(|(id, s)| s == "merged" && id.starts_with('t'))
        .expect("one merged");
    let file = format!("fanout/{RUN}/merged:src/file_{}.txt", &id[1..]);
    assert!(git_text(&lenient, &["show", &file]).contains(&id));
}
crate::both_ways!(a_missing_shard, a_missing_shard_is_reported);

/// A shard run again (an engine's retry) supersedes its earlier hand-over: the higher attempt
/// wins whatever the order of `--from`, and without attempts the later one.
#[test]
fn a_rerun_shard_supersedes() {
    let repo = TestRepo::with_files(40);
    let tasks = task_file(&repo, &[]);
    let t = tasks.to_str().expect("utf-8");
    let shard_of_broken = {
        let o = repo
            .fanout_command()
            .args(["validate", "--tasks", t, "--shards", "2"])
            .output()
            .expect("validate");
        stdout(&o)
            .lines()
            .find_map(|l| l.strip_prefix("broken\tshard "))
            .map(|s| s.to_string())
            .expect("broken's shard")
    };
    let out = repo.tmp.path().join("b");
    let first = out.join("first.bundle");
    let second = out.join("second.bundle");
    let (c1, c2) = (clone(&repo, "try-1"), clone(&repo, "try-2"));
    let o = fanout_in(
        &repo,
        &c1,
        &shard_args(t, &shard_of_broken, first.to_str().expect("utf-8")),
        &[("FANOUT_SHARD_ATTEMPT", "1")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = fanout_in(
        &repo,
        &c2,
        &shard_args(t, &shard_of_broken, second.to_str().expect("utf-8")),
        &[
            ("FANOUT_SHARD_ATTEMPT", "2"),
            ("FANOUT_TEST_PHASE", "fixed"),
        ],
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", show(&o));
    let other = if shard_of_broken == "1/2" {
        "2/2"
    } else {
        "1/2"
    };
    let rest = out.join("rest.bundle");
    let o = fanout_in(
        &repo,
        &clone(&repo, "rest"),
        &shard_args(t, other, rest.to_str().expect("utf-8")),
        &[],
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", show(&o));
    let (b1, b2, b3) = (
        first.to_str().expect("utf-8"),
        second.to_str().expect("utf-8"),
        rest.to_str().expect("utf-8"),
    );
    // The newer attempt listed first, then last: it wins both times.
    for (name, from) in [("newer-first", [b2, b1, b3]), ("newer-last", [b1, b3, b2])] {
        let dir = clone(&repo, name);
        let o = combine(&repo, &dir, &tasks, &from, &[]);
        assert!(stderr(&o).contains("supersedes"), "{}", show(&o));
        let report = run_report(&dir, RUN);
        assert_eq!(
            statuses(&report)["broken"],
            "merged",
            "{name}: {}",
            show(&o)
        );
        assert!(git_text(
            &dir,
            &["show", &format!("fanout/{RUN}/merged:src/file_39.txt")]
        )
        .contains("fixed"));
    }
    // Without attempt numbers the later hand-over wins, listed first or last.
    let (older, newer) = (out.join("older.bundle"), out.join("newer.bundle"));
    let o = fanout_in(
        &repo,
        &clone(&repo, "try-3"),
        &shard_args(t, &shard_of_broken, older.to_str().expect("utf-8")),
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = fanout_in(
        &repo,
        &clone(&repo, "try-4"),
        &shard_args(t, &shard_of_broken, newer.to_str().expect("utf-8")),
        &[("FANOUT_TEST_PHASE", "fixed")],
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", show(&o));
    let (old_b, new_b) = (
        older.to_str().expect("utf-8"),
        newer.to_str().expect("utf-8"),
    );
    for (name, from) in [
        ("time-a", [new_b, old_b, b3]),
        ("time-b", [old_b, b3, new_b]),
    ] {
        let dir = clone(&repo, name);
        let o = combine(&repo, &dir, &tasks, &from, &[]);
        assert_eq!(
            statuses(&run_report(&dir, RUN))["broken"],
            "merged",
            "{name}: {}",
            show(&o)
        );
    }
}

/// A shard whose base is another commit than the run's refuses before anything is created;
/// combine refuses hand-overs on different bases.
fn a_shard_on_another_base_refuses(runner: Runner) {
    let repo = TestRepo::with_files(40).run_by(runner);
    let tasks = task_file(&repo, &[]);
    let t = tasks.to_str().expect("utf-8");
    let base = repo.head();
    let moved = clone(&repo, "moved");
    git_as(
        &repo,
        &moved,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "moved on",
        ],
    );
    let bundle = repo.tmp.path().join("x.bundle");
    let mut args = shard_args(t, "1/2", bundle.to_str().expect("utf-8"));
    args.extend(["--base-commit", &base]);
    let o = fanout_in(&repo, &moved, &args, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("another base"), "{}", show(&o));
    assert!(!moved.join(".git/fanout/runs").join(RUN).exists());
    assert!(!bundle.exists());
    // Without the check it runs on its own base, and the combine refuses to mix the two.
    let o = fanout_in(
        &repo,
        &moved,
        &shard_args(t, "1/2", bundle.to_str().expect("utf-8")),
        &[],
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", show(&o));
    let b2 = repo.tmp.path().join("y.bundle");
    let o = fanout_in(
        &repo,
        &clone(&repo, "plain"),
        &shard_args(t, "2/2", b2.to_str().expect("utf-8")),
        &[],
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", show(&o));
    let dir = clone(&repo, "comb");
    git_as(
        &repo,
        &dir,
        &["fetch", "-q", moved.to_str().expect("utf-8"), "main"],
    );
    let o = combine(
        &repo,
        &dir,
        &tasks,
        &[bundle.to_str().expect("utf-8"), b2.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("base commit"), "{}", show(&o));
    assert!(!dir.join(".git/fanout/runs").join(RUN).exists());
    assert!(git_text(&dir, &["for-each-ref", "refs/fanout-import"]).is_empty());
}
crate::both_ways!(a_shard_on_another_base, a_shard_on_another_base_refuses);

/// `fanout status`, `report`, `diff` and `merge` work on a combined run like on any run.
#[test]
fn status_report_diff_merge_on_a_combined_run() {
    let repo = TestRepo::with_files(40);
    let tasks = task_file(&repo, &[]);
    let bundles = four_shards(&repo, &tasks);
    let dir = clone(&repo, "combined");
    let o = combine(
        &repo,
        &dir,
        &tasks,
        &[bundles.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = fanout_in(&repo, &dir, &["status", RUN], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains("t17") && stdout(&o).contains("merged"),
        "{}",
        show(&o)
    );
    let html = repo.tmp.path().join("again.html");
    let o = fanout_in(
        &repo,
        &dir,
        &["report", RUN, "--html", html.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(std::fs::read_to_string(&html)
        .expect("html")
        .contains("data-id=\"t17\""));
    let o = fanout_in(&repo, &dir, &["diff", RUN, "t17", "--color", "never"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stdout(&o).contains("+t17"), "{}", show(&o));
    let o = fanout_in(&repo, &dir, &["merge", RUN, "--into", "main"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(git_text(&dir, &["show", "main:src/file_17.txt"]).contains("t17"));
}

/// `--push` to a bare remote from each shard, then `combine --from-remote`: the same tree as
/// the bundles give.
#[test]
fn push_to_a_bare_remote_then_combine_from_it() {
    let repo = TestRepo::with_files(40);
    let tasks = task_file(&repo, &[]);
    let t = tasks.to_str().expect("utf-8");
    let remote = repo.tmp.path().join("remote.git");
    git(
        repo.tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            repo.path.to_str().expect("utf-8"),
            remote.to_str().expect("utf-8"),
        ],
    );
    for k in 1..=2 {
        let dir = repo.tmp.path().join(format!("p{k}"));
        git(
            repo.tmp.path(),
            &[
                "clone",
                "-q",
                remote.to_str().expect("utf-8"),
                dir.to_str().expect("utf-8"),
            ],
        );
        let shard = format!("{k}/2");
        let o = fanout_in(
            &repo,
            &dir,
            &[
                "run",
                "--tasks",
                t,
                "--shard",
                &shard,
                "--run-id",
                RUN,
                "--push",
                "origin",
                "--no-readback",
                "-q",
            ],
            &[],
        );
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", show(&o));
    }
    let refs = git_text(
        &remote,
        &[
            "for-each-ref",
            "--format=%(refname)",
            &format!("refs/fanout/{RUN}"),
        ],
    );
    assert!(
        refs.contains(&format!("refs/fanout/{RUN}/shard-1/manifest")),
        "{refs}"
    );
    assert!(
        refs.contains(&format!("refs/fanout/{RUN}/shard-2/task/t01"))
            || refs.contains(&format!("refs/fanout/{RUN}/shard-1/task/t01")),
        "{refs}"
    );
    let dir = repo.tmp.path().join("c");
    git(
        repo.tmp.path(),
        &[
            "clone",
            "-q",
            remote.to_str().expect("utf-8"),
            dir.to_str().expect("utf-8"),
        ],
    );
    let o = combine(
        &repo,
        &dir,
        &tasks,
        &[],
        &["--from-remote", "origin", "--run", RUN],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let report = run_report(&dir, RUN);
    assert_eq!(statuses(&report).len(), 40);
    assert_eq!(statuses(&report)["t01"], "merged");
    assert!(git_text(
        &dir,
        &["show", &format!("fanout/{RUN}/merged:src/file_37.txt")]
    )
    .contains("t37"));
}

/// `--shard-from-env` reads each engine's variables; a missing count is a clear error.
#[test]
fn the_shard_comes_from_the_engines_environment() {
    let repo = TestRepo::with_files(40);
    let tasks = task_file(&repo, &[]);
    let t = tasks.to_str().expect("utf-8");
    let expected: Vec<String> = {
        let o = repo
            .fanout_command()
            .args(["validate", "--tasks", t, "--shards", "4"])
            .output()
            .expect("validate");
        stdout(&o)
            .lines()
            .filter_map(|l| l.strip_suffix("\tshard 2/4"))
            .map(str::to_string)
            .collect()
    };
    let engines: [&[(&str, &str)]; 3] = [
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ],
        &[("JOB_COMPLETION_INDEX", "1"), ("FANOUT_SHARD_COUNT", "4")],
        &[("FANOUT_SHARD_INDEX", "2"), ("FANOUT_SHARD_COUNT", "4")],
    ];
    for (n, env) in engines.iter().enumerate() {
        let dir = clone(&repo, &format!("engine-{n}"));
        let run = format!("env-{n}");
        let o = fanout_in(
            &repo,
            &dir,
            &[
                "run",
                "--tasks",
                t,
                "--shard-from-env",
                "--run-id",
                &run,
                "--no-readback",
                "-q",
            ],
            env,
        );
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", show(&o));
        let ran: Vec<String> = statuses(&run_report(&dir, &run)).into_keys().collect();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(ran, want, "{env:?}");
    }
    let o = fanout_in(
        &repo,
        &repo.path,
        &["run", "--tasks", t, "--shard-from-env", "--no-readback"],
        &[("JOB_COMPLETION_INDEX", "0")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("no shard count"), "{}", show(&o));
}

/// `combine --on-conflict retry` runs a conflicting task again here, from the integration
/// head, with the runner's own rerun: `clash-b` then merges in round 2.
#[test]
fn combine_runs_a_conflicting_task_again_when_asked() {
    let repo = TestRepo::with_files(40);
    let tasks = task_file(&repo, &[]);
    let bundles = four_shards(&repo, &tasks);
    let dir = clone(&repo, "combined");
    let o = combine(
        &repo,
        &dir,
        &tasks,
        &[bundles.to_str().expect("utf-8")],
        &["--on-conflict", "retry"],
    );
    let report = run_report(&dir, RUN);
    assert_eq!(statuses(&report)["clash-b"], "merged", "{}", show(&o));
    let rounds = task(&report, "clash-b")["rounds"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(rounds, 2, "{}", task(&report, "clash-b"));
    assert_eq!(
        git_text(
            &dir,
            &["show", &format!("fanout/{RUN}/merged:src/file_00.txt")]
        ),
        "clash-b"
    );
    // broken still fails and t05 is still ejected by the gate.
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
}
