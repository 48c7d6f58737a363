//! `setup` once per run, shared read-only (overlay: a layer under every workspace; worktree: a
//! copy): how often it runs, what reuses it (conflict re-runs, the integration gate and its
//! bisection steps), what makes a new one (changed inputs), that no task's write reaches
//! another task or the gate, that its output is in no commit, and how it fails.

use serde_json::{json, Value};

use crate::support::*;

/// A setup that makes `build/deps` (ignored) with a file every task reads and a marker naming
/// this run of the setup (the count of distinct markers is the count of setup runs).
const SETUP: &str = "mkdir -p build/deps/bin && echo ok > build/deps/lib.txt \
    && printf '#!/bin/sh\\necho tool\\n' > build/deps/bin/tool && chmod 755 build/deps/bin/tool \
    && ln -s bin/tool build/deps/tool-link \
    && touch build/deps/made-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \\n')";

/// An agent that records what it sees of the layer, then tampers with it.
const AGENT: &str =
    "{ ls build/deps | grep made- ; cat build/deps/lib.txt ; build/deps/tool-link ; \
    stat -c %a build/deps/bin/tool ; } > seen-$FANOUT_TASK_ID.txt \
    && echo tampered > build/deps/lib.txt && rm -f build/deps/made-* \
    && echo changed >> src/file_00.txt.$FANOUT_TASK_ID";

fn exec(script: &str) -> Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

fn run_dir(repo: &TestRepo, report: &Value) -> std::path::PathBuf {
    repo.path
        .join(".git/fanout/runs")
        .join(report["run_id"].as_str().expect("run id"))
}

/// The setup logs of the run: one per layer made.
fn setup_logs(repo: &TestRepo, report: &Value) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(run_dir(repo, report).join("logs"))
        .expect("logs")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // `setup-<key>.log`, not the stderr log beside it.
        .filter(|n| n.starts_with("setup-") && n.ends_with(".log") && n.matches('.').count() == 1)
        .collect();
    out.sort();
    out
}

fn seen(repo: &TestRepo, report: &Value, id: &str) -> String {
    let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    String::from_utf8_lossy(&files[&format!("seen-{id}.txt")]).into_owned()
}

/// N tasks from one start: the setup runs once; every task sees the same, untouched layer
/// (modes and links as made) although each tampers with it; the layer is in no commit; the
/// gate sees it untouched too.
fn one_start_one_setup(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let ids = ["t1", "t2", "t3", "t4"];
    let gate =
        "test \"$(cat build/deps/lib.txt)\" = ok && test $(ls build/deps | grep -c made-) = 1";
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "w", "setup": SETUP},
        "agents": {"w": exec(AGENT)},
        "integrate": {"verify": ["sh", "-c", gate]},
        "tasks": ids.iter().map(|id| json!({"id": id, "prompt": "x"})).collect::<Vec<_>>()
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // Without `inputs` the key is the whole tree: one layer for the tasks (all from the base),
    // one for the gate's integration commit.
    assert_eq!(setup_logs(&repo, &report).len(), 2, "{report}");
    let first = seen(&repo, &report, "t1");
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 4, "{first}");
    assert!(lines[0].starts_with("made-"), "{first}");
    assert_eq!(&lines[1..], ["ok", "tool", "755"], "{first}");
    for id in &ids[1..] {
        assert_eq!(seen(&repo, &report, id), first, "{id} sees the same layer");
    }
    assert_eq!(report["integration"]["passed"], true, "{report}");
    for id in ids {
        let t = task(&report, id);
        assert_eq!(t["status"], "merged", "{t}");
        let files = repo.tree_files(t["commit"].as_str().expect("commit"));
        assert!(
            files.keys().all(|k| !k.starts_with("build/")),
            "setup output in {id}'s commit: {:?}",
            files.keys().collect::<Vec<_>>()
        );
        let log = run_dir(&repo, &report).join(format!("logs/{id}.setup.log"));
        let text = std::fs::read_to_string(&log).expect("task setup log");
        assert!(text.contains("fanout: setup layer"), "{text}");
    }
}
crate::every_way!(one_start_one_setup, one_start_one_setup);

