//! Nightly codemods on generated, realistic repositories: exec codemods and their feedback
//! rounds, per-task TMPDIR, HOME and caches, and the environment of verify commands.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::*;

/// A Python project like the ones nightly codemods run on: a package of `modules` modules
/// (each with a few functions using a deprecated helper), a `unittest` suite, packaging and
/// tooling files, at `subdir` below the temp folder (deep paths on purpose, when asked).
fn python_project(modules: usize, subdir: &str) -> TestRepo {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join(subdir);
    let pkg = path.join("src/inventory");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    std::fs::create_dir_all(path.join("tests")).expect("mkdir");
    let w = |p: &Path, text: &str| std::fs::write(p, text).expect("write");
    w(
        &path.join("pyproject.toml"),
        "[project]\nname = \"inventory\"\nversion = \"0.3.1\"\nrequires-python = \">=3.9\"\n\n[tool.setuptools.packages.find]\nwhere = [\"src\"]\n",
    );
    w(
        &path.join("README.md"),
        "# inventory\n\nStock keeping for small shops.\n",
    );
    w(
        &path.join(".gitignore"),
        "__pycache__/\n*.pyc\n.env\n.venv/\nbuild/\n",
    );
    w(
        &pkg.join("__init__.py"),
        "\"\"\"Stock keeping.\"\"\"\n\n__version__ = \"0.3.1\"\n",
    );
    w(
        &pkg.join("util.py"),
        "\"\"\"Helpers shared by the modules.\"\"\"\n\n\ndef old_round(value, places=2):\n    \"\"\"Deprecated: use round_money.\"\"\"\n    return round(value, places)\n\n\ndef round_money(value):\n    return round(value, 2)\n",
    );
    let mut test_imports = String::from("import unittest\n\n");
    for m in 0..modules {
        let body = format!(
            "\"\"\"Module {m}: pricing of product line {m}.\"\"\"\n\nfrom inventory.util import old_round\n\nRATE_{m} = 1.{m:02}\n\n\ndef price_{m}(units, unit_cost):\n    \"\"\"Price of `units` items.\"\"\"\n    return old_round(units * unit_cost * RATE_{m})\n\n\ndef discount_{m}(total):\n    if total > 100:\n        return old_round(total * 0.9)\n    return total\n"
        );
        w(&pkg.join(format!("line_{m:02}.py")), &body);
        test_imports.push_str(&format!("from inventory.line_{m:02} import price_{m}\n"));
    }
    test_imports.push_str("\n\nclass PricingTest(unittest.TestCase):\n");
    for m in 0..modules {
        test_imports.push_str(&format!(
            "    def test_price_{m}(self):\n        self.assertGreaterEqual(price_{m}(2, 3.5), 7.0)\n\n"
        ));
    }
    w(&path.join("tests/test_pricing.py"), &test_imports);
    w(&path.join("tests/__init__.py"), "");
    git(&path, &["init", "--quiet", "--initial-branch=main"]);
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "--quiet", "-m", "inventory 0.3.1"]);
    TestRepo {
        tmp,
        path,
        runner: Runner::Invoker,
    }
}

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

fn exec_agent(script: &str) -> Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

/// A codemod that reads its instructions from the prompt: `rename OLD NEW FILE`. On a
/// feedback round it must still get them (the prompt unchanged), with the feedback apart.
const CODEMOD: &str = r#"
set -e
set -- $FANOUT_PROMPT
[ "$1" = rename ] || { echo "unknown instruction: $1" >&2; exit 2; }
if [ "$FANOUT_ATTEMPT" = 1 ]; then
  [ -z "${FANOUT_FEEDBACK+set}" ] || exit 7
  # First attempt: a sloppy rename that leaves the import behind.
  sed -i "s/return $2(/return $3(/" "$4"
else
  printf '%s' "$FANOUT_FEEDBACK" | grep -q 'command gate' || exit 8
  grep -q 'command gate' "$FANOUT_FEEDBACK_FILE" || exit 9
  # stdin: the prompt, then the feedback.
  head -n 1 | grep -q "^rename $2" || exit 10
  sed -i "s/import $2/import $3/" "$4"
fi
"#;

