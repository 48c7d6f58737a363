//! The integration gate (`integrate` in the task file), retry on conflict, and integration
//! commits that say what they bring.

use serde_json::{json, Value};

use crate::support::*;

/// A small Python package `shop` with a `unittest` suite; `python3 -m unittest` at the top
/// passes.
fn shop_project() -> TestRepo {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("repo");
    std::fs::create_dir_all(path.join("shop")).expect("mkdir");
    std::fs::create_dir_all(path.join("tests")).expect("mkdir");
    let w = |p: &str, text: &str| std::fs::write(path.join(p), text).expect("write");
    w(".gitignore", "__pycache__/\n*.pyc\n");
    w("shop/__init__.py", "");
    w(
        "shop/pricing.py",
        "def total(amount, rate=1.0):\n    return round(amount * rate, 2)\n",
    );
    w("tests/__init__.py", "");
    w(
        "tests/test_pricing.py",
        "import unittest\n\nfrom shop.pricing import total\n\n\nclass PricingTest(unittest.TestCase):\n    def test_total(self):\n        self.assertEqual(total(10), 10)\n",
    );
    git(&path, &["init", "--quiet", "--initial-branch=main"]);
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "--quiet", "-m", "shop"]);
    TestRepo {
        tmp,
        path,
        runner: Runner::Invoker,
    }
}

/// An exec agent that runs its prompt as a shell script (its first line a `#` comment).
fn script_agent() -> Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]})
}

/// A task that adds a module of its own and a test of it.
fn harmless(id: &str) -> Value {
    json!({"id": id, "prompt": format!(
        "# add module {id}\nprintf 'def value():\\n    return 1\\n' > shop/m_{id}.py\nprintf 'import unittest\\nfrom shop.m_{id} import value\\n\\nclass T(unittest.TestCase):\\n    def test_value(self):\\n        self.assertEqual(value(), 1)\\n' > tests/test_m_{id}.py"
    )})
}

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// `python3 -m unittest` in a fresh clone of `branch`.
fn unittest_on(repo: &TestRepo, branch: &str) -> std::process::Output {
    let dir = repo
        .tmp
        .path()
        .join(format!("check-{}", branch.replace('/', "-")));
    let clone = std::process::Command::new("git")
        .args(["clone", "--quiet", "--branch", branch])
        .arg(&repo.path)
        .arg(&dir)
        .output()
        .expect("git clone");
    assert!(clone.status.success(), "{}", show(&clone));
    std::process::Command::new("python3")
        .args(["-m", "unittest", "-q"])
        .current_dir(&dir)
        .output()
        .expect("python3 runs")
}

fn have_python() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A verify command that fails on its first run only (a timing test that flaked): the
/// failure is confirmed before anyone is blamed, does not happen again, and every task merges.
#[test]
fn a_flaky_gate_is_confirmed_and_blames_nobody() {
    if !have_python() {
        eprintln!("skipped: no python3");
        return;
    }
    let repo = shop_project();
    // Counts its runs outside the checkout: only possible unconfined (and, as root, where the
    // agent uid may write).
    let counter_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        counter_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let counter = counter_dir.path().join("gate-runs");
    let verify = format!(
        "n=$(cat '{c}' 2>/dev/null || echo 0); echo $((n+1)) > '{c}'; \
         if [ \"$n\" = 0 ]; then echo 'test_timing FAILED: took 2.1 s' >&2; exit 1; fi; \
         python3 -m unittest -q",
        c = counter.display()
    );
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "script"},
        "agents": {"script": script_agent()},
        "integrate": {"verify": ["sh", "-c", verify], "timeout_secs": 120},
        "tasks": [harmless("f1"), harmless("f2"), harmless("f3")]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--sandbox", "off", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    for id in ["f1", "f2", "f3"] {
        assert_eq!(st[id], "merged", "{id}: {st:?}");
    }
    let gate = &report["integration"];
    assert_eq!(gate["passed"], true, "{gate}");
    assert_eq!(gate["ejected"], json!([]), "{gate}");
    assert_eq!(gate["flaky"], 1, "{gate}");
    // The failing full run, two bisection steps, the confirmation that passed, the full run again.
    assert_eq!(gate["verify_runs"], 5, "{gate}");
    assert!(
        stderr(&out).contains("flaky"),
        "the terminal says the gate was flaky: {}",
        show(&out)
    );
    assert_eq!(
        unittest_on(
            &repo,
            &format!(
                "fanout/{}/merged",
                report["run_id"].as_str().expect("run id")
            )
        )
        .status
        .code(),
        Some(0)
    );
}

