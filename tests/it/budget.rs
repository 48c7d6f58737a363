//! Token and cost accounting, and budgets that stop a task or a run (issue 23): the real Codex
//! (0.171.0 over app-server, 0.153.4 over mcp-server) against the scripted model server, whose
//! own count of the tokens it reported is what fanout's figures must equal; exec agents that
//! report their usage through `$FANOUT_USAGE`. Both workspace kinds (`FANOUT_WORKSPACE`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::model_server::{ModelServer, Reply, Reported};
use crate::support::{git_text, stderr, stdout, task, Runner, TestRepo};

/// Prices of the scripted model, US dollars per million tokens.
const INPUT: f64 = 2.0;
const CACHED: f64 = 0.5;
const OUTPUT: f64 = 8.0;

fn pricing() -> Value {
    json!({"scripted-model": {"input": INPUT, "cached_input": CACHED, "output": OUTPUT}})
}

/// What `r` costs at [`pricing`].
fn cost(r: &Reported) -> f64 {
    ((r.input_tokens - r.cached_tokens) as f64 * INPUT
        + r.cached_tokens as f64 * CACHED
        + r.output_tokens as f64 * OUTPUT)
        / 1_000_000.0
}

fn codex_bin(version: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents")
        .join(format!("codex-{version}"))
        .join("node_modules/.bin/codex");
    assert!(
        p.is_file(),
        "Codex {version} is not installed at {}: run scripts/install-agents.sh first",
        p.display()
    );
    p
}

/// A run's outputs: report.json, the `--json` events, the JUnit and HTML files.
struct Outputs {
    out: Output,
    report: Value,
    events: Vec<Value>,
    junit: String,
    html: String,
}

impl Outputs {
    fn say(&self) -> String {
        format!("{}\n{}", stdout(&self.out), stderr(&self.out))
    }
}

