//! The self-contained HTML report (`--html PATH`, `fanout report RUN --html PATH`): one file,
//! no network fetches, readable offline the next morning. A summary, a timeline of the tasks
//! per job slot, and per task (collapsed) its status, gates, attempts, the agent's last message
//! and token use, and its diff with intra-line highlights.

use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use super::junit::esc;
use crate::event::{Event, EventKind, Output, OutputError, RunView, TaskView};
use crate::report::{IntegrationReport, TaskReport, TaskStatus};

/// Largest diff shown per task; the rest is cut with a note (the patch file has it all).
const MAX_DIFF_BYTES: usize = 200_000;
/// Largest diff shown in the whole page.
const MAX_TOTAL_DIFF_BYTES: usize = 30_000_000;

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:16px 24px}
header h1{margin:0 0 4px;font-size:20px}
header .meta{opacity:.85;font-size:13px}
main{padding:16px 24px}
.counts span{display:inline-block;margin:0 8px 8px 0;padding:2px 10px;border-radius:12px;background:#e4e7ec}
.s-merged,.s-no_changes{background:#d6f5dd!important}
.s-conflict,.s-verify_failed,.s-integration_failed{background:#fde7c8!important}
.s-flaky{background:#fff3b0!important}
.s-failed,.s-timed_out,.s-budget_exceeded{background:#f9d0d0!important}
.s-skipped,.s-interrupted{background:#e4e7ec!important}
.timeline{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px;margin:12px 0;overflow-x:auto}
.bar-merged,.bar-no_changes{fill:#4caf50}.bar-conflict,.bar-verify_failed,.bar-integration_failed{fill:#f0a030}
.bar-failed,.bar-timed_out{fill:#e05050}.bar-skipped,.bar-unknown{fill:#9aa3af}
.bar-passed{fill:#2e7d32}.bar-integration_failed{fill:#b04080}
.tools{margin:8px 0}
.tools input{padding:4px 8px;width:260px}
details.task{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:6px 0}
details.task>summary{cursor:pointer;padding:6px 10px;list-style:none;display:flex;gap:12px;align-items:center}
details.task>summary .id{font-weight:600;min-width:220px}
details.task>summary .st{padding:0 8px;border-radius:10px}
.body{padding:4px 14px 12px}
table.gates{border-collapse:collapse;margin:6px 0}
table.gates td,table.gates th{border:1px solid #dde1e7;padding:3px 8px;text-align:left;vertical-align:top}
pre{background:#f3f4f6;padding:8px;overflow-x:auto;white-space:pre-wrap}
.diff{font:12px/1.4 ui-monospace,monospace;background:#fff;border:1px solid #dde1e7;overflow-x:auto}
.diff div{white-space:pre}
.diff .file{background:#e8ecf3;font-weight:600;padding:2px 6px}
.diff .hunk{color:#6b7280;background:#f3f4f6}
.diff .add{background:#e6ffec}.diff .del{background:#ffebe9}
.diff .add mark{background:#abf2bc}.diff .del mark{background:#ffb3ad}
.muted{color:#6b7280}
"#;

const SCRIPT: &str = r#"
(function(){
  var input=document.getElementById('filter');
  var boxes=document.querySelectorAll('details.task');
  function apply(){
    var q=(input.value||'').toLowerCase();
    for(var i=0;i<boxes.length;i++){
      var b=boxes[i];
      var text=(b.getAttribute('data-id')+' '+b.getAttribute('data-status')).toLowerCase();
      b.style.display=(q===''||text.indexOf(q)>=0)?'':'none';
    }
  }
  input.addEventListener('input',apply);
  document.getElementById('expand').addEventListener('click',function(){for(var i=0;i<boxes.length;i++){if(boxes[i].style.display!=='none'){boxes[i].open=true;}}});
  document.getElementById('collapse').addEventListener('click',function(){for(var i=0;i<boxes.length;i++){boxes[i].open=false;}});
})();
"#;

/// Renders the page. `patch` gives a task's patch text (from its patch file).
pub fn render(view: &RunView, patch: &dyn Fn(&TaskReport) -> Option<String>) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let report = view.report.as_ref();
    let run = &view.run;
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>fanout run {}</title><style>{STYLE}</style></head><body>",
        esc(run)
    );
    let _ = write!(
        out,
        "<header><h1>fanout run {}</h1><div class=\"meta\">",
        esc(run)
    );
    if let Some(r) = report {
        let _ = write!(
            out,
            "base {} ({}) · integration branch <code>{}</code> at {} · {:.1} s · sandbox {}{}",
            esc(&r.base_rev),
            esc(short(&r.base)),
            esc(&r.integration_branch),
            esc(short(&r.integration_commit)),
            r.duration_ms as f64 / 1000.0,
            esc(&r.sandbox.mode),
            if r.interrupted { " · INTERRUPTED" } else { "" }
        );
        // Accounting (issue 23): what the run spent.
        if let Some(u) = &r.usage {
            let _ = write!(out, " · spent {}", usage_span(u));
        }
    } else {
        out.push_str("the run has not ended");
    }
    out.push_str("</div></header><main>");
    // Counts.
    out.push_str("<div class=\"counts\">");
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in &view.tasks {
        *counts.entry(status_name(t)).or_default() += 1;
    }
    let _ = write!(out, "<span>{} task(s)</span>", view.tasks.len());
    for (s, n) in &counts {
        let _ = write!(out, "<span class=\"s-{s}\">{n} {s}</span>");
    }
    out.push_str("</div>");
    for w in view
        .warnings
        .iter()
        .chain(report.iter().flat_map(|r| r.warnings.iter()))
    {
        let _ = write!(out, "<p class=\"muted\">warning: {}</p>", esc(w));
    }
    timeline(&mut out, view);
    out.push_str(
        "<div class=\"tools\"><input id=\"filter\" placeholder=\"filter by id or status\"> \
         <button id=\"expand\">expand all</button> <button id=\"collapse\">collapse all</button></div>",
    );
    if let Some(g) = report.and_then(|r| r.integration.as_ref()) {
        integration_section(&mut out, g);
    }
    let mut budget = MAX_TOTAL_DIFF_BYTES;
    for t in &view.tasks {
        task_section(&mut out, t, patch, &mut budget);
    }
    let _ = writeln!(out, "</main><script>{SCRIPT}</script></body></html>");
    out
}

/// A usage in words, its figures in `data-` attributes (issue 23: accounting).
fn usage_span(u: &crate::usage::Usage) -> String {
    let data: String = u
        .fields()
        .into_iter()
        .map(|(k, v)| format!(" data-{}=\"{v}\"", k.replace('_', "-")))
        .collect();
    format!(
        "<span class=\"usage\"{data}>{} (in {}, of them cached {}; out {}, of them reasoning {})</span>",
        esc(&u.brief()),
        u.input_tokens,
        u.cached_input_tokens,
        u.output_tokens,
        u.reasoning_tokens
    )
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

fn status_name(t: &TaskView) -> &'static str {
    t.status.map(TaskStatus::as_str).unwrap_or("unknown")
}

/// One bar of the timeline: a task's round, the integration gate, or one of its steps.
#[derive(serde::Serialize)]
struct Bar {
    /// `task`, `gate` or `gate_step`.
    kind: &'static str,
    label: String,
    /// The row: a job slot for tasks; the gate's rows are below them.
    row: usize,
    start_ms: u64,
    end_ms: u64,
    /// The CSS class's status (`merged`, `conflict`, `passed`, `failed`, …).
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    round: Option<u32>,
}

/// The timeline's data, embedded in the page as JSON (`#timeline-data`): from the run's start
/// to its end, every bar with its times.
#[derive(serde::Serialize)]
struct TimelineData {
    start_ms: u64,
    end_ms: u64,
    bars: Vec<Bar>,
}

/// Every bar: each round of each task on its job slot's row; the integration gate and its
/// verify runs on two rows below.
fn timeline_data(view: &RunView) -> Option<TimelineData> {
    let fallback_end = view.ended_ms;
    let mut bars = Vec::new();
    for t in &view.tasks {
        let last = t.rounds.len();
        for (k, r) in t.rounds.iter().enumerate() {
            let Some(end) = r.ended_ms.or(fallback_end) else {
                continue;
            };
            // Every round but the last ended in a conflict: that is why it ran again.
            let status = if k + 1 < last {
                "conflict"
            } else {
                status_name(t)
            };
            bars.push(Bar {
                kind: "task",
                label: if last > 1 {
                    format!("{} (round {})", t.id, r.round)
                } else {
                    t.id.clone()
                },
                row: r.slot,
                start_ms: r.started_ms,
                end_ms: end.max(r.started_ms),
                status: status.to_string(),
                task: Some(t.id.clone()),
                round: Some(r.round),
            });
        }
    }
    let slots = bars.iter().map(|b| b.row + 1).max().unwrap_or(0);
    let verdict = |p: Option<bool>| match p {
        Some(true) => "passed",
        Some(false) => "failed",
        None => "unknown",
    };
    if let Some(g) = &view.gate {
        if let Some(end) = g.ended_ms.or(fallback_end) {
            bars.push(gate_bar("gate", slots, g, end, verdict(g.passed)));
        }
    }
    for g in &view.gate_steps {
        if let Some(end) = g.ended_ms.or(fallback_end) {
            bars.push(gate_bar("gate_step", slots + 1, g, end, verdict(g.passed)));
        }
    }
    if bars.is_empty() {
        return None;
    }
    let first = bars.iter().map(|b| b.start_ms).min().unwrap_or(0);
    let start_ms = if view.started_ms > 0 {
        view.started_ms.min(first)
    } else {
        first
    };
    let last = bars.iter().map(|b| b.end_ms).max().unwrap_or(start_ms);
    let end_ms = view.ended_ms.unwrap_or(last).max(last).max(start_ms + 1);
    Some(TimelineData {
        start_ms,
        end_ms,
        bars,
    })
}

fn gate_bar(
    kind: &'static str,
    row: usize,
    span: &crate::event::Span,
    end: u64,
    status: &str,
) -> Bar {
    Bar {
        kind,
        label: span.label.clone(),
        row,
        start_ms: span.started_ms,
        end_ms: end.max(span.started_ms),
        status: status.to_string(),
        task: None,
        round: None,
    }
}

/// An SVG timeline of the whole run, from its start to its end: one row per job slot, one bar
/// per round of a task; the integration gate and each of its verify runs on rows below.
fn timeline(out: &mut String, view: &RunView) {
    let Some(data) = timeline_data(view) else {
        return;
    };
    let (t0, t1) = (data.start_ms, data.end_ms);
    let rows = data.bars.iter().map(|b| b.row + 1).max().unwrap_or(1);
    let (width, row) = (1000.0_f64, 18.0_f64);
    let height = rows as f64 * row + 20.0;
    let _ = write!(
        out,
        "<div class=\"timeline\"><svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline\">"
    );
    let scale = |ms: u64| ms.saturating_sub(t0) as f64 / (t1 - t0) as f64 * (width - 10.0);
    for b in &data.bars {
        let x = scale(b.start_ms);
        let w = (scale(b.end_ms) - x).max(1.0);
        let y = b.row as f64 * row + 2.0;
        let _ = write!(
            out,
            "<rect class=\"bar-{}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"2\"><title>{} — {} — {:.1} s</title></rect>",
            esc(&b.status),
            row - 4.0,
            esc(&b.label),
            esc(&b.status),
            (b.end_ms - b.start_ms) as f64 / 1000.0
        );
    }
    let _ = write!(
        out,
        "<text x=\"0\" y=\"{:.0}\" font-size=\"11\" fill=\"#6b7280\">0 s</text><text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" fill=\"#6b7280\" text-anchor=\"end\">{:.1} s</text></svg>",
        height - 4.0,
        width - 4.0,
        height - 4.0,
        (t1 - t0) as f64 / 1000.0
    );
    // The data too, for tools (and tests) that read the page: `</` cannot end the script.
    let json = serde_json::to_string(&data)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let _ = write!(
        out,
        "<script type=\"application/json\" id=\"timeline-data\">{json}</script></div>"
    );
}

/// The integration gate, as a row like a task's: passed or failed (and flaky), its runs, the
/// tasks it took out, why it failed and the end of the output.
fn integration_section(out: &mut String, g: &IntegrationReport) {
    let status = if g.passed {
        "passed"
    } else {
        "integration_failed"
    };
    let class = if g.passed { "merged" } else { status };
    let _ = write!(
        out,
        "<details class=\"task gate\" data-id=\"integration gate\" data-status=\"{status}{}\"><summary><span class=\"id\">integration gate</span><span class=\"st s-{class}\">{status}</span>{}<span class=\"muted\">{} verify run(s)</span></summary><div class=\"body\">",
        if g.flaky > 0 { " flaky" } else { "" },
        if g.flaky > 0 {
            "<span class=\"st s-flaky\">flaky</span>"
        } else {
            ""
        },
        g.verify_runs
    );
    if let Some(reason) = &g.reason {
        let _ = write!(out, "<p><b>reason:</b> {}</p>", esc(reason));
    }
    let _ = write!(
        out,
        "<p class=\"muted\">taken out: {} · flaky runs: {}</p>",
        if g.ejected.is_empty() {
            "none".to_string()
        } else {
            esc(&g.ejected.join(", "))
        },
        g.flaky
    );
    if let Some(o) = &g.output {
        let _ = write!(out, "<pre>{}</pre>", esc(o));
    }
    out.push_str("</div></details>");
}

// Shards (`fanout combine`): where the task ran.
fn shard_span(r: &TaskReport) -> String {
    match (&r.shard, &r.host) {
        (Some(s), Some(h)) => format!(
            "<span class=\"muted\">shard {} on {}</span>",
            esc(s),
            esc(h)
        ),
        (Some(s), None) => format!("<span class=\"muted\">shard {}</span>", esc(s)),
        _ => String::new(),
    }
}

fn task_section(
    out: &mut String,
    t: &TaskView,
    patch: &dyn Fn(&TaskReport) -> Option<String>,
    budget: &mut usize,
) {
    let status = status_name(t);
    let flaky = t
        .report
        .as_ref()
        .is_some_and(|r| r.verify.iter().any(|g| g.flaky));
    let _ = write!(
        out,
        "<details class=\"task\" data-id=\"{}\" data-status=\"{status}{}\"><summary><span class=\"id\">{}</span><span class=\"st s-{status}\">{status}</span>{}",
        esc(&t.id),
        if flaky { " flaky" } else { "" },
        esc(&t.id),
        if flaky {
            "<span class=\"st s-flaky\">flaky</span>"
        } else {
            ""
        }
    );
    let Some(r) = &t.report else {
        out.push_str("</summary><div class=\"body muted\">no outcome recorded</div></details>");
        return;
    };
    // Integration repair (issue 21): taken out by the gate, then merged again.
    if let Some(k) = &r.repaired {
        let _ = write!(
            out,
            "<span class=\"muted\">repaired in round {}</span>",
            k.round
        );
    }
    let _ = write!(
        out,
        "<span>{} file(s) <span style=\"color:#1a7f37\">+{}</span> <span style=\"color:#cf222e\">−{}</span></span><span class=\"muted\">{:.1} s</span>{}</summary><div class=\"body\">",
        r.files.len(),
        r.insertions,
        r.deletions,
        r.duration_ms as f64 / 1000.0,
        shard_span(r)
    );
    if let Some(e) = &r.error {
        let _ = write!(out, "<p><b>error:</b> {}</p>", esc(e));
    }
    // Egress refusals (issue 19).
    for refused in &r.egress_refused {
        let _ = write!(out, "<p class=\"refused\">{}</p>", esc(&refused.line()));
    }
    rounds_line(out, r);
    super::html_candidates::table(out, r);
    let _ = write!(
        out,
        "<p class=\"muted\">agent {} · attempts {} · sandbox {}{}{}</p>",
        esc(&r.agent_name),
        r.attempts,
        esc(&r.sandbox),
        r.branch
            .as_ref()
            .map(|b| format!(" · branch <code>{}</code>", esc(b)))
            .unwrap_or_default(),
        r.usage
            .as_ref()
            .map(|u| format!(" · spent {}", usage_span(u)))
            .unwrap_or_default()
    );
    if !r.attempt_history.is_empty() {
        out.push_str("<table class=\"gates\"><tr><th>attempt</th><th>gate</th><th>result</th><th>detail</th></tr>");
        for a in &r.attempt_history {
            for g in &a.gates {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}{}</td></tr>",
                    a.number,
                    esc(&g.gate),
                    match (g.passed, g.flaky) {
                        (true, true) => "passed <span class=\"st s-flaky\">flaky</span>",
                        (true, false) => "passed",
                        (false, _) => "<b>failed</b>",
                    },
                    esc(g.detail.as_deref().unwrap_or("")),
                    g.output
                        .as_ref()
                        .map(|o| format!("<pre>{}</pre>", esc(o)))
                        .unwrap_or_default(),
                    g.stderr
                        .as_ref()
                        .map(|e| format!("<p class=\"muted\">stderr</p><pre>{}</pre>", esc(e)))
                        .unwrap_or_default()
                );
            }
            if a.gates.is_empty() {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td colspan=\"3\" class=\"muted\">{}</td></tr>",
                    a.number,
                    esc(a.failure.as_deref().unwrap_or("no gates ran"))
                );
            }
        }
        out.push_str("</table>");
    }
    for risky in &r.risky {
        let _ = write!(
            out,
            "<p>⚠ <code>{}</code>: {}</p>",
            esc(&risky.path),
            esc(&risky.why)
        );
    }
    if let Some(m) = &r.agent.last_message {
        let _ = write!(
            out,
            "<p><b>agent's last message</b></p><pre>{}</pre>",
            esc(m)
        );
    }
    match patch(r) {
        Some(p) if !p.is_empty() => {
            if *budget == 0 {
                out.push_str("<p class=\"muted\">diff left out: the page holds enough diffs; see the patch file</p>");
            } else {
                let cut = p.len().min(MAX_DIFF_BYTES).min(*budget);
                *budget -= cut;
                let mut end = cut;
                while !p.is_char_boundary(end) {
                    end -= 1;
                }
                diff_html(out, &p[..end]);
                if end < p.len() {
                    let _ = write!(
                        out,
                        "<p class=\"muted\">diff cut after {end} of {} bytes; the whole patch is in {}</p>",
                        p.len(),
                        esc(r.patch.as_deref().unwrap_or("the run's patches folder"))
                    );
                }
            }
        }
        _ => out.push_str("<p class=\"muted\">no diff</p>"),
    }
    out.push_str("</div></details>");
}

/// A task asked more than once (visible rounds, issue 21): each round, its kind, what caused
/// it and how it ended.
fn rounds_line(out: &mut String, r: &TaskReport) {
    if r.rounds.len() < 2 {
        return;
    }
    out.push_str("<ol class=\"rounds muted\">");
    for k in &r.rounds {
        let mut s = format!(
            "round {} ({}): {}",
            k.round,
            round_kind_name(k.kind),
            k.status.as_str()
        );
        if !k.conflict_paths.is_empty() {
            s.push_str(&format!(" in {}", k.conflict_paths.join(", ")));
        }
        if let Some(cause) = &k.cause {
            s.push_str(&format!(" — because {cause}"));
        }
        let _ = write!(out, "<li>{}</li>", esc(&s));
    }
    out.push_str("</ol>");
}

fn round_kind_name(kind: crate::report::RoundKind) -> &'static str {
    use crate::report::RoundKind::*;
    match kind {
        Agent => "agent",
        Feedback => "feedback",
        Retry => "retry",
        Resolve => "resolve",
        Repair => "repair",
    }
}

/// A unified diff as HTML, with the changed words of paired -/+ lines highlighted.
pub fn diff_html(out: &mut String, patch: &str) {
    out.push_str("<div class=\"diff\">");
    let lines: Vec<&str> = patch.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("diff --git") {
            let _ = write!(out, "<div class=\"file\">{}</div>", esc(l));
            i += 1;
        } else if l.starts_with("@@") {
            let _ = write!(out, "<div class=\"hunk\">{}</div>", esc(l));
            i += 1;
        } else if l.starts_with('-') && !l.starts_with("---") {
            // A run of deletions followed by a run of additions: pair them line by line.
            let del_start = i;
            while i < lines.len() && lines[i].starts_with('-') && !lines[i].starts_with("---") {
                i += 1;
            }
            let add_start = i;
            while i < lines.len() && lines[i].starts_with('+') && !lines[i].starts_with("+++") {
                i += 1;
            }
            let dels = &lines[del_start..add_start];
            let adds = &lines[add_start..i];
            for k in 0..dels.len().max(adds.len()) {
                match (dels.get(k), adds.get(k)) {
                    (Some(d), Some(a)) => {
                        let (dh, ah) = intra_line(&d[1..], &a[1..]);
                        let _ = write!(out, "<div class=\"del\">-{dh}</div>");
                        let _ = write!(out, "<div class=\"add\">+{ah}</div>");
                    }
                    (Some(d), None) => {
                        let _ = write!(out, "<div class=\"del\">{}</div>", esc(d));
                    }
                    (None, Some(a)) => {
                        let _ = write!(out, "<div class=\"add\">{}</div>", esc(a));
                    }
                    (None, None) => {}
                }
            }
        } else if l.starts_with('+') && !l.starts_with("+++") {
            let _ = write!(out, "<div class=\"add\">{}</div>", esc(l));
            i += 1;
        } else {
            let _ = write!(out, "<div>{}</div>", esc(l));
            i += 1;
        }
    }
    out.push_str("</div>");
}

/// The old and new line with the words that differ wrapped in `<mark>`.
fn intra_line(old: &str, new: &str) -> (String, String) {
    let diff = TextDiff::from_words(old, new);
    let (mut o, mut n) = (String::new(), String::new());
    for change in diff.iter_all_changes() {
        let text = esc(change.value());
        match change.tag() {
            ChangeTag::Equal => {
                o.push_str(&text);
                n.push_str(&text);
            }
            ChangeTag::Delete => {
                let _ = write!(o, "<mark>{text}</mark>");
            }
            ChangeTag::Insert => {
                let _ = write!(n, "<mark>{text}</mark>");
            }
        }
    }
    (o, n)
}

/// Reads a task's patch file (the one its report names).
pub fn patch_file(r: &TaskReport) -> Option<String> {
    r.patch
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Writes the HTML report when the run ends.
pub struct HtmlOutput {
    path: std::path::PathBuf,
    view: RunView,
}

impl HtmlOutput {
    pub fn new(path: std::path::PathBuf) -> HtmlOutput {
        HtmlOutput {
            path,
            view: RunView::default(),
        }
    }
}

impl Output for HtmlOutput {
    fn name(&self) -> String {
        format!("--html {}", self.path.display())
    }

    fn event(&mut self, event: &Event) -> Result<(), OutputError> {
        self.view.apply(event);
        if let EventKind::RunEnded { .. } = &event.kind {
            let page = render(&self.view, &patch_file);
            crate::report::write_text_atomic(&self.path, &page)
                .map_err(|e| OutputError::new(&self.name(), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_words_are_marked_and_html_is_escaped() {
        let mut out = String::new();
        diff_html(
            &mut out,
            "diff --git a/x b/x\n@@ -1 +1 @@\n-let a = <old>;\n+let a = <new>;\n context\n",
        );
        assert!(
            out.contains("<mark>&lt;old&gt;;</mark>") || out.contains("<mark>&lt;old"),
            "{out}"
        );
        assert!(out.contains("class=\"add\""), "{out}");
        assert!(!out.contains("<old>"), "{out}");
    }

    #[test]
    fn the_timeline_runs_from_the_start_to_the_end_with_rounds_and_the_gate() {
        let at = |t_ms: u64, json: serde_json::Value| -> Event {
            let mut line = json;
            line["v"] = 1.into();
            line["t_ms"] = t_ms.into();
            line["run"] = "r".into();
            serde_json::from_value(line).expect("an event")
        };
        let mut view = RunView::default();
        let events = [
            // An event log of an older fanout: `task_started` without `round`.
            at(
                1_000,
                serde_json::json!({"event": "task_started", "task": "a", "slot": 0}),
            ),
            at(
                2_000,
                serde_json::json!({"event": "task_started", "task": "b", "slot": 1}),
            ),
            at(
                3_000,
                serde_json::json!({"event": "task_ended", "task": "a", "report": {"id": "a", "status": "merged"}, "resume_state": "verified"}),
            ),
            at(
                4_000,
                serde_json::json!({"event": "task_ended", "task": "b", "report": {"id": "b", "status": "conflict"}, "resume_state": "verified"}),
            ),
            at(
                4_500,
                serde_json::json!({"event": "task_started", "task": "b", "slot": 0, "round": 2}),
            ),
            at(
                5_000,
                serde_json::json!({"event": "task_ended", "task": "b", "report": {"id": "b", "status": "merged"}, "resume_state": "verified"}),
            ),
            at(
                5_100,
                serde_json::json!({"event": "integration_gate_started", "tasks": 2}),
            ),
            at(
                5_200,
                serde_json::json!({"event": "gate_step_started", "verify_run": 1, "kind": "full", "prefix": 2, "tasks": 2}),
            ),
            at(
                9_000,
                serde_json::json!({"event": "gate_step_ended", "verify_run": 1, "kind": "full", "prefix": 2, "tasks": 2, "passed": true, "elapsed_ms": 3800}),
            ),
            at(
                9_100,
                serde_json::json!({"event": "integration_verified", "passed": true, "verify_runs": 1}),
            ),
        ];
        for e in &events {
            view.apply(e);
        }
        view.ended_ms = Some(9_500);
        let data = timeline_data(&view).expect("a timeline");
        assert_eq!((data.start_ms, data.end_ms), (1_000, 9_500));
        let bars: Vec<(&str, &str, u64, u64, &str)> = data
            .bars
            .iter()
            .map(|b| {
                (
                    b.kind,
                    b.label.as_str(),
                    b.start_ms,
                    b.end_ms,
                    b.status.as_str(),
                )
            })
            .collect();
        assert_eq!(
            bars,
            vec![
                ("task", "a", 1_000, 3_000, "merged"),
                ("task", "b (round 1)", 2_000, 4_000, "conflict"),
                ("task", "b (round 2)", 4_500, 5_000, "merged"),
                (
                    "gate",
                    "integration gate (2 task(s))",
                    5_100,
                    9_100,
                    "passed"
                ),
                (
                    "gate_step",
                    "integration gate: all 2 task(s)",
                    5_200,
                    9_000,
                    "passed"
                ),
            ]
        );
        let mut out = String::new();
        timeline(&mut out, &view);
        assert!(
            out.contains("id=\"timeline-data\">{\"start_ms\":1000,\"end_ms\":9500"),
            "{out}"
        );
    }

    #[test]
    fn the_integration_gate_has_a_row_and_flaky_and_failed_badges_are_styled() {
        let mut report = crate::report::table::tests::sample();
        report.tasks[0].verify.push(crate::report::GateResult {
            gate: "command".into(),
            passed: true,
            detail: Some("flaky: failed 1 time(s), then passed".into()),
            paths: vec![],
            output: None,
            stderr: None,
            flaky: true,
        });
        report.tasks[1].status = TaskStatus::IntegrationFailed;
        report.integration = Some(IntegrationReport {
            verify_runs: 4,
            ejected: vec!["orders-route".into()],
            passed: true,
            flaky: 1,
            reason: Some("verify command failed (exited with status 1): 1 failing <x>".into()),
            output: None,
        });
        let mut view = RunView::default();
        view.apply(&Event {
            v: crate::event::EVENT_SCHEMA_VERSION,
            t_ms: 1,
            run: "r".into(),
            kind: EventKind::RunEnded {
                report: std::sync::Arc::new(report),
            },
        });
        let page = render(&view, &|_| None);
        assert!(
            page.contains("data-id=\"integration gate\" data-status=\"passed flaky\""),
            "{page}"
        );
        assert!(
            page.contains(
                "<b>reason:</b> verify command failed (exited with status 1): 1 failing &lt;x&gt;"
            ),
            "{page}"
        );
        assert!(page.contains("taken out: orders-route"), "{page}");
        assert!(page.contains("data-status=\"merged flaky\""), "{page}");
        assert!(
            page.contains("<span class=\"st s-integration_failed\">integration_failed</span>"),
            "{page}"
        );
        assert!(
            STYLE.contains(".s-integration_failed{") || STYLE.contains(",.s-integration_failed{")
        );
        assert!(STYLE.contains(".s-flaky{"));
    }
}
