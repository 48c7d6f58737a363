//! Conflicts and integration failures given back to the agent that made the change:
//! `--on-conflict resolve[=N]` (conflict markers in its workspace) and integration repair
//! (`integrate: {verify, repair: N}`, bounded by `protect`).

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::*;
use crate::{both_ways, every_way};

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// `line.txt` ("base") and `notes.txt` in a repository of one more file.
fn line_repo(runner: Runner) -> TestRepo {
    let repo = TestRepo::with_files(1).run_by(runner);
    std::fs::write(repo.path.join("line.txt"), "top\nbase\nend\n").expect("write");
    std::fs::write(repo.path.join("notes.txt"), "notes\n").expect("write");
    std::fs::write(repo.path.join("old.txt"), "old\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "line"]);
    repo
}

/// Two exec tasks appending their id to the same line; `b` also adds a line to `notes.txt`
/// and deletes `old.txt` (parts that merge cleanly). On a resolve round (`FANOUT_FEEDBACK` set) the agent runs
/// `resolution` instead.
fn same_line_tasks(repo: &TestRepo, resolution: &str) -> PathBuf {
    let agent = format!(
        r#"
if [ -n "${{FANOUT_FEEDBACK+set}}" ]; then
{resolution}
  exit 0
fi
sed -i "2s/\$/ $FANOUT_TASK_ID/" line.txt
if [ "$FANOUT_TASK_ID" = b ]; then echo 'b was here' >> notes.txt; rm old.txt; fi
"#
    );
    repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "sh", "args": ["-c", agent]}},
        "defaults": {"agent": "e", "max_attempts": 1},
        "tasks": [{"id": "a", "prompt": "append a"}, {"id": "b", "prompt": "append b"}]
    }))
}

/// What a resolve round's agent checks before it resolves: its prompt names the task it meets
/// and shows both sides' hunks; the markers are in the file; the clean part is merged already.
const CHECKED_RESOLUTION: &str = r#"
  printf '%s' "$FANOUT_FEEDBACK" | grep -q 'task a' || { echo 'feedback names no task a' >&2; exit 3; }
  printf '%s' "$FANOUT_FEEDBACK" | grep -q '^base a$' || { echo 'no hunk of the integration' >&2; exit 4; }
  printf '%s' "$FANOUT_FEEDBACK" | grep -q '^base b$' || { echo 'no hunk of the task' >&2; exit 5; }
  grep -q '^<<<<<<< integration' line.txt || { echo 'no markers' >&2; exit 6; }
  grep -q '^b was here$' notes.txt || { echo 'the clean part is missing' >&2; exit 7; }
  [ ! -e old.txt ] || { echo 'the clean deletion is missing' >&2; exit 8; }
  printf 'top\nbase a b\nend\n' > line.txt
"#;

