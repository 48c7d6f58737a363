//! JUnit XML (`--junit PATH`): one test case per task, in one test suite per run, and one for
//! the integration gate when there is one. A task that did not end `merged` or `no_changes` is
//! a failure (`skipped` and `interrupted` are skipped test cases) whose text is its error or its failed gates. A
//! gate that passed only when run again (`verify_retries`) is a `<flakyFailure>` of a passing
//! case, as Maven Surefire writes them. The format is the common subset CI systems read
//! (Jenkins, GitLab, GitHub test reporters).

use crate::event::{Event, EventKind, Output, OutputError, RunView};
use crate::report::{RunReport, TaskReport, TaskStatus};

/// Renders the run's report as JUnit XML.
pub fn render(report: &RunReport) -> String {
    let gate = report.integration.as_ref();
    let tests = report.tasks.len() + usize::from(gate.is_some());
    let failures = report
        .tasks
        .iter()
        .filter(|t| {
            !t.status.is_success()
                && !matches!(t.status, TaskStatus::Skipped | TaskStatus::Interrupted)
        })
        .count()
        + usize::from(gate.is_some_and(|g| !g.passed));
    let skipped = report
        .tasks
        .iter()
        .filter(|t| matches!(t.status, TaskStatus::Skipped | TaskStatus::Interrupted))
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"fanout\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        report.duration_ms as f64 / 1000.0
    ));
    out.push_str(&format!(
        "  <testsuite name=\"fanout run {}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        esc(&report.run_id),
        report.duration_ms as f64 / 1000.0
    ));
    out.push_str("    <properties>\n");
    for (k, v) in [
        ("base", report.base.as_str()),
        ("integration_branch", report.integration_branch.as_str()),
        ("integration_commit", report.integration_commit.as_str()),
    ] {
        out.push_str(&format!(
            "      <property name=\"{k}\" value=\"{}\"/>\n",
            esc(v)
        ));
    }
    // Accounting (issue 23): what the run spent.
    out.push_str(&usage_properties(report.usage.as_ref(), "      "));
    out.push_str("    </properties>\n");
    for t in &report.tasks {
        out.push_str(&testcase(&report.run_id, t));
    }
    if let Some(g) = gate {
        out.push_str(&integration_case(&report.run_id, g));
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn testcase(run: &str, t: &TaskReport) -> String {
    let mut out = format!(
        "    <testcase classname=\"fanout.{}\" name=\"{}\" time=\"{:.3}\"",
        esc(run),
        esc(&t.id),
        t.duration_ms as f64 / 1000.0
    );
    let detail = failure_text(t);
    // Accounting (issue 23) and shards: what the task spent, the shard and host it ran on, as
    // the case's properties.
    let lines = format!(
        "{}{}",
        shard_properties(t),
        usage_properties(t.usage.as_deref(), "        ")
    );
    let properties = match lines.is_empty() {
        true => String::new(),
        false => format!("      <properties>\n{lines}      </properties>\n"),
    };
    // Every arm below opens the case with ">\n" right after its head: the properties go there.
    let head = out.len() + 2;
    match t.status {
        s if s.is_success() => {
            out.push_str(">\n");
            for g in t.verify.iter().filter(|g| g.flaky) {
                out.push_str(&flaky_failure(
                    g.detail.as_deref().unwrap_or("flaky"),
                    &g.gate,
                ));
            }
            out.push_str(&format!(
                "      <system-out>{}</system-out>\n    </testcase>\n",
                esc(&format!(
                    "{}: {} file(s) +{} -{}",
                    t.status_text(),
                    t.files.len(),
                    t.insertions,
                    t.deletions
                ))
            ));
        }
        TaskStatus::Skipped | TaskStatus::Interrupted => {
            out.push_str(&format!(
                ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                esc(first_line(&detail))
            ));
        }
        s => {
            out.push_str(&format!(
                ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                s.as_str(),
                esc(first_line(&detail)),
                esc(&detail)
            ));
        }
    }
    out.insert_str(head, &properties);
    out
}

/// `<property>` lines of a usage, indented by `indent` (nothing when there is none).
fn usage_properties(usage: Option<&crate::usage::Usage>, indent: &str) -> String {
    usage
        .map(|u| {
            u.fields()
                .into_iter()
                .map(|(k, v)| format!("{indent}<property name=\"usage.{k}\" value=\"{v}\"/>\n"))
                .collect()
        })
        .unwrap_or_default()
}

// Shards (`fanout combine`): the shard and host a task ran on, as `<property>` lines.
fn shard_properties(t: &TaskReport) -> String {
    let props: Vec<String> = [("shard", &t.shard), ("host", &t.host)]
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|v| format!("        <property name=\"{k}\" value=\"{}\"/>\n", esc(v)))
        })
        .collect();
    props.concat()
}