#[test]
fn exec_codemods_get_their_prompt_again_and_the_feedback_apart() {
    let repo = python_project(3, "repo");
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "codemod", "verify": "PYTHONPATH=src python3 -m unittest -q 2>&1"},
        "agents": {
            "codemod": exec_agent(CODEMOD),
            // A codemod that knows no feedback: a second run exits 2.
            "once": exec_agent("[ \"$FANOUT_ATTEMPT\" = 1 ] || exit 2; sed -i s/old_round/round_money/g src/inventory/line_01.py")
        },
        "tasks": [
            {"id": "line-00", "prompt": "rename old_round round_money src/inventory/line_00.py",
             "paths": ["src/inventory/line_00.py"]},
            // A gate that keeps failing, and a feedback round the codemod fails.
            {"id": "line-01", "prompt": "rename old_round round_money src/inventory/line_01.py",
             "paths": ["src/inventory/line_01.py"], "agent": "once",
             "verify": "echo 'expected round_money everywhere' >&2; exit 1"}
        ]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let t = task(&report, "line-00");
    assert_eq!(t["status"], "merged", "{t}");
    assert_eq!(t["attempts"], 2, "{t}");
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    let text = String::from_utf8_lossy(&merged["src/inventory/line_00.py"]).into_owned();
    assert!(
        text.contains("import round_money") && !text.contains("old_round"),
        "{text}"
    );
    // Out of attempts because its gate kept failing: verify_failed with the gate's output.
    let t = task(&report, "line-01");
    assert_eq!(t["status"], "verify_failed", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(error.contains("expected round_money everywhere"), "{error}");
    assert!(!error.starts_with("the agent exited"), "{error}");
    assert!(
        error.contains("exit code 2"),
        "the failed round is noted: {error}"
    );
    let table = stdout(&out);
    assert!(
        table.contains("line-01: verification failed after 1 attempt(s)"),
        "{table}"
    );
}

/// `fanout run` with HOME set to `home` and the git configuration of that home in effect
/// (no GIT_CONFIG_GLOBAL), as on a developer's machine or a CI runner.
fn run_with_home(
    repo: &TestRepo,
    tasks: &Path,
    home: &Path,
    extra: &[&str],
) -> (std::process::Output, Value) {
    let report = repo.report_path();
    let _ = std::fs::remove_file(&report);
    let out = std::process::Command::new(fanout_bin())
        .arg("run")
        .arg("--tasks")
        .arg(tasks)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .arg("--repo")
        .arg(&repo.path)
        .env("HOME", home)
        .env_remove("GIT_CONFIG_GLOBAL")
        .env_remove("XDG_CONFIG_HOME")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        .output()
        .expect("fanout runs");
    let value = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out, value)
}

/// A verify command that binds an AF_UNIX socket in `$TMPDIR` (like a test server) works
/// whatever the repository's path and the task's id: TMPDIR is short.
#[test]
fn a_verify_command_binds_a_unix_socket_in_tmpdir_from_a_deep_repository() {
    let deep = format!(
        "{}/{}/{}",
        "workspace-".repeat(8),
        "clients-".repeat(10),
        "inventory"
    );
    let repo = python_project(2, &deep);
    let id = format!("migrate-{}", "pricing-line-".repeat(4))
        .chars()
        .take(60)
        .collect::<String>();
    assert_eq!(id.len(), 60);
    assert!(repo.path.as_os_str().len() > 150, "{}", repo.path.display());
    let bind = "import os, socket; p = os.path.join(os.environ['TMPDIR'], 'test-server.sock'); \
                s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen(1); \
                open('socket-path.txt', 'w').write(p); print('bound', p, len(p))";
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "codemod"},
        "agents": {"codemod": exec_agent(
            "sed -i s/old_round/round_money/g src/inventory/line_00.py; echo \"$TMPDIR\" > tmpdir.txt")},
        "tasks": [{
            "id": id,
            "prompt": "use round_money in line_00",
            "verify": ["python3", "-c", bind]
        }]
    }));
    let before = repo.snapshot();
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let t = task(&report, &id);
    assert_eq!(t["status"], "merged", "{t}");
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    let tmpdir = String::from_utf8_lossy(&merged["tmpdir.txt"])
        .trim()
        .to_string();
    assert!(tmpdir.len() < 40, "TMPDIR is short: {tmpdir}");
    // Removed with the task, and the run's temp folder with the run.
    assert!(!Path::new(&tmpdir).exists(), "{tmpdir} is left");
    assert!(
        !Path::new(&tmpdir).parent().unwrap().exists(),
        "the run's temp folder is left"
    );
    let run_dir = Path::new(report["run_dir"].as_str().unwrap());
    assert!(std::fs::symlink_metadata(run_dir.join("tmp")).is_err());
    // The verify command's output is in its log.
    let log = std::fs::read_to_string(run_dir.join("logs").join(format!("{id}.verify.log")))
        .unwrap_or_default();
    assert!(log.contains("bound "), "verify log: {log:?}");
    repo.assert_left_as(&before);
}