fn rounds(report: &Value, id: &str) -> Vec<(String, String)> {
    task(report, id)["rounds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_string(),
                r["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn a_conflict_is_resolved_by_the_tasks_own_agent(runner: Runner) {
    let repo = line_repo(runner);
    let before = repo.snapshot();
    let file = same_line_tasks(&repo, CHECKED_RESOLUTION);
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "resolve"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "merged", "{st:?}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["line.txt"]),
        "top\nbase a b\nend\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&files["notes.txt"]),
        "notes\nb was here\n"
    );
    assert!(!files.contains_key("old.txt"), "b's deletion merged");
    // b's rounds: the first conflicted, the resolve round merged, saying what caused it.
    assert_eq!(
        rounds(&report, "b"),
        vec![
            ("agent".to_string(), "conflict".to_string()),
            ("resolve".to_string(), "merged".to_string())
        ],
        "{}",
        task(&report, "b")
    );
    let cause = task(&report, "b")["rounds"][1]["cause"]
        .as_str()
        .unwrap_or("");
    assert!(cause.contains("line.txt"), "{cause}");
    // The resolution gate ran and passed.
    let gates = task(&report, "b")["verify"].to_string();
    assert!(gates.contains("conflict_markers"), "{gates}");
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
    repo.assert_left_as(&before);
}
every_way!(
    a_conflict_is_resolved_by_the_tasks_own_agent,
    a_conflict_is_resolved_by_the_tasks_own_agent
);

/// A resolution that leaves the markers in fails its gates: the task is not merged, the
/// integration keeps only `a`.
fn a_resolution_that_leaves_markers_fails(runner: Runner) {
    let repo = line_repo(runner);
    let file = same_line_tasks(&repo, "  true");
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "resolve=1"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    // Its one round spent, it ends as `--on-conflict fail` would: a conflict.
    assert_eq!(st["b"], "conflict", "{st:?}");
    assert_eq!(task(&report, "b")["conflict_paths"], json!(["line.txt"]));
    let error = task(&report, "b")["error"].as_str().unwrap_or("");
    assert!(
        error.contains("conflict markers are left in: line.txt"),
        "{error}"
    );
    assert_eq!(
        rounds(&report, "b"),
        vec![
            ("agent".to_string(), "conflict".to_string()),
            ("resolve".to_string(), "verify_failed".to_string())
        ]
    );
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["line.txt"]),
        "top\nbase a\nend\n"
    );
    assert_eq!(String::from_utf8_lossy(&files["notes.txt"]), "notes\n");
}
every_way!(
    a_resolution_that_leaves_markers_fails,
    a_resolution_that_leaves_markers_fails
);

/// A resolve round whose own gate fails does not end the task while rounds remain: the next
/// round is told why (like a verify feedback turn), starts again with the conflict marked, and
/// its resolution is merged.
fn a_failed_resolve_round_gets_the_next_round(runner: Runner) {
    let repo = line_repo(runner);
    let resolution = r#"
  if printf '%s' "$FANOUT_FEEDBACK" | grep -q 'did not pass: .*conflict markers are left in: line.txt'; then
    grep -q '^<<<<<<< integration' line.txt || { echo 'no markers the second time' >&2; exit 6; }
    printf 'top\nbase a b\nend\n' > line.txt
  fi
"#;
    let file = same_line_tasks(&repo, resolution);
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "resolve=2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "merged", "{st:?}");
    assert_eq!(
        rounds(&report, "b"),
        vec![
            ("agent".to_string(), "conflict".to_string()),
            ("resolve".to_string(), "verify_failed".to_string()),
            ("resolve".to_string(), "merged".to_string())
        ],
        "{}",
        task(&report, "b")
    );
    let cause = task(&report, "b")["rounds"][2]["cause"]
        .as_str()
        .unwrap_or("");
    assert!(cause.contains("resolve round failed"), "{cause}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["line.txt"]),
        "top\nbase a b\nend\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&files["notes.txt"]),
        "notes\nb was here\n"
    );
}
every_way!(
    a_failed_resolve_round_gets_the_next_round,
    a_failed_resolve_round_gets_the_next_round
);

/// An agent that fails every resolve round uses them all, then the task ends a conflict (as
/// `--on-conflict fail`), nothing of it merged.
fn failed_resolve_rounds_end_as_a_conflict(runner: Runner) {
    let repo = line_repo(runner);
    let file = same_line_tasks(&repo, "  exit 9");
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "resolve=3"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "conflict", "{st:?}");
    let kinds: Vec<String> = rounds(&report, "b").into_iter().map(|r| r.0).collect();
    assert_eq!(kinds, vec!["agent", "resolve", "resolve", "resolve"]);
    let error = task(&report, "b")["error"].as_str().unwrap_or("");
    assert!(
        error.contains("its resolve rounds did not resolve it"),
        "{error}"
    );
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["line.txt"]),
        "top\nbase a\nend\n"
    );
    assert_eq!(String::from_utf8_lossy(&files["notes.txt"]), "notes\n");
}
both_ways!(
    failed_resolve_rounds_end_as_a_conflict,
    failed_resolve_rounds_end_as_a_conflict
);