/// `<flakyFailure>`: the gate passed, but only when run again.
fn flaky_failure(detail: &str, gate: &str) -> String {
    format!(
        "      <flakyFailure type=\"{}\" message=\"{}\">{}</flakyFailure>\n",
        esc(gate),
        esc(first_line(detail)),
        esc(detail)
    )
}

/// The integration gate as a test case of its own: failed, passed, or passed but flaky.
fn integration_case(run: &str, g: &crate::report::IntegrationReport) -> String {
    let mut out = format!(
        "    <testcase classname=\"fanout.{}\" name=\"integration gate\" time=\"0.000\">\n",
        esc(run)
    );
    let summary = format!(
        "{} verify run(s); {} flaky; taken out: {}",
        g.verify_runs,
        g.flaky,
        if g.ejected.is_empty() {
            "none".to_string()
        } else {
            g.ejected.join(", ")
        }
    );
    let reason = g
        .reason
        .as_deref()
        .unwrap_or("the integration verify command failed");
    if !g.passed {
        out.push_str(&format!(
            "      <failure type=\"integration_failed\" message=\"{}\">{}</failure>\n",
            esc(first_line(reason)),
            esc(&format!(
                "{summary}\n{}",
                g.output.as_deref().unwrap_or(reason)
            ))
        ));
    } else if g.flaky > 0 {
        out.push_str(&flaky_failure(reason, "integration"));
    }
    out.push_str(&format!(
        "      <system-out>{}</system-out>\n    </testcase>\n",
        esc(&summary)
    ));
    out
}

/// The error, or the failed gates with their details and output.
fn failure_text(t: &TaskReport) -> String {
    let mut text = t.error.clone().unwrap_or_default();
    for g in t.verify.iter().filter(|g| !g.passed) {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "{} gate failed: {}",
            g.gate,
            g.detail.as_deref().unwrap_or("")
        ));
        if let Some(o) = g.both_outputs() {
            text.push('\n');
            text.push_str(&o);
        }
    }
    if text.is_empty() {
        text = t.status.as_str().to_string();
    }
    text
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// XML text and attribute escaping; characters XML 1.0 cannot hold become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Writes the JUnit file when the run ends.
pub struct JunitOutput {
    path: std::path::PathBuf,
    view: RunView,
}

impl JunitOutput {
    pub fn new(path: std::path::PathBuf) -> JunitOutput {
        JunitOutput {
            path,
            view: RunView::default(),
        }
    }
}

impl Output for JunitOutput {
    fn name(&self) -> String {
        format!("--junit {}", self.path.display())
    }