/// Agents and verify commands get a private, writable HOME with XDG folders and the user's
/// git identity, and named caches that outlive tasks and runs (written only by `caches_fill`).
#[test]
fn tasks_get_a_private_home_and_shared_caches() {
    let repo = python_project(2, "repo");
    let home = repo.tmp.path().join("user-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Nightly Bot\n\temail = nightly@example.invalid\n",
    )
    .unwrap();
    let script = r#"
set -e
touch "$HOME/.probe" "$XDG_CONFIG_HOME/probe" "$XDG_CACHE_HOME/probe" "$XDG_DATA_HOME/probe"
git config --global user.name > identity-$FANOUT_TASK_ID.txt
echo "$FANOUT_TASK_ID" > "$PIP_CACHE_DIR/seen-$FANOUT_TASK_ID"
ls "$PIP_CACHE_DIR" > pip-$FANOUT_TASK_ID.txt
echo x > "$TOOL_CACHE/tool-$FANOUT_TASK_ID"
"#;
    let file = repo.write_tasks(&json!({
        "caches": ["pip", {"name": "tool", "env": ["TOOL_CACHE"]}],
        "defaults": {"agent": "sh",
                     "verify": "touch \"$HOME/verify-was-here\" \"$PIP_CACHE_DIR/verify-$FANOUT_TASK_ID\""},
        "agents": {"sh": exec_agent(script)},
        "tasks": [
            {"id": "first", "prompt": "x"},
            {"id": "second", "prompt": "x", "depends_on": ["first"]}
        ]
    }));
    let (out, report) = run_with_home(&repo, &file, &home, &["--no-readback", "--jobs", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    let text = |p: &str| String::from_utf8_lossy(&merged[p]).into_owned();
    assert_eq!(text("identity-first.txt"), "Nightly Bot\n");
    // Each task sees the caches through its own layer: nothing the first task (or its
    // verify command) wrote reaches the second, nor the caches themselves.
    let seen = text("pip-second.txt");
    assert_eq!(seen, "seen-second\n");
    let caches = repo.path.join(".git/fanout/caches");
    assert!(caches.join("pip").is_dir() && caches.join("tool").is_dir());
    assert!(!caches.join("pip/seen-second").exists());
    assert!(!caches.join("tool/tool-first").exists());
    // The user's own home was not written.
    let mut entries: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, [".gitconfig"]);
}

/// A codemod over every module of a 40-module package from one template: `validate --expand`
/// shows the 40 tasks, the run merges them all, and a clash of generated ids is an error
/// naming both sources.
#[test]
fn a_template_expands_over_forty_tracked_files() {
    let repo = python_project(40, "repo");
    // An untracked module is not a task.
    std::fs::write(repo.path.join("src/inventory/line_99.py"), "x = 1\n").unwrap();
    // The codemod takes its file from the prompt's last word.
    let codemod =
        "set -- $FANOUT_PROMPT; eval \"f=\\${$#}\"; sed -i s/old_round/round_money/g \"$f\"";
    let file = repo.write_tasks(&json!({
        "defaults": {"agent": "codemod", "max_attempts": 1},
        "agents": {"codemod": exec_agent(codemod)},
        "tasks": [{
            "id": "round-{stem}",
            "prompt": "Use round_money instead of old_round in {path}",
            "paths": ["{path}"],
            "verify": "python3 -m py_compile {path}",
            "for_each": {"files": "src/inventory/line_*.py"}
        }]
    }));
    let out = repo.fanout(&["validate", "--expand", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let listing = stdout(&out);
    let ids: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split('\t').next().filter(|_| l.contains('\t')))
        .collect();
    assert_eq!(ids.len(), 40, "{listing}");
    assert_eq!(ids[0], "round-line_00");
    assert!(listing.contains("[src/inventory/line_39.py]"), "{listing}");
    assert!(listing.contains("valid — 40 task(s)"), "{listing}");

    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = statuses(&report);
    assert_eq!(st.len(), 40);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let merged = repo.tree_files(report["integration_branch"].as_str().unwrap());
    for m in 0..40 {
        let text =
            String::from_utf8_lossy(&merged[&format!("src/inventory/line_{m:02}.py")]).into_owned();
        assert!(!text.contains("old_round"), "line_{m:02}: {text}");
    }

    // Ids that do not tell the files apart: an error naming both sources.
    let clash = repo.write_tasks(&json!({
        "agents": {"codemod": exec_agent("true")},
        "tasks": [{"id": "fix-{dir}", "prompt": "fix {path}", "agent": "codemod",
                   "for_each": {"files": "src/inventory/line_0*.py"}}]
    }));
    let out = repo.fanout(&["validate", "--expand", "--tasks", clash.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("generated id \"fix-src-inventory\"")
            && err.contains("src/inventory/line_01.py")
            && err.contains("src/inventory/line_00.py"),
        "{err}"
    );
}