/// A task whose start changes an input gets a new layer; a conflict re-run (from the
/// integration head, another tree) with the same inputs reuses it.
fn inputs_decide_reuse(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    std::fs::write(repo.path.join("line.txt"), "base\n").expect("write");
    std::fs::write(repo.path.join("deps.lock"), "v1\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "line"]);
    let append = "ls build/deps | grep made- > seen-$FANOUT_TASK_ID.txt; sed -i \"1s/\\$/ $FANOUT_TASK_ID/\" line.txt";
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "e", "setup": {"run": SETUP, "inputs": ["deps.lock"]}},
        "agents": {
            "e": exec(append),
            "bump": exec("echo v2 > deps.lock"),
            "after": exec("ls build/deps | grep made- > seen-$FANOUT_TASK_ID.txt")
        },
        "tasks": [
            {"id": "a", "prompt": "append a"},
            {"id": "b", "prompt": "append b"},
            {"id": "bump", "prompt": "bump", "agent": "bump"},
            {"id": "after", "prompt": "x", "agent": "after", "depends_on": ["bump"]}
        ]
    }));
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "retry"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    for id in ["a", "b", "bump", "after"] {
        assert_eq!(st[id], "merged", "{st:?}");
    }
    let rerun = ["a", "b"]
        .into_iter()
        .find(|id| task(&report, id)["started_from"] != report["base"])
        .expect("one of a and b ran again from the integration");
    let other = if rerun == "a" { "b" } else { "a" };
    // Three starts: the base (the first of a and b), base + bump (after), the integration
    // head (the re-run, with bump's lock): two layers, by the lock's content.
    assert_eq!(
        seen(&repo, &report, rerun),
        seen(&repo, &report, "after"),
        "the re-run's start has the same inputs as after's: the same layer"
    );
    assert_ne!(
        seen(&repo, &report, "after"),
        seen(&repo, &report, other),
        "a changed input makes a new layer"
    );
    assert_eq!(setup_logs(&repo, &report).len(), 2, "{report}");
}
crate::every_way!(inputs_decide_reuse, inputs_decide_reuse);

