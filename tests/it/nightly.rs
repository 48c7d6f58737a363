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
    w(&path.join("README.md"), "# inventory\n\nStock keeping for small shops.\n");
    w(&path.join(".gitignore"), "__pycache__/\n*.pyc\n.env\n.venv/\nbuild/\n");
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
    assert!(text.contains("import round_money") && !text.contains("old_round"), "{text}");
    // Out of attempts because its gate kept failing: verify_failed with the gate's output.
    let t = task(&report, "line-01");
    assert_eq!(t["status"], "verify_failed", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(error.contains("expected round_money everywhere"), "{error}");
    assert!(!error.starts_with("the agent exited"), "{error}");
    assert!(error.contains("exit code 2"), "the failed round is noted: {error}");
    let table = stdout(&out);
    assert!(
        table.contains("line-01: verification failed after 1 attempt(s)"),
        "{table}"
    );
}
