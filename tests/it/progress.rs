//! Long phases are visible: the integration gate and each bisection step are events (with step
//! k of n and the prefix checked), CI's plain output has a heartbeat while they run, the HTML
//! timeline reaches the run's end; and a task run again after a conflict is one task with
//! rounds, counted once.

use serde_json::{json, Value};

use crate::support::*;

/// An exec agent that runs its prompt as a shell script.
fn script_agent() -> Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", "eval \"$FANOUT_PROMPT\""]})
}

fn show(out: &std::process::Output) -> String {
    format!("stderr: {}\nstdout: {}", stderr(out), stdout(out))
}

/// The run's own event stream (`run-events.jsonl` in its folder).
fn run_events(report: &Value) -> Vec<Value> {
    let dir = report["run_dir"].as_str().expect("run_dir");
    let text = std::fs::read_to_string(std::path::Path::new(dir).join("run-events.jsonl"))
        .expect("run-events.jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("an event line"))
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Six tasks that each add a file; `t4` adds `broken`, which the gate's verify command refuses
/// (after `gate_sleep` seconds).
fn six_tasks_one_breaks_the_gate(repo: &TestRepo, gate_sleep: &str) -> std::path::PathBuf {
    let tasks: Vec<Value> = (1..=6)
        .map(|i| {
            let prompt = if i == 4 {
                "echo oops > broken".to_string()
            } else {
                format!("echo {i} > f{i}.txt")
            };
            json!({"id": format!("t{i}"), "prompt": prompt})
        })
        .collect();
    let verify = format!("sleep {gate_sleep}; test ! -e broken");
    repo.write_tasks(&json!({
        "agents": {"sh": script_agent()},
        "defaults": {"agent": "sh"},
        "integrate": {"verify": ["sh", "-c", verify], "timeout_secs": 60},
        "tasks": tasks
    }))
}

#[test]
fn bisect_steps_are_events_with_step_k_of_n_and_the_prefix_checked() {
    let repo = TestRepo::with_files(1);
    let file = six_tasks_one_breaks_the_gate(&repo, "0");
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        statuses(&report)["t4"],
        "integration_failed",
        "{}",
        show(&out)
    );
    let events = run_events(&report);
    let started = named(&events, "integration_gate_started");
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(started[0]["tasks"], 6);
    // (kind, step, steps, prefix, tasks, passed) of every verify run, in order.
    let runs: Vec<(String, Value, Value, u64, u64, bool)> = named(&events, "gate_step_ended")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["step"].clone(),
                e["steps"].clone(),
                e["prefix"].as_u64().unwrap_or(0),
                e["tasks"].as_u64().unwrap_or(0),
                e["passed"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    // Six tasks, the fourth breaks it: the whole (fails), step 1/3 on the first 3 (passes),
    // step 2/3 on the first 4 (fails), the first 4 again to confirm, then the 5 left (passes).
    let expected = vec![
        ("full".to_string(), Value::Null, Value::Null, 6, 6, false),
        ("bisect".into(), json!(1), json!(3), 3, 6, true),
        ("bisect".into(), json!(2), json!(3), 4, 6, false),
        ("confirm".into(), Value::Null, Value::Null, 4, 6, false),
        ("full".into(), Value::Null, Value::Null, 5, 5, true),
    ];
    assert_eq!(runs, expected, "{}", show(&out));
    // Each run started before it ended, and they are numbered 1…n like the report counts them.
    let starts = named(&events, "gate_step_started");
    assert_eq!(starts.len(), runs.len());
    let numbers: Vec<u64> = starts
        .iter()
        .map(|e| e["verify_run"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
    assert_eq!(report["integration"]["verify_runs"], 5);
    let verified = named(&events, "integration_verified");
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0]["passed"], true);
    let steps_ms: u64 = named(&events, "gate_step_ended")
        .iter()
        .map(|e| e["elapsed_ms"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        verified[0]["elapsed_ms"].as_u64().unwrap_or(0) >= steps_ms,
        "{verified:?}"
    );
    // The plain output names each step and its verdict.
    let err = stderr(&out);
    assert!(
        err.contains("fanout: bisect step 2/3: first 4 of 6 task(s): failed in"),
        "{err}"
    );
    assert!(
        err.contains("fanout: integration gate passed after 5 verify run(s)"),
        "{err}"
    );
    // Every event line, the new ones included, validates against `fanout schema events`.
    let schema_out = repo.fanout_command().args(["schema", "events"]).output();
    let schema: Value =
        serde_json::from_slice(&schema_out.expect("fanout schema").stdout).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    for e in &events {
        let errors: Vec<String> = validator.iter_errors(e).map(|x| x.to_string()).collect();
        assert!(errors.is_empty(), "{e}: {errors:?}");
    }
}

#[test]
fn the_plain_output_has_heartbeats_during_a_long_gate() {
    let repo = TestRepo::with_files(1);
    let file = six_tasks_one_breaks_the_gate(&repo, "1.5");
    let (out, report) = with_env("FANOUT_HEARTBEAT_SECS", "0.5", || {
        repo.run(&file, &["--no-readback", "--jobs", "3"])
    });
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(report["integration"]["verify_runs"], 5, "{}", show(&out));
    let err = stderr(&out);
    let beats: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("fanout: still running: "))
        .collect();
    // Five verify runs of 1.5 s each, a beat every 0.5 s of silence: several per run.
    let full = beats
        .iter()
        .filter(|l| l.contains("integration gate: running"))
        .count();
    let bisect = beats
        .iter()
        .filter(|l| l.contains("bisect step 2/3: first 4 of 6 tasks"))
        .count();
    let confirm = beats
        .iter()
        .filter(|l| l.contains("confirming the failure of the first 4 tasks"))
        .count();
    assert!(full >= 2 && bisect >= 1 && confirm >= 1, "{err}");
    // Never two beats without 0.5 s between them: at most one per period of the gate's time.
    let gate_ms = run_events(&report)
        .iter()
        .find(|e| e["event"] == "integration_verified")
        .and_then(|e| e["elapsed_ms"].as_u64())
        .unwrap_or(0);
    let total_ms = report["duration_ms"].as_u64().unwrap_or(0);
    assert!(
        (beats.len() as u64) <= total_ms / 500 + 1,
        "{} beats in {total_ms} ms (gate {gate_ms} ms): {err}",
        beats.len()
    );
}

#[test]
fn a_long_agent_turn_has_heartbeats_and_a_short_run_none() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"sh": script_agent()},
        "defaults": {"agent": "sh"},
        "tasks": [{"id": "slow", "prompt": "sleep 2; echo x > slow.txt"}]
    }));
    let (out, report) = with_env("FANOUT_HEARTBEAT_SECS", "0.5", || {
        repo.run(&file, &["--no-readback"])
    });
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(statuses(&report)["slow"], "merged");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("fanout: still running: slow (agent turn 1, 0m0")),
        "{err}"
    );
    // The default period is a minute: a run of seconds prints no heartbeat at all.
    let (out, _) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!stderr(&out).contains("still running"), "{}", show(&out));
}