/// `fanout run` with every output, Codex `version` (when given) pointed at `server`.
fn run_all(repo: &TestRepo, tasks: &Value, codex: Option<(&str, &ModelServer)>) -> Outputs {
    let file = repo.write_tasks(tasks);
    let dir = repo.tmp.path();
    let (junit, html) = (dir.join("junit.xml"), dir.join("run.html"));
    let mut cmd = repo.fanout_command();
    cmd.args(["run", "--json", "--no-readback", "--tasks"])
        .arg(&file)
        .arg("--report")
        .arg(repo.report_path())
        .arg("--junit")
        .arg(&junit)
        .arg("--html")
        .arg(&html)
        .arg("--repo")
        .arg(&repo.path);
    let _home;
    if let Some((version, server)) = codex {
        let home = tempfile::tempdir().expect("tmp");
        std::fs::write(home.path().join("config.toml"), server.codex_config()).expect("write");
        cmd.env("FANOUT_CODEX_BIN", codex_bin(version))
            .env("CODEX_HOME", home.path());
        _home = home;
    }
    let out = cmd.output().expect("fanout runs");
    let report: Value = std::fs::read(repo.report_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Outputs {
        report,
        events,
        junit: std::fs::read_to_string(&junit).unwrap_or_default(),
        html: std::fs::read_to_string(&html).unwrap_or_default(),
        out,
    }
}

fn edit(id: &str) -> Value {
    json!({
        "id": id,
        "prompt": format!("Write the marker file.\nCMD: printf 'edited by {id}\\n' > {id}.txt"),
        "paths": [format!("{id}.txt")],
    })
}

fn tokens(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v:#}"))
}

/// The figures of a usage in the report or an event equal what the server reported.
fn assert_usage_is(u: &Value, r: &Reported, what: &str) {
    let got = (
        tokens(u, "input_tokens"),
        tokens(u, "cached_input_tokens"),
        tokens(u, "output_tokens"),
        tokens(u, "reasoning_tokens"),
        tokens(u, "total_tokens"),
    );
    let want = (
        r.input_tokens,
        r.cached_tokens,
        r.output_tokens,
        r.reasoning_tokens,
        r.total_tokens,
    );
    assert_eq!(got, want, "{what}: {u:#}");
}

/// Two tasks of real Codex: the run's figures in report.json, the events, JUnit and HTML all
/// equal what the scripted server counted, and the money is its tokens at the task file's prices.
fn figures_agree(version: &str, protocol: &str) {
    let server = ModelServer::start_default();
    let repo = TestRepo::with_files(1);
    let tasks = json!({"version": 1, "pricing": pricing(), "tasks": [edit("a"), edit("b")]});
    let run = run_all(&repo, &tasks, Some((version, &server)));
    let reported = server.reported();
    assert!(reported.responses >= 4, "{reported:?}\n{}", run.say());
    for id in ["a", "b"] {
        let t = task(&run.report, id);
        assert_eq!(t["status"], "merged", "{t:#}\n{}", run.say());
        assert_eq!(t["agent"]["protocol"], protocol);
        // One attempt: the attempt spent what the task spent.
        assert_eq!(t["attempt_history"][0]["usage"], t["usage"], "{t:#}");
    }
    let usage = &run.report["usage"];
    assert_usage_is(usage, &reported, "report.json's run usage");
    let sum: u64 = ["a", "b"]
        .iter()
        .map(|id| tokens(&task(&run.report, id)["usage"], "total_tokens"))
        .sum();
    assert_eq!(sum, reported.total_tokens);
    let usd = usage["usd"].as_f64().expect("priced");
    assert!(
        (usd - cost(&reported)).abs() < 1e-9,
        "{usd} vs {}",
        cost(&reported)
    );

    // Events: each attempt_ended carries its turn's usage; together, what the server counted.
    let mut from_events = Reported::default();
    for e in run.events.iter().filter(|e| e["event"] == "attempt_ended") {
        let u = &e["usage"];
        from_events.input_tokens += tokens(u, "input_tokens");
        from_events.cached_tokens += tokens(u, "cached_input_tokens");
        from_events.output_tokens += tokens(u, "output_tokens");
        from_events.reasoning_tokens += tokens(u, "reasoning_tokens");
        from_events.total_tokens += tokens(u, "total_tokens");
    }
    from_events.responses = reported.responses;
    assert_eq!(from_events, reported, "events:\n{}", stdout(&run.out));
    let ended = run
        .events
        .iter()
        .find(|e| e["event"] == "run_ended")
        .expect("run_ended");
    assert_eq!(ended["report"]["usage"], *usage);

    // JUnit: the run's properties and each case's.
    let total = format!(
        "<property name=\"usage.total_tokens\" value=\"{}\"/>",
        reported.total_tokens
    );
    assert!(run.junit.contains(&total), "{}", run.junit);
    assert!(
        run.junit.contains(&format!(
            "<property name=\"usage.usd\" value=\"{:.6}\"/>",
            cost(&reported)
        )),
        "{}",
        run.junit
    );
    assert_eq!(
        run.junit.matches("usage.total_tokens").count(),
        3,
        "{}",
        run.junit
    );
    // HTML: the run's figures in the header.
    let data = format!("data-total-tokens=\"{}\"", reported.total_tokens);
    assert!(run.html.contains(&data), "no {data} in the page");
    assert!(run.html.contains(&format!(
        "data-cached-input-tokens=\"{}\"",
        reported.cached_tokens
    )));

    // `fanout status` says it too.
    let run_id = run.report["run_id"].as_str().expect("run id");
    let status = repo.fanout(&["status", run_id]);
    assert!(
        stdout(&status).contains(&format!(
            "spent {} tokens (${:.4})",
            reported.total_tokens,
            cost(&reported)
        )),
        "{}",
        stdout(&status)
    );
}

#[test]
fn codex_0171_app_server_figures_agree_with_the_model() {
    figures_agree("0.171.0", "codex-app-server");
}

#[test]
fn codex_0153_mcp_figures_agree_with_the_model() {
    figures_agree("0.153.4", "mcp");
}

/// A model that never stops asking for commands: the task's token budget stops it.
fn token_budget_stops_codex(version: &str) {
    let first = std::sync::atomic::AtomicBool::new(true);
    let server = ModelServer::start(move |_| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Reply::Command("printf 'partial\\n' > part.txt".into())
        } else {
            Reply::Command("true".into())
        }
    });
    let repo = TestRepo::with_files(1);
    let tasks = json!({"version": 1, "pricing": pricing(),
        "budget": {"task": {"tokens": 3000}},
        "defaults": {"timeout_secs": 300},
        "tasks": [{"id": "endless", "prompt": "work forever", "paths": ["part.txt"]}]});
    let started = Instant::now();
    let run = run_all(&repo, &tasks, Some((version, &server)));
    let t = task(&run.report, "endless");
    assert_eq!(t["status"], "budget_exceeded", "{t:#}\n{}", run.say());
    assert!(
        t["error"]
            .as_str()
            .is_some_and(|e| e.contains("task budget exceeded")),
        "{t:#}"
    );
    assert_eq!(run.out.status.code(), Some(3), "{}", run.say());
    let reported = server.reported();
    let spent = tokens(&t["usage"], "total_tokens");
    assert!(
        spent >= 3000 && spent <= reported.total_tokens,
        "{spent} {reported:?}"
    );
    // Stopped soon after the limit: a few responses, not the whole timeout.
    assert!(reported.responses <= 8, "{reported:?}");
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_work_kept_not_merged(&repo, &run.report, t, "part.txt", "partial\n");
}