#[test]
fn the_gate_ejects_one_of_two_tasks_that_break_the_suite_together() {
    if !have_python() {
        eprintln!("skipped: no python3");
        return;
    }
    let repo = shop_project();
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "script", "verify": ["python3", "-m", "unittest", "-q"]},
        "agents": {"script": script_agent()},
        "integrate": {"verify": "python3 -m unittest -q", "timeout_secs": 120},
        "tasks": [
            harmless("h1"),
            {"id": "rename-kw", "prompt": "# rename the rate keyword of total to factor\nsed -i 's/rate/factor/g' shop/pricing.py"},
            harmless("h2"),
            harmless("h3"),
            {"id": "add-call", "prompt": "# add invoices, priced with a rate\nprintf 'from shop.pricing import total\\n\\ndef invoice(amount):\\n    return total(amount, rate=1.5)\\n' > shop/invoice.py\nprintf 'import unittest\\nfrom shop.invoice import invoice\\n\\nclass T(unittest.TestCase):\\n    def test_invoice(self):\\n        self.assertEqual(invoice(10), 15)\\n' > tests/test_invoice.py"},
            harmless("h4"),
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(
        st["add-call"],
        "integration_failed",
        "{st:?}\n{}",
        show(&out)
    );
    for id in ["h1", "rename-kw", "h2", "h3", "h4"] {
        assert_eq!(st[id], "merged", "{id}: {st:?}");
    }
    let gate = &report["integration"];
    assert_eq!(gate["ejected"], json!(["add-call"]), "{gate}");
    assert_eq!(gate["passed"], true, "{gate}");
    // The full integration, three bisection steps over six tasks, the confirmation of the
    // failing prefix, the recheck.
    assert_eq!(gate["verify_runs"], 6, "{gate}");
    let t = task(&report, "add-call");
    assert!(
        t["error"].as_str().unwrap_or("").contains("factor")
            || t["error"].as_str().unwrap_or("").contains("rate"),
        "{t}"
    );
    assert!(
        t["verify"].as_array().is_some_and(|g| g
            .iter()
            .any(|g| g["gate"] == "integration" && g["passed"] == false)),
        "{t}"
    );
    let branch = report["integration_branch"].as_str().expect("branch");
    let check = unittest_on(&repo, branch);
    assert!(check.status.success(), "{}", show(&check));
    // Integration commits say what they bring.
    let log = git_text(&repo.path, &["log", "--format=%B", branch]);
    assert!(
        log.contains("fanout: merge rename-kw \u{2014} # rename the rate keyword"),
        "{log}"
    );
    assert!(log.contains("Fanout-Task: h4"), "{log}");
    assert!(
        log.contains(&format!(
            "Fanout-Run: {}",
            report["run_id"].as_str().expect("run id")
        )),
        "{log}"
    );
    // No checkout of the gate is left behind.
    assert!(
        repo.worktrees().iter().all(|w| !w.contains("integration")),
        "{:?}",
        repo.worktrees()
    );
    assert!(
        repo.branches()
            .iter()
            .all(|b| !b.contains("integration-check")),
        "{:?}",
        repo.branches()
    );
}

#[test]
fn a_passing_gate_leaves_everything_merged_and_squash_makes_one_commit() {
    if !have_python() {
        eprintln!("skipped: no python3");
        return;
    }
    let repo = shop_project();
    let base = repo.head();
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "script"},
        "agents": {"script": script_agent()},
        "integrate": {"verify": ["python3", "-m", "unittest", "-q"]},
        "tasks": [harmless("h1"), harmless("h2"), harmless("h3")]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--squash"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let gate = &report["integration"];
    assert_eq!(gate["passed"], true, "{gate}");
    assert_eq!(gate["verify_runs"], 1, "{gate}");
    assert_eq!(gate["ejected"], json!([]), "{gate}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let count = git_text(
        &repo.path,
        &["rev-list", "--count", &format!("{base}..{branch}")],
    );
    assert_eq!(count.trim(), "1", "squashed into one commit");
    let msg = git_text(&repo.path, &["log", "-1", "--format=%B", branch]);
    assert!(msg.starts_with("fanout: merge 3 tasks of run "), "{msg}");
    for id in ["h1", "h2", "h3"] {
        assert!(msg.contains(&format!("- {id}: # add module {id}")), "{msg}");
        assert!(msg.contains(&format!("Fanout-Task: {id}")), "{msg}");
    }
    let files = repo.tree_files(branch);
    assert!(files.contains_key("shop/m_h3.py"), "{:?}", files.keys());
}

#[test]
fn a_gate_command_that_cannot_start_fails_before_anything_runs() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "true"}},
        "defaults": {"agent": "e"},
        "integrate": {"verify": ["fanout-no-such-gate-program"]},
        "tasks": [{"id": "a", "prompt": "x"}]
    }));
    let (out, _) = repo.run(&file, &["--no-readback"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stderr(&out).contains("integrate.verify: cannot find its command"),
        "{}",
        show(&out)
    );
    assert!(
        repo.branches().iter().all(|b| !b.starts_with("fanout/")),
        "{:?}",
        repo.branches()
    );
}

/// Two tasks append their id to the same line, each from the content it finds; on a retry the
/// feedback must name the conflicting path.
fn same_line_tasks(repo: &TestRepo) -> std::path::PathBuf {
    std::fs::write(repo.path.join("line.txt"), "base\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "line"]);
    let agent = r#"
if [ -n "${FANOUT_FEEDBACK+set}" ]; then
  printf '%s' "$FANOUT_FEEDBACK" | grep -q 'line.txt' || exit 3
fi
sed -i "1s/\$/ $FANOUT_TASK_ID/" line.txt
"#;
    repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "sh", "args": ["-c", agent]}},
        "defaults": {"agent": "e"},
        "tasks": [{"id": "a", "prompt": "append a"}, {"id": "b", "prompt": "append b"}]
    }))
}

#[test]
fn a_conflicting_task_runs_again_from_the_integration_with_on_conflict_retry() {
    let repo = TestRepo::with_files(1);
    let file = same_line_tasks(&repo);
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "conflict", "{st:?}");

    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--jobs", "2", "--on-conflict", "retry"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st["a"], "merged", "{st:?}");
    assert_eq!(st["b"], "merged", "{st:?}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    assert_eq!(
        String::from_utf8_lossy(&files["line.txt"]),
        "base a b\n",
        "both edits, in order"
    );
    // The retried task started from the integration, not from the base.
    let b = task(&report, "b");
    assert_ne!(b["started_from"], report["base"], "{b}");
}