/// The timeline's data embedded in the HTML page.
fn timeline_data(html: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"timeline-data\">";
    let start = html.find(open).expect("the timeline's data") + open.len();
    let end = start + html[start..].find("</script>").expect("its end");
    serde_json::from_str(&html[start..end]).expect("timeline JSON")
}

#[test]
fn the_html_timeline_reaches_the_end_of_the_gate_and_the_run() {
    let repo = TestRepo::with_files(1);
    let file = six_tasks_one_breaks_the_gate(&repo, "0.3");
    let html = repo.tmp.path().join("report.html");
    let (out, report) = repo.run(
        &file,
        &["--no-readback", "--html", html.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let data = timeline_data(&std::fs::read_to_string(&html).expect("the page"));
    let end = data["end_ms"].as_u64().expect("end_ms");
    let bars = data["bars"].as_array().expect("bars");
    let of_kind = |k: &str| -> Vec<&Value> { bars.iter().filter(|b| b["kind"] == k).collect() };
    let gate = of_kind("gate");
    assert_eq!(gate.len(), 1, "{data}");
    assert!(
        end >= gate[0]["end_ms"].as_u64().unwrap_or(u64::MAX),
        "{data}"
    );
    assert_eq!(gate[0]["status"], "passed");
    assert_eq!(of_kind("gate_step").len(), 5, "{data}");
    assert_eq!(of_kind("task").len(), 6, "{data}");
    for b in bars {
        assert!(b["end_ms"].as_u64().unwrap_or(u64::MAX) <= end, "{b}");
        assert!(b["start_ms"].as_u64().unwrap_or(0) >= data["start_ms"].as_u64().unwrap_or(0));
    }
    // The gate runs after the tasks: its bar starts after the last task's ended.
    let last_task = of_kind("task")
        .iter()
        .filter_map(|b| b["end_ms"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        gate[0]["start_ms"].as_u64().unwrap_or(0) >= last_task,
        "{data}"
    );
    // It spans the run: its end is the run's end event.
    let run_ended = run_events(&report)
        .iter()
        .find(|e| e["event"] == "run_ended")
        .and_then(|e| e["t_ms"].as_u64())
        .expect("run_ended");
    assert_eq!(end, run_ended, "{data}");
}

/// Three tasks append their id to the same line, each from the content it finds: `a` merges,
/// `b` and `c` conflict; run again from the integration, `b` merges and `c` conflicts again;
/// its third round merges.
fn same_line_tasks(repo: &TestRepo) -> std::path::PathBuf {
    std::fs::write(repo.path.join("line.txt"), "base\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "line"]);
    let agent = r#"sed -i "1s/\$/ $FANOUT_TASK_ID/" line.txt"#;
    repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "sh", "args": ["-c", agent]}},
        "defaults": {"agent": "e"},
        "tasks": [
            {"id": "a", "prompt": "append a"},
            {"id": "b", "prompt": "append b"},
            {"id": "c", "prompt": "append c"}
        ]
    }))
}

