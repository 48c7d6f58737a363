//! The examples parse: the nightly CI workflow as YAML with the keys it needs, the systemd
//! units as INI with the keys systemd requires.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn example(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/nightly")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_nightly_workflow_is_valid_yaml_and_gates_the_pull_request_on_exit_0() {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&example("github-actions.yml")).expect("YAML");
    assert!(
        doc["on"]["schedule"][0]["cron"].as_str().is_some(),
        "{doc:?}"
    );
    let steps = doc["jobs"]["codemod"]["steps"]
        .as_sequence()
        .expect("steps");
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    let run = step("Run the codemod")["run"].as_str().unwrap();
    for flag in ["fanout run", "--json", "--junit", "--html"] {
        assert!(run.contains(flag), "{run}");
    }
    assert_eq!(
        step("Upload the reports")["uses"].as_str(),
        Some("actions/upload-artifact@v6")
    );
    let pr = step("Open a pull request");
    assert!(pr["if"].as_str().unwrap().contains("exit_code == '0'"));
    assert!(pr["run"].as_str().unwrap().contains("gh pr create"));
}

/// `[Section]` → key → values (a key may repeat), refusing anything else.
fn ini(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            out.entry(name.to_string()).or_default();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", n + 1));
        let s = section
            .clone()
            .unwrap_or_else(|| panic!("line {}: outside a section", n + 1));
        assert!(
            !key.trim().is_empty() && !key.contains(' '),
            "line {}: bad key",
            n + 1
        );
        out.entry(s)
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    out
}

#[test]
fn the_systemd_units_parse_with_their_required_keys() {
    let service = ini(&example("fanout-nightly.service"));
    let svc = &service["Service"];
    assert_eq!(svc["Type"], vec!["oneshot"]);
    assert!(
        svc["ExecStart"][0].starts_with('/'),
        "absolute, as systemd wants"
    );
    assert!(svc["ExecStart"][0].contains("fanout run --tasks"));
    assert!(service["Unit"].contains_key("Description"));
    let timer = ini(&example("fanout-nightly.timer"));
    assert!(timer["Timer"].contains_key("OnCalendar"));
    assert_eq!(timer["Install"]["WantedBy"], vec!["timers.target"]);
}