/// `retry` stays as it was: a retry round that fails ends the task with that failure, no
/// further round, not turned into a conflict.
fn a_failed_retry_round_ends_the_task(runner: Runner) {
    let repo = line_repo(runner);
    let file = same_line_tasks(&repo, "  exit 9");
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "retry=3"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "failed", "{st:?}");
    let kinds: Vec<String> = rounds(&report, "b").into_iter().map(|r| r.0).collect();
    assert_eq!(kinds, vec!["agent", "retry"]);
}
both_ways!(
    a_failed_retry_round_ends_the_task,
    a_failed_retry_round_ends_the_task
);

/// The workspace of a resolve round applies the task file's `merge` rules as the integration
/// does: a `union` file and an `ours` file get no markers (the union and the integration's
/// version), only the file no rule covers is marked and named.
fn merge_rules_hold_in_the_marked_workspace(runner: Runner) {
    let repo = line_repo(runner);
    std::fs::write(repo.path.join("allow.txt"), "one\n").expect("write");
    std::fs::write(repo.path.join("log.txt"), "log\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "lists"]);
    let agent = r#"
if [ -n "${FANOUT_FEEDBACK+set}" ]; then
  grep -q '<<<<<<<' allow.txt log.txt && { echo 'a ruled file has markers' >&2; exit 3; }
  printf 'one\na\nb\n' | cmp -s - allow.txt || { echo 'allow.txt is not the union' >&2; exit 4; }
  printf 'log\na\n' | cmp -s - log.txt || { echo 'log.txt is not ours' >&2; exit 5; }
  printf '%s' "$FANOUT_FEEDBACK" | grep -q 'allow.txt\|log.txt' && { echo 'a ruled file is named' >&2; exit 6; }
  grep -q '^<<<<<<< integration' line.txt || { echo 'no markers' >&2; exit 7; }
  printf 'top\nbase a b\nend\n' > line.txt
  exit 0
fi
sed -i "2s/\$/ $FANOUT_TASK_ID/" line.txt
echo "$FANOUT_TASK_ID" >> allow.txt
echo "$FANOUT_TASK_ID" >> log.txt
"#;
    let file = repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "sh", "args": ["-c", agent]}},
        "defaults": {"agent": "e", "max_attempts": 1},
        "merge": [
            {"paths": ["allow.txt"], "strategy": "union"},
            {"paths": ["log.txt"], "strategy": "ours"}
        ],
        "tasks": [{"id": "a", "prompt": "append a"}, {"id": "b", "prompt": "append b"}]
    }));
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "resolve"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["b"], "merged", "{st:?} {}", task(&report, "b"));
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    let text = |p: &str| String::from_utf8_lossy(&files[p]).into_owned();
    assert_eq!(text("line.txt"), "top\nbase a b\nend\n");
    assert_eq!(text("allow.txt"), "one\na\nb\n");
    assert_eq!(text("log.txt"), "log\na\n");
}
every_way!(
    merge_rules_hold_in_the_marked_workspace,
    merge_rules_hold_in_the_marked_workspace
);

/// Without `resolve` a conflict stays a conflict: `fail` is still the default, and a resolve
/// round's agent that gives up (exits non-zero) leaves the task unmerged.
fn an_agent_that_cannot_resolve_leaves_the_task_out(runner: Runner) {
    let repo = line_repo(runner);
    let file = same_line_tasks(&repo, "  exit 9");
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(statuses(&report)["b"], "conflict");
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "resolve=2"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_ne!(st["b"], "merged", "{st:?}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["line.txt"]),
        "top\nbase a\nend\n"
    );
}
both_ways!(
    an_agent_that_cannot_resolve_leaves_the_task_out,
    an_agent_that_cannot_resolve_leaves_the_task_out
);

/// A shell project: `lib.sh` defines `greet`, `main.sh` calls it, and `tests/check.sh` runs
/// `main.sh` and every script under `extra/` (the verify command of the tasks and of the
/// integration).
pub(crate) fn greet_repo(runner: Runner) -> TestRepo {
    let repo = TestRepo::with_files(1).run_by(runner);
    let w = |p: &str, text: &str| {
        let path = repo.path.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    w("lib.sh", "greet() { echo hello; }\n");
    w("main.sh", ". ./lib.sh\ngreet\n");
    w(
        "tests/check.sh",
        "set -e\nsh main.sh\nfor f in extra/*.sh; do [ -e \"$f\" ] || continue; sh -e \"$f\" || { echo \"FAILED: $f\"; exit 1; }; done\necho OK\n",
    );
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "greet"]);
    repo
}