    fn event(&mut self, event: &Event) -> Result<(), OutputError> {
        self.view.apply(event);
        if let EventKind::RunEnded { report } = &event.kind {
            crate::report::write_text_atomic(&self.path, &render(report))
                .map_err(|e| OutputError::new(&self.name(), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> RunReport {
        let mut ok = TaskReport::new("ok", "a");
        ok.status = TaskStatus::Merged;
        let mut bad = TaskReport::new("bad<&>", "a");
        bad.status = TaskStatus::VerifyFailed;
        bad.verify.push(crate::report::GateResult {
            gate: "command".into(),
            passed: false,
            detail: Some("exit 1".into()),
            paths: vec![],
            output: Some("assert failed\u{1}".into()),
            stderr: None,
            flaky: false,
        });
        let mut skipped = TaskReport::new("later", "a");
        skipped.status = TaskStatus::Skipped;
        skipped.error = Some("dependency bad ended verify_failed".into());
        RunReport {
            run_id: "r1".into(),
            tasks: vec![ok, bad, skipped],
            ..RunReport::default()
        }
    }

    #[test]
    fn one_case_per_task_with_failures_and_skips() {
        let xml = render(&report());
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("name=\"bad&lt;&amp;&gt;\""), "{xml}");
        assert!(xml.contains("<failure type=\"verify_failed\""), "{xml}");
        assert!(xml.contains("command gate failed: exit 1"), "{xml}");
        assert!(xml.contains("assert failed\u{FFFD}"), "{xml}");
        assert!(xml.contains("<skipped message=\"dependency bad ended verify_failed\"/>"));
    }

    #[test]
    fn a_flaky_gate_and_the_integration_gate_have_their_elements() {
        let mut r = report();
        r.tasks[0].verify.push(crate::report::GateResult {
            gate: "command".into(),
            passed: true,
            detail: Some("flaky: failed 1 time(s), then passed; first failure: exit 1".into()),
            paths: vec![],
            output: None,
            stderr: None,
            flaky: true,
        });
        r.integration = Some(crate::report::IntegrationReport {
            verify_runs: 3,
            ejected: vec!["bad".into()],
            passed: false,
            flaky: 0,
            reason: Some("verify command failed (exited with status 1): 2 failing".into()),
            output: Some("verify command failed (exited with status 1): 2 failing\nmore".into()),
        });
        let xml = render(&r);
        assert!(xml.contains("tests=\"4\" failures=\"2\""), "{xml}");
        assert!(
            xml.contains("<flakyFailure type=\"command\" message=\"flaky: failed 1 time(s)"),
            "{xml}"
        );
        assert!(xml.contains("name=\"integration gate\""), "{xml}");
        assert!(
            xml.contains("<failure type=\"integration_failed\" message=\"verify command failed (exited with status 1): 2 failing\">"),
            "{xml}"
        );
        if let Some(g) = r.integration.as_mut() {
            g.passed = true;
            g.flaky = 1;
        }
        let xml = render(&r);
        assert!(xml.contains("tests=\"4\" failures=\"1\""), "{xml}");
        assert!(xml.contains("<flakyFailure type=\"integration\""), "{xml}");
    }

    #[test]
    fn junit_snapshot() {
        let xml = render(&crate::report::table::tests::sample());
        let expected = "\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<testsuites name=\"fanout\" tests=\"3\" failures=\"2\" skipped=\"0\" time=\"6.000\">
  <testsuite name=\"fanout run 20261202-070000-abcd\" tests=\"3\" failures=\"2\" errors=\"0\" skipped=\"0\" time=\"6.000\">
    <properties>
      <property name=\"base\" value=\"0123456789abcdef0123456789abcdef01234567\"/>
      <property name=\"integration_branch\" value=\"fanout/20261202-070000-abcd/merged\"/>
      <property name=\"integration_commit\" value=\"fedcba9876543210fedcba9876543210fedcba98\"/>
    </properties>
    <testcase classname=\"fanout.20261202-070000-abcd\" name=\"users-route\" time=\"4.200\">
      <system-out>merged: 1 file(s) +12 -3</system-out>
    </testcase>
    <testcase classname=\"fanout.20261202-070000-abcd\" name=\"orders-route\" time=\"1.000\">
      <failure type=\"conflict\" message=\"conflict\">conflict</failure>
    </testcase>
    <testcase classname=\"fanout.20261202-070000-abcd\" name=\"auth\" time=\"0.950\">
      <failure type=\"verify_failed\" message=\"verification failed after 2 attempt(s): exit 1\">verification failed after 2 attempt(s): exit 1
more</failure>
    </testcase>
  </testsuite>
</testsuites>
";
        assert_eq!(xml, expected);
    }
}