/// The task's branch holds its work; the integration branch does not.
fn assert_work_kept_not_merged(repo: &TestRepo, report: &Value, t: &Value, file: &str, text: &str) {
    let branch = t["branch"].as_str().expect("branch kept");
    assert_eq!(
        git_text(&repo.path, &["show", &format!("{branch}:{file}")]),
        text.trim_end()
    );
    let merged = report["integration_branch"].as_str().expect("integration");
    // No integration branch at all when nothing merged.
    if repo.branches().iter().any(|b| b == merged) {
        let files = git_text(&repo.path, &["ls-tree", "-r", "--name-only", merged]);
        assert!(!files.lines().any(|l| l == file), "{files}");
    }
}

#[test]
fn codex_0171_token_budget_stops_the_task() {
    token_budget_stops_codex("0.171.0");
}

#[test]
fn codex_0153_token_budget_stops_the_task() {
    token_budget_stops_codex("0.153.4");
}

/// An exec agent that writes `<id>.txt`, reports `tokens` as its usage, then sleeps `sleep`.
fn exec_agent(tokens: u64, sleep: u32) -> Value {
    let script = format!(
        "printf 'by %s\\n' \"$FANOUT_TASK_ID\" > \"$FANOUT_TASK_ID.txt\"; \
         printf '{{\"input_tokens\": {}, \"cached_input_tokens\": 100, \"output_tokens\": {}, \"model\": \"m\"}}' > \"$FANOUT_USAGE\"; \
         sleep {sleep}",
        tokens - tokens / 10,
        tokens / 10
    );
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

fn exec_tasks(ids: &[&str], agent: Value, budget: Value) -> Value {
    let tasks: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "prompt": "x", "paths": [format!("{id}.txt")]}))
        .collect();
    json!({"version": 1, "defaults": {"agent": "e", "timeout_secs": 120},
        "agents": {"e": agent},
        "pricing": {"m": {"input": 1.0, "output": 4.0}},
        "budget": budget, "tasks": tasks})
}

crate::both_ways!(
    seconds_budget,
    seconds_budget_stops_a_task_and_keeps_its_work
);

fn seconds_budget_stops_a_task_and_keeps_its_work(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let tasks = exec_tasks(
        &["slow", "quick"],
        exec_agent(1000, 60),
        json!({"task": {"seconds": 2}}),
    );
    // `quick` would finish in time, but sleeps as long: both are stopped.
    let started = Instant::now();
    let run = run_all(&repo, &tasks, None);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    for id in ["slow", "quick"] {
        let t = task(&run.report, id);
        assert_eq!(t["status"], "budget_exceeded", "{t:#}\n{}", run.say());
        assert!(
            t["error"]
                .as_str()
                .is_some_and(|e| e.contains("the budget is 2 s")),
            "{t:#}"
        );
        assert_work_kept_not_merged(
            &repo,
            &run.report,
            t,
            &format!("{id}.txt"),
            &format!("by {id}\n"),
        );
    }
    assert_eq!(run.out.status.code(), Some(3));
    // JUnit counts them as failures.
    assert!(
        run.junit.contains("type=\"budget_exceeded\""),
        "{}",
        run.junit
    );
}

crate::both_ways!(
    exec_tokens,
    exec_usage_file_counts_and_a_task_over_its_tokens_is_not_merged
);

fn exec_usage_file_counts_and_a_task_over_its_tokens_is_not_merged(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let tasks = exec_tasks(
        &["big"],
        exec_agent(1000, 0),
        json!({"task": {"tokens": 500}}),
    );
    let run = run_all(&repo, &tasks, None);
    let t = task(&run.report, "big");
    assert_eq!(t["status"], "budget_exceeded", "{t:#}\n{}", run.say());
    let u = &t["usage"];
    assert_eq!(
        (
            tokens(u, "input_tokens"),
            tokens(u, "output_tokens"),
            tokens(u, "total_tokens")
        ),
        (900, 100, 1000)
    );
    // (900 − 100 cached) × 1 + 100 cached × 1 (no cached price: the input price) + 100 × 4
    assert!(
        (u["usd"].as_f64().expect("usd") - 0.0013).abs() < 1e-12,
        "{u:#}"
    );
    assert_work_kept_not_merged(&repo, &run.report, t, "big.txt", "by big\n");
}

crate::both_ways!(
    run_budget,
    run_budget_skips_the_rest_and_resume_with_a_larger_one_finishes_them
);