/// `rename` renames `greet` to `welcome` and its callers; `caller` adds a new script calling
/// `greet`. Each passes alone; merged, `caller` breaks the integration. On a repair round
/// (`FANOUT_FEEDBACK` set) `caller`'s agent runs `repair`.
pub(crate) fn rename_and_caller(repo: &TestRepo, repair: &str, rounds: u32) -> PathBuf {
    let agent = format!(
        r#"
case "$FANOUT_TASK_ID" in
rename) sed -i 's/greet/welcome/g' lib.sh main.sh ;;
caller)
  if [ -n "${{FANOUT_FEEDBACK+set}}" ]; then
    printf '%s' "$FANOUT_FEEDBACK" | grep -q 'FAILED: extra/wave.sh' || {{ echo 'the feedback lacks the output' >&2; exit 3; }}
    printf '%s' "$FANOUT_FEEDBACK" | grep -q 'failing command.*: sh tests/check.sh$' || {{ echo 'the feedback lacks the command' >&2; exit 3; }}
    grep -q welcome lib.sh || {{ echo 'not the integrated tree' >&2; exit 4; }}
{repair}
  else
    mkdir -p extra
    printf '. ./lib.sh\ngreet\n' > extra/wave.sh
  fi ;;
esac
"#
    );
    repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "sh", "args": ["-c", agent]}},
        "defaults": {"agent": "e", "max_attempts": 1, "verify": "sh tests/check.sh",
                     "protect": ["tests/"]},
        "integrate": {"verify": "sh tests/check.sh", "repair": rounds},
        "tasks": [
            {"id": "rename", "prompt": "rename greet to welcome"},
            {"id": "caller", "prompt": "add extra/wave.sh calling greet"}
        ]
    }))
}

