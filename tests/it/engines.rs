//! The engines a sharded run goes out to: the example GitHub Actions workflows pass
//! actionlint, the Kubernetes manifests pass kubernetes-validate, and a real one-node Slurm
//! (Debian's slurm-wlm and munge, started by scripts/slurm-up.sh) runs the example array job
//! and its dependent combine to the same integration tree as one unsharded run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::support::*;

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A checker that scripts/install-engines.sh puts into `.agents/checkers`.
fn checker(name: &str) -> PathBuf {
    let p = project().join(".agents/checkers/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-engines.sh (it installs the example checkers into .agents/checkers)",
        p.display()
    );
    p
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

fn yaml(rel: &str) -> serde_yaml::Value {
    let p = project().join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_example_workflows_pass_actionlint() {
    for rel in [
        "examples/shards/github-actions.yml",
        "examples/nightly/github-actions.yml",
    ] {
        let out = Command::new(checker("actionlint"))
            .arg("-no-color")
            .arg(project().join(rel))
            .output()
            .expect("actionlint runs");
        assert!(out.status.success(), "{rel}: {}", show(&out));
    }
}

#[test]
fn actionlint_really_checks_what_it_is_given() {
    // A workflow that uses an undefined matrix key and a job that does not exist must fail,
    // so a passing example means something.
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    needs: nowhere\n    steps:\n      - run: echo ${{ matrix.shard }}\n",
    )
    .expect("write");
    let out = Command::new(checker("actionlint"))
        .arg("-no-color")
        .arg(&bad)
        .output()
        .expect("actionlint runs");
    assert!(!out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("nowhere") && text.contains("matrix"),
        "{text}"
    );
}

#[test]
fn the_sharded_workflow_runs_a_matrix_of_shards_then_one_combine_that_gates_the_pull_request() {
    let doc = yaml("examples/shards/github-actions.yml");
    let shard = &doc["jobs"]["shard"];
    let shards = shard["strategy"]["matrix"]["shard"]
        .as_sequence()
        .expect("a matrix of shards");
    let count = doc["env"]["SHARDS"]
        .as_str()
        .and_then(|s| s.parse::<usize>().ok())
        .expect("SHARDS");
    assert_eq!(shards.len(), count, "one matrix entry per shard");
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s.as_u64(), Some(i as u64 + 1), "1-based shard numbers");
    }
    let run_of = |job: &serde_yaml::Value, step: &str| -> String {
        job["steps"]
            .as_sequence()
            .expect("steps")
            .iter()
            .find(|s| s["name"].as_str() == Some(step))
            .unwrap_or_else(|| panic!("no step {step}"))["run"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let run = run_of(shard, "Run this shard");
    for part in [
        "fanout run",
        "--shard \"$SHARD/$SHARDS\"",
        "--run-id",
        "--base",
        "--bundle",
    ] {
        assert!(run.contains(part), "{part} in {run}");
    }
    let combine = &doc["jobs"]["combine"];
    assert_eq!(combine["needs"].as_str(), Some("shard"));
    assert_eq!(combine["if"].as_str(), Some("always()"));
    let run = run_of(combine, "Combine");
    for part in [
        "fanout combine",
        "--from bundles/",
        "--junit",
        "--html",
        "--report",
    ] {
        assert!(run.contains(part), "{part} in {run}");
    }
    let pr = combine["steps"]
        .as_sequence()
        .expect("steps")
        .iter()
        .find(|s| s["name"].as_str() == Some("Open a pull request"))
        .expect("a pull request step");
    assert!(pr["if"]
        .as_str()
        .unwrap_or_default()
        .contains("exit_code == '0'"));
}

#[test]
fn the_kubernetes_manifests_pass_kubernetes_validate() {
    let dir = project().join("examples/shards/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/shards/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let out = Command::new(checker("kubernetes-validate"))
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    assert!(out.status.success(), "{}", show(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(
            said.contains(name) && said.contains("passed"),
            "{name}: {said}"
        );
    }
    // And it refuses a field Kubernetes does not know, so passing means something.
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.yaml");
    let text = std::fs::read_to_string(dir.join("shards-job.yaml")).expect("read");
    std::fs::write(&bad, text.replace("completionMode:", "completionMod:")).expect("write");
    let out = Command::new(checker("kubernetes-validate"))
        .arg("--strict")
        .arg(&bad)
        .output()
        .expect("kubernetes-validate runs");
    assert!(!out.status.success(), "{}", show(&out));
}

#[test]
fn the_indexed_job_runs_as_many_shards_as_it_tells_fanout() {
    let doc = yaml("examples/shards/kubernetes/shards-job.yaml");
    assert_eq!(doc["spec"]["completionMode"].as_str(), Some("Indexed"));
    let completions = doc["spec"]["completions"].as_u64().expect("completions");
    let script = doc["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .expect("the shard's script");
    assert!(
        script.contains(&format!("--shard-from-env {completions}")),
        "{script}"
    );
    assert!(script.contains("--bundle \"/bundles/$RUN_ID/"), "{script}");
    let combine = yaml("examples/shards/kubernetes/combine-job.yaml");
    let script = combine["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .expect("the combine's script");
    assert!(
        script.contains("fanout combine") && script.contains("/bundles/\"$RUN_ID\"/*.bundle"),
        "{script}"
    );
}

/// Starts (or finds running) the one-node Slurm of scripts/slurm-up.sh; its SLURM_CONF.
fn slurm() -> String {
    assert!(
        is_root(),
        "the Slurm test starts slurmctld and slurmd, which needs root: run the suite as root (CI does)"
    );
    let out = Command::new("bash")
        .arg(project().join("scripts/slurm-up.sh"))
        .output()
        .expect("scripts/slurm-up.sh runs");
    assert!(
        out.status.success(),
        "scripts/slurm-up.sh could not start Slurm (it installs Debian's slurm-wlm and munge): {}",
        show(&out)
    );
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("export SLURM_CONF="))
        .map(str::to_string)
        .expect("slurm-up.sh prints SLURM_CONF")
}

/// Twelve tasks, each appending to its own file; two `depends_on` chains and one task with
/// nothing to change.
fn twelve_tasks(dir: &Path) -> PathBuf {
    let agent =
        json!({"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]});
    let mut tasks = Vec::new();
    for i in 0..12 {
        let id = format!("t{i:02}");
        let prompt = if i == 11 {
            "true".to_string()
        } else {
            format!("echo 'sharded {id}' >> src/file_{i:02}.txt")
        };
        let mut t = json!({"id": id, "prompt": prompt});
        match i {
            3 => t["depends_on"] = json!(["t02"]),
            4 => t["depends_on"] = json!(["t03"]),
            8 => t["depends_on"] = json!(["t07"]),
            _ => {}
        }
        tasks.push(t);
    }
    let p = dir.join("tasks.json");
    std::fs::write(
        &p,
        serde_json::to_vec_pretty(
            &json!({"agents": {"sh": agent}, "defaults": {"agent": "sh"}, "tasks": tasks}),
        )
        .expect("json"),
    )
    .expect("write tasks");
    p
}

/// The shard `K` of a combined task's `"shard": "K/4"`.
fn shard_number(t: &Value) -> Option<u64> {
    let (k, n) = t["shard"].as_str()?.split_once('/')?;
    (n == "4").then_some(())?;
    k.parse().ok()
}

fn read_json(p: &Path) -> Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_slurm_array_and_its_dependent_combine_end_as_one_unsharded_run() {
    let conf = slurm();
    let repo = TestRepo::with_files(12);
    let tasks = twelve_tasks(repo.tmp.path());
    let base = repo.head();

    // The same task file in one unsharded run, on a clone.
    let single = repo.tmp.path().join("single");
    git(
        repo.tmp.path(),
        &[
            "clone",
            "--quiet",
            repo.path.to_str().expect("utf-8"),
            "single",
        ],
    );
    let single_report = repo.tmp.path().join("single.json");
    let out = repo
        .fanout_command()
        .args(["run", "--tasks"])
        .arg(&tasks)
        .arg("--report")
        .arg(&single_report)
        .arg("--repo")
        .arg(&single)
        .output()
        .expect("fanout runs");
    assert!(out.status.success(), "{}", show(&out));
    let single_report = read_json(&single_report);
    let single_tree = git_text(
        &single,
        &[
            "rev-parse",
            &format!(
                "{}^{{tree}}",
                single_report["integration_branch"]
                    .as_str()
                    .expect("integrated")
            ),
        ],
    );

    // Four shards as a Slurm array, the combine queued after it with afterany.
    let bundles = repo.tmp.path().join("bundles");
    let run_id = format!("slurm-{}", std::process::id());
    let out = Command::new("bash")
        .arg(project().join("examples/shards/slurm/submit.sh"))
        .args(["--shards", "4", "--wait"])
        .env("SLURM_CONF", &conf)
        .env("REPO", &repo.path)
        .env("BASE", &base)
        .env("RUN_ID", &run_id)
        .env("BUNDLES", &bundles)
        .env("TASKS", &tasks)
        .env("FANOUT", fanout_bin())
        .env("JOBS", "2")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        .output()
        .expect("submit.sh runs");
    let logs: String = std::fs::read_dir(&bundles)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| {
                    format!(
                        "--- {}\n{}",
                        e.file_name().to_string_lossy(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(out.status.success(), "{}\n{logs}", show(&out));
    for k in 1..=4 {
        let b = bundles.join(format!("shard-{k}.bundle"));
        assert!(b.is_file(), "{} missing\n{logs}", b.display());
    }

    let combined = read_json(&bundles.join("report/report.json"));
    assert_eq!(combined["run_id"].as_str(), Some(run_id.as_str()));
    assert_eq!(statuses(&combined), statuses(&single_report), "{logs}");
    let listed = combined["tasks"].as_array().expect("tasks");
    assert_eq!(listed.len(), 12, "every task once: {combined}");
    let mut shards_seen = std::collections::BTreeSet::new();
    for t in listed {
        let shard = shard_number(t).unwrap_or_else(|| panic!("no shard K/4: {t}"));
        assert!((1..=4).contains(&shard), "{t}");
        shards_seen.insert(shard);
        assert!(t["host"].as_str().is_some_and(|h| !h.is_empty()), "{t}");
    }
    assert!(
        shards_seen.len() > 1,
        "the tasks spread over shards: {shards_seen:?}"
    );
    // A dependency chain stays in one shard.
    let shard_of = |id: &str| shard_number(task(&combined, id));
    assert_eq!(shard_of("t02"), shard_of("t03"));
    assert_eq!(shard_of("t03"), shard_of("t04"));
    assert_eq!(shard_of("t07"), shard_of("t08"));

    let branch = combined["integration_branch"].as_str().expect("integrated");
    let tree = git_text(&repo.path, &["rev-parse", &format!("{branch}^{{tree}}")]);
    assert_eq!(
        tree, single_tree,
        "the combined tree is the unsharded run's"
    );
    // The user's checkout is where it was.
    assert_eq!(repo.head(), base);
}