/// The gate gets the layer (and the `include` files); its bisection steps reuse it: one
/// setup for the tasks, the gate's full run and every step.
fn gate_and_bisection_reuse_the_layer(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    std::fs::write(repo.path.join(".gitignore"), "*.log\nbuild/\n.env\n").expect("write");
    std::fs::write(repo.path.join("deps.lock"), "v1\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "lock"]);
    std::fs::write(repo.path.join(".env"), "SECRET=local\n").expect("write");
    // Every run of the gate sees the layer as made, although each one tampers with it.
    let gate = "test -f .env && test \"$(cat build/deps/lib.txt)\" = ok \
        && echo tampered > build/deps/lib.txt && test ! -e broken.txt";
    let file = repo.write_tasks(&json!({
        "include": [".env"],
        "defaults": {"agent": "e", "setup": {"run": SETUP, "inputs": ["deps.lock"]}},
        "agents": {"e": exec("echo $FANOUT_TASK_ID > out-$FANOUT_TASK_ID.txt"),
                   "bad": exec("echo bad > broken.txt")},
        "integrate": {"verify": ["sh", "-c", gate]},
        "tasks": [
            {"id": "g1", "prompt": "x"}, {"id": "g2", "prompt": "x"},
            {"id": "g3", "prompt": "x", "agent": "bad"}, {"id": "g4", "prompt": "x"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["g3"], "integration_failed", "{st:?}");
    for id in ["g1", "g2", "g4"] {
        assert_eq!(st[id], "merged", "{st:?}");
    }
    let runs = report["integration"]["verify_runs"].as_u64().expect("runs");
    assert!(runs >= 3, "the gate bisected: {report}");
    assert_eq!(setup_logs(&repo, &report).len(), 1, "{report}");
}
crate::every_way!(
    gate_and_bisection_reuse_the_layer,
    gate_and_bisection_reuse_the_layer
);

/// A failing setup fails every task that needs it, with the log's tail; the others run.
fn failure_fails_the_tasks_that_need_it(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let failing = "echo 'npm ERR! missing lockfile' >&2; exit 3";
    let file = repo.write_tasks(&json!({
        "agents": {"w": exec("echo x > out-$FANOUT_TASK_ID.txt")},
        "defaults": {"agent": "w"},
        "tasks": [
            {"id": "f1", "prompt": "x", "setup": failing},
            {"id": "f2", "prompt": "x", "setup": failing},
            {"id": "free", "prompt": "x"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    for id in ["f1", "f2"] {
        let t = task(&report, id);
        assert_eq!(t["status"], "failed", "{t}");
        let error = t["error"].as_str().expect("error");
        assert!(
            error.contains("setup") && error.contains("3") && error.contains("missing lockfile"),
            "{error}"
        );
        let log = run_dir(&repo, &report).join(format!("logs/{id}.setup.log"));
        assert!(std::fs::read_to_string(&log)
            .expect("log")
            .contains("missing lockfile"));
    }
    assert_eq!(task(&report, "free")["status"], "merged");
    assert_eq!(setup_logs(&repo, &report).len(), 1, "ran once: {report}");
}
crate::both_ways!(
    failure_fails_the_tasks_that_need_it,
    failure_fails_the_tasks_that_need_it
);

/// A shared setup may not change tracked files: the tasks fail and say which, and how out.
#[test]
fn a_setup_that_changes_tracked_files_fails_clearly() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"w": exec("echo x > out.txt")},
        "tasks": [{"id": "t", "prompt": "x", "agent": "w",
                   "setup": "mkdir -p build && echo y >> src/file_00.txt"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let t = task(&report, "t");
    let error = t["error"].as_str().expect("error");
    assert!(
        error.contains("tracked files")
            && error.contains("src/file_00.txt")
            && error.contains("\"once\": false"),
        "{error}"
    );
}

/// `"once": false` keeps the old per-workspace setup: it runs in each task's workspace.
#[test]
fn once_false_runs_in_every_workspace() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "defaults": {"setup": {"run": "mkdir -p build && echo \"for $FANOUT_TASK_ID\" > build/c.txt", "once": false}},
        "agents": {"w": exec("cp build/c.txt used-$FANOUT_TASK_ID.txt")},
        "tasks": [{"id": "p1", "prompt": "x", "agent": "w"}, {"id": "p2", "prompt": "x", "agent": "w"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    assert_eq!(files["used-p1.txt"], b"for p1\n");
    assert_eq!(files["used-p2.txt"], b"for p2\n");
    assert!(setup_logs(&repo, &report).is_empty());
}

/// Worktree workspaces get a copy of the layer, said (with its figures) in the task's log.
#[test]
fn worktree_workspaces_get_a_copy() {
    in_workspace("worktree", || {
        let repo = TestRepo::with_files(1);
        let file = repo.write_tasks(&json!({
            "defaults": {"setup": SETUP},
            "agents": {"w": exec("cat build/deps/lib.txt > seen.txt")},
            "tasks": [{"id": "c1", "prompt": "x", "agent": "w"}]
        }));
        let (out, report) = repo.run(&file, &["--no-readback"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let log = run_dir(&repo, &report).join("logs/c1.setup.log");
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(
            text.contains("copied into") && text.contains("files"),
            "{text}"
        );
    });
}

/// Removing the layer's folder whole, or replacing a file of it by a link, is no change of the
/// task's (the layer is ignored output), and the next task still gets the layer as made.
fn removing_the_layer_is_no_change(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&json!({
        // With inputs, `read` (which starts from both commits) reuses the same layer.
        "defaults": {"setup": {"run": SETUP, "inputs": [".gitignore"]}},
        "agents": {
            "rm": exec("rm -rf build && mkdir build && echo x > build/new && echo done > marker-rm.txt"),
            "ln": exec("rm build/deps/lib.txt && ln -s /etc/passwd build/deps/lib.txt && echo done > marker-ln.txt"),
            "read": exec("cat build/deps/lib.txt > seen-read.txt")
        },
        "tasks": [
            {"id": "rm", "prompt": "x", "agent": "rm"},
            {"id": "ln", "prompt": "x", "agent": "ln"},
            {"id": "read", "prompt": "x", "agent": "read", "depends_on": ["rm", "ln"]}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for id in ["rm", "ln"] {
        let t = task(&report, id);
        assert_eq!(t["files"], json!([format!("marker-{id}.txt")]), "{t}");
    }
    assert_eq!(seen(&repo, &report, "read"), "ok\n");
    assert_eq!(setup_logs(&repo, &report).len(), 1, "{report}");
}
crate::every_way!(
    removing_the_layer_is_no_change,
    removing_the_layer_is_no_change
);