/// The run's own event stream (`run-events.jsonl` in its folder).
fn run_events(report: &Value) -> Vec<Value> {
    let dir = report["run_dir"].as_str().expect("run_dir");
    let text = std::fs::read_to_string(std::path::Path::new(dir).join("run-events.jsonl"))
        .expect("run-events.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `caller` was taken out by the gate and repaired in its round 2: a `repaired` event after
/// its `ejected`, report.json, the terminal summary, JUnit and HTML say so, none calls it
/// taken out.
fn assert_repaired_in_round_2(
    report: &Value,
    out: &std::process::Output,
    junit: &std::path::Path,
    html: &std::path::Path,
) {
    let caller = task(report, "caller");
    assert_eq!(caller["repaired"]["round"], 2, "{caller}");
    let events = run_events(report);
    let at = |name: &str| {
        events
            .iter()
            .rposition(|e| e["event"] == name && e["task"] == "caller")
    };
    let (ejected, repaired) = (at("ejected"), at("repaired"));
    assert!(ejected.is_some(), "the first gate run took caller out");
    assert!(repaired > ejected, "{ejected:?} {repaired:?}");
    let event = &events[repaired.expect("repaired")];
    assert_eq!(event["round"], 2, "{event}");
    assert_eq!(event["commit"], caller["repaired"]["commit"], "{event}");
    let said = format!("{}{}", stdout(out), stderr(out));
    assert!(said.contains("merged (repaired in round 2)"), "{said}");
    assert!(!said.contains("took out caller"), "{said}");
    let junit = std::fs::read_to_string(junit).expect("junit");
    assert!(junit.contains("merged (repaired in round 2)"), "{junit}");
    assert!(!junit.contains("integration_failed"), "{junit}");
    let html = std::fs::read_to_string(html).expect("html");
    assert!(html.contains("repaired in round 2"), "html");
    assert!(
        !html.contains("s-integration_failed\">integration_failed"),
        "html"
    );
}

fn a_repair_round_fixes_the_integration(runner: Runner) {
    let repo = greet_repo(runner);
    let before = repo.snapshot();
    let file = rename_and_caller(&repo, "    sed -i 's/greet/welcome/' extra/wave.sh", 1);
    let (junit, html) = (
        repo.tmp.path().join("junit.xml"),
        repo.tmp.path().join("r.html"),
    );
    let (out, report) = repo.run(
        &file,
        &[
            "--no-readback",
            "--jobs",
            "2",
            "--junit",
            junit.to_str().expect("utf-8"),
            "--html",
            html.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_repaired_in_round_2(&report, &out, &junit, &html);
    let st = statuses(&report);
    assert_eq!(st["rename"], "merged", "{st:?}");
    assert_eq!(st["caller"], "merged", "{st:?}");
    let gate = &report["integration"];
    assert_eq!(gate["passed"], true, "{gate}");
    assert_eq!(gate["ejected"], json!([]), "{gate}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["extra/wave.sh"]),
        ". ./lib.sh\nwelcome\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&files["lib.sh"]),
        "welcome() { echo hello; }\n"
    );
    assert_eq!(
        rounds(&report, "caller"),
        vec![
            ("agent".to_string(), "integration_failed".to_string()),
            ("repair".to_string(), "merged".to_string())
        ],
        "{}",
        task(&report, "caller")
    );
    let cause = task(&report, "caller")["rounds"][1]["cause"]
        .as_str()
        .unwrap_or("");
    assert!(cause.contains("integration gate failed"), "{cause}");
    // The integration handed over passes the project's check.
    let clone = repo.tmp.path().join("check");
    git(
        &repo.path,
        &[
            "worktree",
            "add",
            "--quiet",
            "--detach",
            clone.to_str().unwrap(),
            branch,
        ],
    );
    let check = std::process::Command::new("sh")
        .arg("tests/check.sh")
        .current_dir(&clone)
        .output()
        .expect("sh");
    assert!(check.status.success(), "{}", show(&check));
    git(
        &repo.path,
        &["worktree", "remove", "--force", clone.to_str().unwrap()],
    );
    repo.assert_left_as_except_worktrees(&before);
}
every_way!(
    a_repair_round_fixes_the_integration,
    a_repair_round_fixes_the_integration
);

/// A repair that edits a protected test file (it makes the check skip the new script) is
/// refused as a gate failure naming the path; the task is taken out as without repair.
fn a_repair_editing_a_protected_test_is_refused(runner: Runner) {
    let repo = greet_repo(runner);
    let file = rename_and_caller(
        &repo,
        "    sed -i 's|for f in extra/\\*.sh|for f in none|' tests/check.sh",
        1,
    );
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["rename"], "merged", "{st:?}");
    assert_eq!(st["caller"], "integration_failed", "{st:?}");
    let error = task(&report, "caller")["error"].as_str().unwrap_or("");
    assert!(error.contains("tests/check.sh is protected"), "{error}");
    let gate = &report["integration"];
    assert_eq!(gate["passed"], true, "{gate}");
    assert_eq!(gate["ejected"], json!(["caller"]), "{gate}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert!(!files.contains_key("extra/wave.sh"), "{:?}", files.keys());
    assert!(String::from_utf8_lossy(&files["tests/check.sh"]).contains("extra/*.sh"));
}
every_way!(
    a_repair_editing_a_protected_test_is_refused,
    a_repair_editing_a_protected_test_is_refused
);

/// A repair that fixes the integration by editing a file neither its change touched nor its
/// `paths` cover (it renames the function back in `lib.sh`, `rename`'s file) is refused too,
/// naming the path.
fn a_repair_outside_its_own_paths_is_refused(runner: Runner) {
    let repo = greet_repo(runner);
    let file = rename_and_caller(
        &repo,
        "    printf 'welcome() { echo hello; }\\ngreet() { welcome; }\\n' > lib.sh",
        1,
    );
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["rename"], "merged", "{st:?}");
    assert_eq!(st["caller"], "integration_failed", "{st:?}");
    let error = task(&report, "caller")["error"].as_str().unwrap_or("");
    assert!(
        error.contains("lib.sh is neither a path the task changed nor one of its paths"),
        "{error}"
    );
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["lib.sh"]),
        "welcome() { echo hello; }\n"
    );
    assert!(!files.contains_key("extra/wave.sh"));
}
every_way!(
    a_repair_outside_its_own_paths_is_refused,
    a_repair_outside_its_own_paths_is_refused
);

/// Repairs that do not fix it: after N rounds the task is taken out as without repair, and the
/// integration handed over passes.
fn n_repairs_without_success_eject_the_task(runner: Runner) {
    let repo = greet_repo(runner);
    let file = rename_and_caller(&repo, "    echo '# still greet' >> extra/wave.sh", 2);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["rename"], "merged", "{st:?}");
    assert_eq!(st["caller"], "integration_failed", "{st:?}");
    let kinds: Vec<String> = rounds(&report, "caller").into_iter().map(|r| r.0).collect();
    assert_eq!(
        kinds,
        vec!["agent", "repair", "repair"],
        "{}",
        task(&report, "caller")
    );
    let gate = &report["integration"];
    assert_eq!(gate["passed"], true, "{gate}");
    assert_eq!(gate["ejected"], json!(["caller"]), "{gate}");
    let branch = report["integration_branch"].as_str().expect("branch");
    assert!(!repo.tree_files(branch).contains_key("extra/wave.sh"));
}
every_way!(
    n_repairs_without_success_eject_the_task,
    n_repairs_without_success_eject_the_task
);