#[test]
fn conflict_reruns_are_rounds_of_their_task_counted_once() {
    let repo = TestRepo::with_files(1);
    let file = same_line_tasks(&repo);
    let junit = repo.tmp.path().join("junit.xml");
    let html = repo.tmp.path().join("report.html");
    let (out, report) = repo.run(
        &file,
        &[
            "--no-readback",
            "--jobs",
            "3",
            "--on-conflict",
            "retry=2",
            "--junit",
            junit.to_str().expect("utf-8"),
            "--html",
            html.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // One entry per task.
    let tasks = report["tasks"].as_array().expect("tasks");
    let ids: Vec<&str> = tasks.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec!["a", "b", "c"], "{report}");
    let st = statuses(&report);
    assert!(st.values().all(|s| s == "merged"), "{st:?}");
    let rounds = |id: &str| -> Vec<(u64, String)> {
        task(&report, id)["rounds"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|k| {
                        (
                            k["round"].as_u64().unwrap_or(0),
                            k["status"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(rounds("a"), vec![], "a ran once");
    assert_eq!(
        rounds("b"),
        vec![(1, "conflict".into()), (2, "merged".into())]
    );
    assert_eq!(
        rounds("c"),
        vec![
            (1, "conflict".into()),
            (2, "conflict".into()),
            (3, "merged".into())
        ]
    );
    let c = task(&report, "c");
    assert_eq!(c["rounds"][0]["conflict_paths"], json!(["line.txt"]), "{c}");
    let starts: Vec<u64> = c["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| k["started_ms"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        starts[0] > 0 && starts.windows(2).all(|w| w[0] < w[1]),
        "{starts:?}"
    );
    // The counter counts tasks: never past 3, however many rounds ran.
    let err = stderr(&out);
    let counters: Vec<(u64, u64)> = err
        .lines()
        .filter_map(|l| {
            let inner = l.trim_start().strip_prefix('[')?.split(']').next()?;
            let (k, n) = inner.split_once('/')?;
            Some((k.trim().parse().ok()?, n.trim().parse().ok()?))
        })
        .collect();
    assert_eq!(counters.len(), 6, "a once, b twice, c three times: {err}");
    assert!(counters.iter().all(|&(k, n)| n == 3 && k <= 3), "{err}");
    assert!(err.contains("running it again (round 3)"), "{err}");
    // The table and JUnit say in which round a task ended.
    assert!(stdout(&out).contains("merged (round 3)"), "{}", show(&out));
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
    assert!(xml.contains("merged (round 2)"), "{xml}");
    // The timeline has a bar for every round.
    let data = timeline_data(&std::fs::read_to_string(&html).expect("the page"));
    let c_rounds = data["bars"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["task"] == "c")
        .count();
    assert_eq!(c_rounds, 3, "{data}");
}