fn run_budget_skips_the_rest_and_resume_with_a_larger_one_finishes_them(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let ids = ["t1", "t2", "t3", "t4"];
    let tasks = exec_tasks(&ids, exec_agent(1000, 0), json!({"run": {"tokens": 2000}}));
    let file = repo.write_tasks(&tasks);
    let (out, report) = repo.run(&file, &["--jobs", "1", "--no-readback"]);
    let say = format!("{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{say}");
    for id in ["t1", "t2"] {
        assert_eq!(task(&report, id)["status"], "merged", "{say}");
    }
    for id in ["t3", "t4"] {
        let t = task(&report, id);
        assert_eq!(t["status"], "skipped", "{t:#}");
        assert!(
            t["error"].as_str().is_some_and(
                |e| e.starts_with("run budget spent: 2000 tokens spent, the budget is 2000")
            ),
            "{t:#}"
        );
        assert!(t.get("usage").is_none(), "{t:#}");
    }
    assert_eq!(tokens(&report["usage"], "total_tokens"), 2000);
    let run_id = report["run_id"].as_str().expect("run id").to_string();

    // A finished run does not resume without a new budget; with one, the skipped tasks run.
    let refused = repo.fanout(&["resume", &run_id]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let bad = repo.fanout(&["resume", &run_id, "--budget", "run.euros=3"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("unknown budget key"),
        "{}",
        stderr(&bad)
    );
    let report_path = repo.report_path();
    let resumed = repo.fanout(&[
        "resume",
        &run_id,
        "--budget",
        "run.tokens=10000",
        "--jobs",
        "1",
        "--report",
        report_path.to_str().expect("utf-8"),
    ]);
    let say = format!("{}\n{}", stdout(&resumed), stderr(&resumed));
    assert_eq!(resumed.status.code(), Some(0), "{say}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    for id in ids {
        assert_eq!(task(&report, id)["status"], "merged", "{id}: {say}");
    }
    // The run's total counts what the first pass spent and what the resumed one did.
    assert_eq!(
        tokens(&report["usage"], "total_tokens"),
        4000,
        "{:#}",
        report["usage"]
    );
    let merged = report["integration_branch"].as_str().expect("branch");
    let files = git_text(&repo.path, &["ls-tree", "-r", "--name-only", merged]);
    for id in ids {
        assert!(files.lines().any(|l| l == format!("{id}.txt")), "{files}");
    }
}

#[test]
fn a_run_budget_in_money_needs_prices_and_stops_at_them() {
    let repo = TestRepo::with_files(1);
    // Each task: 900 in (100 cached) and 100 out at $1/$4 per million = $0.0013.
    let tasks = exec_tasks(
        &["m1", "m2", "m3"],
        exec_agent(1000, 0),
        json!({"run": {"usd": 0.0015}}),
    );
    let file = repo.write_tasks(&tasks);
    let (out, report) = repo.run(&file, &["--jobs", "1", "--no-readback"]);
    let say = format!("{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(task(&report, "m1")["status"], "merged", "{say}");
    assert_eq!(task(&report, "m2")["status"], "merged", "{say}");
    assert_eq!(task(&report, "m3")["status"], "skipped", "{say}");
    assert!((report["usage"]["usd"].as_f64().expect("usd") - 0.0026).abs() < 1e-12);
}

#[test]
fn a_model_without_a_price_is_counted_in_tokens_and_said() {
    let repo = TestRepo::with_files(1);
    let mut tasks = exec_tasks(&["u1"], exec_agent(1000, 0), json!({}));
    tasks["pricing"] = json!({"another-model": {"input": 1.0, "output": 1.0}});
    let file = repo.write_tasks(&tasks);
    let (out, report) = repo.run(&file, &["--no-readback"]);
    let t = task(&report, "u1");
    assert_eq!(t["status"], "merged", "{}", stderr(&out));
    assert_eq!(tokens(&t["usage"], "total_tokens"), 1000);
    assert!(t["usage"].get("usd").is_none(), "{t:#}");
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("pricing names no model \"m\""), "{said}");
}

#[test]
fn budgets_and_prices_are_validated() {
    let repo = TestRepo::with_files(1);
    for (bad, want) in [
        (json!({"budget": {"task": {"tokens": 0}}}), "$.budget.task"),
        (json!({"budget": {"run": {"dollars": 5}}}), "$.budget"),
        (json!({"pricing": {"m": {"input": 1}}}), "$.pricing"),
    ] {
        let mut tasks = exec_tasks(&["v"], exec_agent(10, 0), json!({}));
        for (k, v) in bad.as_object().expect("object") {
            tasks[k] = v.clone();
        }
        let file = repo.write_tasks(&tasks);
        let out = repo.fanout(&["validate", "--tasks", file.to_str().expect("utf-8")]);
        assert_ne!(out.status.code(), Some(0), "{bad}");
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(said.contains(want), "{bad}: {said}");
    }
}

/// The review gate's Claude Code answer counts toward the attempt, the task and the run.
#[test]
fn the_reviewers_tokens_count_toward_the_task() {
    use crate::anthropic_server::{AnthropicServer, Reply as A};
    let reviewer = AnthropicServer::start(|_| A::Text("APPROVE\nFine.".into()));
    let repo = TestRepo::with_files(1);
    let mut tasks = exec_tasks(&["reviewed"], exec_agent(1000, 0), json!({}));
    tasks["defaults"]["review"] = json!({"prompt": "Approve it.", "timeout_secs": 120});
    tasks["defaults"]["max_attempts"] = json!(1);
    tasks["verifier"] = json!({"command": crate::support::claude_bin().display().to_string(),
        "args": ["mcp", "serve"]});
    let file = repo.write_tasks(&tasks);
    let mut cmd = repo.fanout_command();
    cmd.args(["run", "--no-readback", "--quiet", "--tasks"])
        .arg(&file)
        .arg("--report")
        .arg(repo.report_path())
        .arg("--repo")
        .arg(&repo.path)
        .env("ANTHROPIC_BASE_URL", reviewer.base_url())
        .env("ANTHROPIC_API_KEY", "sk-ant-test-secret-0123456789");
    let out = cmd.output().expect("fanout runs");
    let report: Value =
        serde_json::from_slice(&std::fs::read(repo.report_path()).expect("report")).expect("json");
    let t = task(&report, "reviewed");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    // Each answer of the scripted reviewer reports 10 tokens in and 5 out.
    let requests = reviewer.requests().len() as u64;
    assert!(requests >= 1);
    let u = &t["usage"];
    assert!(
        tokens(u, "total_tokens") > 1000 && tokens(u, "output_tokens") >= 100 + 5,
        "the agent's 1000 tokens and the reviewer's: {u:#} ({requests} requests)"
    );
    assert_eq!(t["attempt_history"][0]["usage"], *u);
    assert_eq!(report["usage"], *u);
}

crate::both_ways!(hostile_usage_file, a_hostile_usage_file_is_ignored);

/// `$FANOUT_USAGE` is the agent's file: a FIFO (which would block a reader), a link to a file of
/// someone else, or garbage is ignored, and the task goes on.
fn a_hostile_usage_file_is_ignored(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let outside = repo.tmp.path().join("outside.json");
    std::fs::write(&outside, r#"{"input_tokens": 777, "output_tokens": 1}"#).expect("write");
    let agent = |trick: &str| {
        let script =
            format!("printf 'by %s\\n' \"$FANOUT_TASK_ID\" > \"$FANOUT_TASK_ID.txt\"; {trick}");
        json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
    };
    let mut tasks = exec_tasks(&["fifo", "link", "junk"], agent("true"), json!({}));
    tasks["agents"] = json!({
        "fifo": agent("mkfifo \"$FANOUT_USAGE\""),
        "link": agent(&format!("ln -s {} \"$FANOUT_USAGE\"", outside.display())),
        "junk": agent("printf 'not json' > \"$FANOUT_USAGE\""),
        "e": agent("true"),
    });
    for (i, id) in ["fifo", "link", "junk"].iter().enumerate() {
        tasks["tasks"][i]["agent"] = json!(id);
    }
    let file = repo.write_tasks(&tasks);
    let started = Instant::now();
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert!(started.elapsed() < Duration::from_secs(60));
    for id in ["fifo", "link", "junk"] {
        let t = task(&report, id);
        assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
        assert!(t.get("usage").is_none(), "{t:#}");
    }
    assert!(report.get("usage").is_none());
}

/// While the run goes on, `fanout status` says what the ended attempts spent (from state.json).
#[test]
fn status_tells_the_spend_while_the_run_goes_on() {
    let repo = TestRepo::with_files(1);
    let mut tasks = exec_tasks(&["first", "second"], exec_agent(1000, 0), json!({}));
    tasks["agents"]["slow"] = exec_agent(1000, 120);
    tasks["tasks"][1]["agent"] = json!("slow");
    let file = repo.write_tasks(&tasks);
    let mut child = repo
        .fanout_command()
        .args(["run", "--quiet", "--no-readback", "--jobs", "1", "--tasks"])
        .arg(&file)
        .arg("--repo")
        .arg(&repo.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("fanout starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut said = String::new();
    while Instant::now() < deadline {
        said = stdout(&repo.fanout(&["status", "last"]));
        if said.contains("spent 1000 tokens") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = nix_kill(child.id());
    let _ = child.wait();
    assert!(said.contains("spent 1000 tokens ($0.0013)"), "{said}");
    let first = said
        .lines()
        .find(|l| l.trim_start().starts_with("first"))
        .unwrap_or("");
    assert!(first.ends_with("1000 tokens ($0.0013)"), "{said}");
}

/// Asks a process to stop (SIGTERM), as Ctrl-C would.
fn nix_kill(pid: u32) -> std::io::Result<()> {
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .map(|_| ())
}

/// When the run's budget is spent, a running turn finishes (and its task may merge), a task
/// not started is skipped, and a task whose gates failed gets no further turn.
#[test]
fn a_spent_run_budget_lets_running_turns_finish_and_starts_nothing_new() {
    let repo = TestRepo::with_files(1);
    let mut tasks = exec_tasks(
        &["quick", "running", "waiting"],
        exec_agent(1000, 0),
        json!({"run": {"tokens": 1000}}),
    );
    tasks["agents"]["slow"] = exec_agent(1000, 3);
    tasks["tasks"][1]["agent"] = json!("slow");
    let file = repo.write_tasks(&tasks);
    let (out, report) = repo.run(&file, &["--jobs", "2", "--no-readback"]);
    let say = format!("{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(task(&report, "quick")["status"], "merged", "{say}");
    // Its turn ran on after the budget was spent: it finished, passed its gates and merged.
    assert_eq!(task(&report, "running")["status"], "merged", "{say}");
    assert_eq!(task(&report, "waiting")["status"], "skipped", "{say}");
    assert_eq!(tokens(&report["usage"], "total_tokens"), 2000);

    // A task whose first attempt fails its gates gets no second turn once the budget is spent.
    let repo = TestRepo::with_files(1);
    let mut tasks = exec_tasks(
        &["fails"],
        exec_agent(1000, 0),
        json!({"run": {"tokens": 500}}),
    );
    tasks["defaults"]["verify"] = json!(["sh", "-c", "exit 1"]);
    tasks["defaults"]["max_attempts"] = json!(3);
    let file = repo.write_tasks(&tasks);
    let (out, report) = repo.run(&file, &["--no-readback"]);
    let t = task(&report, "fails");
    assert_eq!(t["status"], "budget_exceeded", "{t:#}\n{}", stderr(&out));
    assert!(
        t["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("run budget spent") && e.contains("before attempt 2")),
        "{t:#}"
    );
    assert_eq!(t["attempts"], 1);
    assert_eq!(out.status.code(), Some(3));
}

/// Claude Code's diagnosis of a failed attempt counts toward that attempt.
#[test]
fn the_diagnosis_tokens_count_toward_the_failed_attempt() {
    use crate::anthropic_server::{AnthropicServer, Reply as A};
    let diagnoser = AnthropicServer::start(|_| A::Text("ROOT CAUSE: ok.txt is missing.".into()));
    let repo = TestRepo::with_files(1);
    let script = "printf 'by %s\\n' \"$FANOUT_TASK_ID\" > \"$FANOUT_TASK_ID.txt\"; \
        if [ \"$FANOUT_ATTEMPT\" = 2 ]; then echo ok > ok.txt; fi; \
        printf '{\"input_tokens\": 900, \"output_tokens\": 100}' > \"$FANOUT_USAGE\"";
    let mut tasks = exec_tasks(
        &["diag"],
        json!({"protocol": "exec", "command": "sh", "args": ["-c", script]}),
        json!({}),
    );
    tasks["tasks"][0]["paths"] = json!(["diag.txt", "ok.txt"]);
    tasks["defaults"]["verify"] = json!(["test", "-f", "ok.txt"]);
    tasks["defaults"]["max_attempts"] = json!(2);
    tasks["defaults"]["diagnose"] = json!(true);
    tasks["verifier"] = json!({"command": crate::support::claude_bin().display().to_string(),
        "args": ["mcp", "serve"]});
    let file = repo.write_tasks(&tasks);
    let out = repo
        .fanout_command()
        .args(["run", "--no-readback", "--quiet", "--tasks"])
        .arg(&file)
        .arg("--report")
        .arg(repo.report_path())
        .arg("--repo")
        .arg(&repo.path)
        .env("ANTHROPIC_BASE_URL", diagnoser.base_url())
        .env("ANTHROPIC_API_KEY", "sk-ant-test-secret-0123456789")
        .output()
        .expect("fanout runs");
    let report: Value =
        serde_json::from_slice(&std::fs::read(repo.report_path()).expect("report")).expect("json");
    let t = task(&report, "diag");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    let history = t["attempt_history"].as_array().expect("attempts");
    assert_eq!(history.len(), 2, "{t:#}");
    assert!(history[0]["diagnosis"].as_str().is_some(), "{t:#}");
    let first = tokens(&history[0]["usage"], "total_tokens");
    let second = tokens(&history[1]["usage"], "total_tokens");
    // The first attempt: the agent's 1000 and the diagnosis; the second: the agent's only.
    assert_eq!(second, 1000, "{t:#}");
    assert!(first > 1000, "{t:#}");
    assert_eq!(tokens(&t["usage"], "total_tokens"), first + second);
}

/// Two tasks writing the same file, each run of the agent reporting 1000 tokens and then
/// sleeping `sleep` seconds: `b` conflicts with `a` and runs again (`on_conflict`).
fn conflicting_tasks(on_conflict: &str, sleep: u32, budget: Value) -> Value {
    let script = format!(
        "printf 'by %s\\n' \"$FANOUT_TASK_ID\" > shared.txt; \
         printf '{{\"input_tokens\": 900, \"output_tokens\": 100, \"model\": \"m\"}}' > \"$FANOUT_USAGE\"; \
         sleep {sleep}"
    );
    let mut t = exec_tasks(
        &["a", "b"],
        json!({"protocol": "exec", "command": "sh", "args": ["-c", script]}),
        budget,
    );
    t["defaults"]["on_conflict"] = json!(on_conflict);
    // Side by side, so that `b` conflicts.
    t["defaults"]["overlap"] = json!("parallel");
    for task in t["tasks"].as_array_mut().expect("tasks") {
        task["paths"] = json!(["shared.txt"]);
    }
    t
}

/// A round after a conflict (`retry`, `resolve`) counts what the task's earlier rounds spent:
/// `b`'s first round spends 1000 of its 1500 tokens, its second takes it to 2000 and it ends
/// `budget_exceeded`, its work on its branch, not merged. Its `usage` holds both rounds, and
/// the run's total is the same in report.json and the events.
fn a_later_round_counts_the_earlier_ones(runner: Runner) {
    for mode in ["retry", "resolve"] {
        let repo = TestRepo::with_files(1).run_by(runner);
        let tasks = conflicting_tasks(mode, 0, json!({"task": {"tokens": 1500}}));
        let run = run_all(&repo, &tasks, None);
        assert_eq!(run.out.status.code(), Some(3), "{mode}: {}", run.say());
        assert_eq!(task(&run.report, "a")["status"], "merged", "{}", run.say());
        let b = task(&run.report, "b");
        assert_eq!(
            b["status"],
            "budget_exceeded",
            "{mode}: {b:#}\n{}",
            run.say()
        );
        let error = b["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("task budget exceeded: 2000 tokens spent, the budget is 1500"),
            "{mode}: {b:#}"
        );
        let kinds: Vec<&str> = b["rounds"]
            .as_array()
            .expect("rounds")
            .iter()
            .filter_map(|r| r["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["agent", mode], "{b:#}");
        assert_eq!(tokens(&b["usage"], "total_tokens"), 2000, "{b:#}");
        assert_eq!(tokens(&run.report["usage"], "total_tokens"), 3000);
        let ended = run
            .events
            .iter()
            .find(|e| e["event"] == "run_ended")
            .expect("run_ended");
        assert_eq!(ended["report"]["usage"], run.report["usage"]);
        assert!(
            run.junit
                .contains("<property name=\"usage.total_tokens\" value=\"3000\"/>"),
            "{}",
            run.junit
        );
        assert!(run.html.contains("data-total-tokens=\"3000\""));
        // Its second round's work is on its branch; the integration has `a`'s.
        let branch = b["branch"].as_str().expect("branch kept");
        assert_eq!(
            git_text(&repo.path, &["show", &format!("{branch}:shared.txt")]),
            "by b"
        );
        let merged = run.report["integration_branch"].as_str().expect("branch");
        assert_eq!(
            git_text(&repo.path, &["show", &format!("{merged}:shared.txt")]),
            "by a"
        );
    }
}
crate::both_ways!(rounds_budget, a_later_round_counts_the_earlier_ones);

/// `budget.task.seconds` counts the time of every round's session: each run of the agent takes
/// 2 s, the budget is 4 s; the first round stays under it, the retry round is stopped during
/// its turn.
#[test]
fn task_seconds_count_every_round() {
    let repo = TestRepo::with_files(1);
    let tasks = conflicting_tasks("retry", 2, json!({"task": {"seconds": 4}}));
    let run = run_all(&repo, &tasks, None);
    assert_eq!(task(&run.report, "a")["status"], "merged", "{}", run.say());
    let b = task(&run.report, "b");
    assert_eq!(b["status"], "budget_exceeded", "{b:#}\n{}", run.say());
    assert!(
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("the budget is 4 s")),
        "{b:#}"
    );
    assert_eq!(b["rounds"].as_array().map(Vec::len), Some(2), "{b:#}");
}

/// An integration repair round counts what the task's first round spent: `caller` (1000 tokens
/// a run of its agent, a budget of 1500) passes its own gates, breaks the integration, and its
/// repair round takes it to 2000: it ends `budget_exceeded` — not `integration_failed`, not
/// repaired, and no second repair round — its fix on its branch, not merged.
fn a_repair_round_counts_the_first(runner: Runner) {
    let repo = crate::repair::greet_repo(runner);
    let file =
        crate::repair::rename_and_caller(&repo, "    sed -i 's/greet/welcome/' extra/wave.sh", 2);
    let mut tasks: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("tasks")).expect("json");
    let script = tasks["agents"]["e"]["args"][1]
        .as_str()
        .expect("script")
        .to_string();
    tasks["agents"]["e"]["args"][1] = json!(format!(
        "printf '{{\"input_tokens\": 900, \"output_tokens\": 100, \"model\": \"m\"}}' > \"$FANOUT_USAGE\"\n{script}"
    ));
    tasks["pricing"] = json!({"m": {"input": 1.0, "output": 4.0}});
    tasks["budget"] = json!({"task": {"tokens": 1500}});
    let run = run_all(&repo, &tasks, None);
    assert_eq!(run.out.status.code(), Some(3), "{}", run.say());
    assert_eq!(
        task(&run.report, "rename")["status"],
        "merged",
        "{}",
        run.say()
    );
    let caller = task(&run.report, "caller");
    assert_eq!(
        caller["status"],
        "budget_exceeded",
        "{caller:#}\n{}",
        run.say()
    );
    assert!(
        caller["error"].as_str().is_some_and(
            |e| e.contains("task budget exceeded: 2000 tokens spent, the budget is 1500")
        ),
        "{caller:#}"
    );
    assert!(caller.get("repaired").is_none(), "{caller:#}");
    let kinds: Vec<&str> = caller["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["agent", "repair"], "{caller:#}");
    assert_eq!(tokens(&caller["usage"], "total_tokens"), 2000, "{caller:#}");
    assert_eq!(tokens(&run.report["usage"], "total_tokens"), 3000);
    assert_eq!(run.report["integration"]["ejected"], json!(["caller"]));
    // Its fix is on its branch; the integration does not have its script.
    let branch = caller["branch"].as_str().expect("branch");
    assert_eq!(
        git_text(&repo.path, &["show", &format!("{branch}:extra/wave.sh")]),
        ". ./lib.sh\nwelcome"
    );
    let merged = run.report["integration_branch"].as_str().expect("branch");
    let files = git_text(&repo.path, &["ls-tree", "-r", "--name-only", merged]);
    assert!(!files.lines().any(|l| l == "extra/wave.sh"), "{files}");
}
crate::both_ways!(repair_budget, a_repair_round_counts_the_first);

/// A review gate that takes a task over its budget (the agent spent 1000 of 1001 tokens)
/// passes, but the task ends `budget_exceeded`: its work on its branch, not merged.
#[test]
fn a_review_over_the_task_budget_keeps_the_work_unmerged() {
    use crate::anthropic_server::{AnthropicServer, Reply as A};
    let reviewer = AnthropicServer::start(|_| A::Text("APPROVE\nFine.".into()));
    let repo = TestRepo::with_files(1);
    let mut tasks = exec_tasks(
        &["reviewed"],
        exec_agent(1000, 0),
        json!({"task": {"tokens": 1001}}),
    );
    tasks["defaults"]["review"] = json!({"prompt": "Approve it.", "timeout_secs": 120});
    tasks["defaults"]["max_attempts"] = json!(1);
    tasks["verifier"] = json!({"command": crate::support::claude_bin().display().to_string(),
        "args": ["mcp", "serve"]});
    let file = repo.write_tasks(&tasks);
    let mut cmd = repo.fanout_command();
    cmd.args(["run", "--no-readback", "--quiet", "--tasks"])
        .arg(&file)
        .arg("--report")
        .arg(repo.report_path())
        .arg("--repo")
        .arg(&repo.path)
        .env("ANTHROPIC_BASE_URL", reviewer.base_url())
        .env("ANTHROPIC_API_KEY", "sk-ant-test-secret-0123456789");
    let out = cmd.output().expect("fanout runs");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(repo.report_path()).expect("report")).expect("json");
    let t = task(&report, "reviewed");
    assert_eq!(t["status"], "budget_exceeded", "{t:#}\n{}", stderr(&out));
    assert!(
        t["error"]
            .as_str()
            .is_some_and(|e| e.contains("after its gates passed")),
        "{t:#}"
    );
    assert!(tokens(&t["usage"], "total_tokens") > 1000, "{t:#}");
    assert_work_kept_not_merged(&repo, &report, t, "reviewed.txt", "by reviewed\n");
}