/// A pinned Codex launcher (scripts/install-agents.sh).
fn codex_bin(version: &str) -> PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!(".agents/codex-{version}/node_modules/.bin/codex"));
    assert!(
        p.is_file(),
        "Codex {version} is not installed at {}: run scripts/install-agents.sh first",
        p.display()
    );
    p
}

/// Whether a request holds `needle` anywhere in its input (its earlier turns included).
fn request_holds(req: &crate::model_server::Request, needle: &str) -> bool {
    req.input().iter().any(|i| i.to_string().contains(needle))
}

/// A user CODEX_HOME pointing Codex at the scripted model.
fn codex_home(server: &crate::model_server::ModelServer) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tmp");
    std::fs::write(
        home.path().join("config.toml"),
        crate::model_server::codex_config_for_port(server.port()),
    )
    .expect("write");
    home
}

/// `fanout run` of `repo`'s tasks with the built-in `codex` profile resolved to `version`.
fn run_codex(
    repo: &TestRepo,
    file: &std::path::Path,
    version: &str,
    home: &std::path::Path,
    extra: &[&str],
) -> (std::process::Output, Value) {
    let report_file = repo.report_path();
    let _ = std::fs::remove_file(&report_file);
    let out = repo
        .fanout_command()
        .args(["run", "--repo"])
        .arg(&repo.path)
        .arg("--tasks")
        .arg(file)
        .args(["--jobs", "2", "--no-readback", "--quiet", "--report"])
        .arg(&report_file)
        .args(extra)
        .env("FANOUT_CODEX_BIN", codex_bin(version))
        .env("CODEX_HOME", home)
        .output()
        .expect("fanout runs");
    let report: Value = std::fs::read(&report_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out, report)
}

/// Lines of the task's event log of `kind` naming its thread.
fn thread_events(task_report: &Value, kind: &str) -> usize {
    let events = std::fs::read_to_string(task_report["event_log"].as_str().unwrap_or(""))
        .unwrap_or_default();
    let thread = task_report["agent"]["thread_id"].as_str().unwrap_or("?");
    events
        .lines()
        .filter(|l| l.contains(&format!("\"{kind}\"")) && l.contains(thread))
        .count()
}

/// Real Codex on the scripted model: `b`'s edit of the line `a` also edits conflicts; with
/// `resolve`, app-server (0.171.0) resumes b's own thread — the model's request holds b's
/// earlier turn (the output of its first command) — and mcp-server (0.153.4), whose
/// conversation ended with its process, gets a new session told b's earlier change; either way
/// the prompt shows both sides' hunks, and the fix merges both.
fn codex_resolves_a_conflict(version: &'static str, workspace: &'static str) {
    use crate::model_server::{ModelServer, Reply};
    let resumes = version != "0.153.4";
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let server = ModelServer::start(move |req| {
        if req.after_tool_output() {
            return Reply::Message("done".into());
        }
        let text = req.last_user_text();
        if text.contains("<<<<<<< integration") {
            let earlier = if resumes {
                request_holds(req, "FIRST-ROUND-OF-B")
            } else {
                text.contains("Your earlier change") && text.contains("+base b")
            };
            let hunks =
                text.contains("base a") && text.contains("base b") && text.contains("task a");
            log.lock()
                .expect("lock")
                .push(format!("earlier={earlier} hunks={hunks}"));
            return if earlier && hunks {
                Reply::Command("printf 'top\\nbase a b\\nend\\n' > line.txt".into())
            } else {
                Reply::Message("lost the thread".into())
            };
        }
        match req.command() {
            Some(cmd) => Reply::Command(cmd),
            None => Reply::Message("nothing to do".into()),
        }
    });
    let home = codex_home(&server);
    let repo = line_repo(Runner::Invoker);
    let file = repo.write_tasks(&json!({"version": 1, "tasks": [
        {"id": "a", "prompt": "CMD: sed -i 's/^base$/base a/' line.txt"},
        {"id": "b", "prompt": "CMD: sed -i 's/^base$/base b/' line.txt && echo FIRST-ROUND-OF-B"}
    ]}));
    let args = ["--on-conflict", "resolve", "--workspace", workspace];
    let (out, report) = run_codex(&repo, &file, version, home.path(), &args);
    let st = statuses(&report);
    assert_eq!(
        st.get("a").map(String::as_str),
        Some("merged"),
        "{}",
        show(&out)
    );
    let saw = seen.lock().expect("lock").clone();
    assert_eq!(
        st.get("b").map(String::as_str),
        Some("merged"),
        "{}\nmodel saw: {saw:?}",
        show(&out)
    );
    let b = task(&report, "b");
    assert_eq!(b["rounds"][0]["status"], "conflict", "{b}");
    assert_eq!(b["rounds"][1]["kind"], "resolve", "{b}");
    if resumes {
        assert_eq!(b["agent"]["resumed"], true, "{b}");
        // The thread b's first round started is the one resumed.
        assert_eq!(thread_events(b, "thread_started"), 1, "{b}");
        assert_eq!(thread_events(b, "thread_resumed"), 1, "{b}");
    } else {
        assert!(b["agent"]["resumed"].is_null(), "{b}");
    }
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["line.txt"]),
        "top\nbase a b\nend\n"
    );
    assert_eq!(saw, ["earlier=true hunks=true"]);
    // The task's CODEX_HOME was kept for the round and is gone with the run.
    let run_dir = PathBuf::from(report["run_dir"].as_str().expect("run dir"));
    assert!(!run_dir.join("scratch/b/codex-home").exists());
    assert!(repo.worktrees().is_empty(), "{:?}", repo.worktrees());
}

#[test]
fn codex_0171_resolves_on_its_own_thread_overlay() {
    codex_resolves_a_conflict("0.171.0", "overlay")
}

#[test]
fn codex_0171_resolves_on_its_own_thread_worktree() {
    codex_resolves_a_conflict("0.171.0", "worktree")
}

#[test]
fn codex_0153_resolves_in_a_new_session_told_its_earlier_change() {
    codex_resolves_a_conflict("0.153.4", "worktree")
}

/// Real Codex (app-server 0.171.0): `rename` and `caller` pass alone and break the merged
/// tree; bisection names `caller`, whose own thread gets the gate's output and fixes its call.
fn codex_repairs_the_integration(version: &'static str, workspace: &'static str) {
    use crate::model_server::{ModelServer, Reply};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let server = ModelServer::start(move |req| {
        if req.after_tool_output() {
            return Reply::Message("done".into());
        }
        let text = req.last_user_text();
        if text.contains("integration's verify command fails") {
            let earlier = request_holds(req, "FIRST-ROUND-OF-CALLER");
            let output = text.contains("FAILED: extra/wave.sh")
                && text
                    .contains("failing command (run in the workspace's root): sh tests/check.sh");
            log.lock()
                .expect("lock")
                .push(format!("earlier={earlier} output={output}"));
            return if earlier && output {
                Reply::Command("sed -i 's/greet/welcome/' extra/wave.sh".into())
            } else {
                Reply::Message("lost the thread".into())
            };
        }
        match req.command() {
            Some(cmd) => Reply::Command(cmd),
            None => Reply::Message("nothing to do".into()),
        }
    });
    let home = codex_home(&server);
    let repo = greet_repo(Runner::Invoker);
    let file = repo.write_tasks(&json!({
        "defaults": {"verify": "sh tests/check.sh", "protect": ["tests/"]},
        "integrate": {"verify": "sh tests/check.sh", "repair": 1},
        "tasks": [
            {"id": "rename", "prompt": "CMD: sed -i 's/greet/welcome/g' lib.sh main.sh"},
            {"id": "caller", "prompt": "CMD: mkdir -p extra && printf '. ./lib.sh\\ngreet\\n' > extra/wave.sh && echo FIRST-ROUND-OF-CALLER"}
        ]
    }));
    let (out, report) = run_codex(
        &repo,
        &file,
        version,
        home.path(),
        &["--workspace", workspace],
    );
    let st = statuses(&report);
    let saw = seen.lock().expect("lock").clone();
    assert_eq!(
        st.get("rename").map(String::as_str),
        Some("merged"),
        "{}",
        show(&out)
    );
    assert_eq!(
        st.get("caller").map(String::as_str),
        Some("merged"),
        "{}\nmodel saw: {saw:?}",
        show(&out)
    );
    assert_eq!(
        report["integration"]["passed"], true,
        "{}",
        report["integration"]
    );
    let caller = task(&report, "caller");
    if version == "0.153.4" {
        // mcp-server: a new session, told its earlier change, the command and its output.
        assert!(caller["agent"]["resumed"].is_null(), "{caller}");
    } else {
        assert_eq!(caller["agent"]["resumed"], true, "{caller}");
    }
    assert_eq!(caller["rounds"][1]["kind"], "repair", "{caller}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["extra/wave.sh"]),
        ". ./lib.sh\nwelcome\n"
    );
    assert_eq!(saw, ["earlier=true output=true"]);
}

#[test]
fn codex_0171_repairs_the_integration_on_its_own_thread_overlay() {
    codex_repairs_the_integration("0.171.0", "overlay")
}

#[test]
fn codex_0171_repairs_the_integration_on_its_own_thread_worktree() {
    codex_repairs_the_integration("0.171.0", "worktree")
}

/// mcp-server (≤ 0.153) cannot continue the conversation: the repair is a new session whose
/// prompt holds the task, its earlier change, the failing command and its output's tail.
#[test]
fn codex_0153_repairs_in_a_new_session_told_the_failing_command() {
    codex_repairs_the_integration("0.153.4", "worktree")
}

/// `fanout validate` knows `on_conflict: resolve=N`, `protect` (task and defaults) and
/// `integrate.repair`, and names what is wrong in them.
#[test]
fn validate_knows_resolve_repair_and_protect() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "true"}},
        "defaults": {"agent": "e", "on_conflict": "resolve=2", "protect": ["tests/", "*.cfg"]},
        "integrate": {"verify": "true", "repair": 2},
        "tasks": [{"id": "a", "prompt": "x", "protect": ["Makefile"]}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let file = repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "true"}},
        "defaults": {"agent": "e", "on_conflict": "resolve=0"},
        "integrate": {"verify": "true", "repair": 11},
        "tasks": [{"id": "a", "prompt": "x", "protect": ["[broken"]}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    for needle in [
        "$.defaults.on_conflict",
        "$.integrate.repair",
        "$.tasks[0].protect[0]",
    ] {
        assert!(err.contains(needle), "{needle} missing in\n{err}");
    }
}
