//! `fanout report RUN [--html PATH] [--junit PATH]`: renders a finished (or interrupted) run's
//! outputs again from its event stream (`run-events.jsonl`), e.g. the morning after a nightly job.

use super::args::ReportArgs;

use super::common::{EXIT_OK, EXIT_USAGE};
use crate::event::{Event, RunView};

pub fn run(a: ReportArgs) -> anyhow::Result<i32> {
    if a.html.is_none() && a.junit.is_none() {
        eprintln!("fanout: say what to write: --html PATH and/or --junit PATH");
        return Ok(EXIT_USAGE);
    }
    let run = super::common::resolve_run(&a.repo, &a.run)?;
    let repo = super::common::open_repo(&a.repo)?;
    let run_dir = repo.runs_dir().join(run.as_str());
    let view = load_view(&run_dir)?;
    let Some(report) = view.report.clone() else {
        eprintln!("fanout: run {run} has no report yet (it is running, or was killed before it wrote one; `fanout resume {run}` finishes it)");
        return Ok(EXIT_USAGE);
    };
    if let Some(p) = &a.html {
        let page = crate::output::html::render(&view, &crate::output::html::patch_file);
        crate::report::write_text_atomic(p, &page)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    if let Some(p) = &a.junit {
        crate::report::write_text_atomic(p, &crate::output::junit::render(&report))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    Ok(EXIT_OK)
}

/// The run's events folded; when the stream has no end (a killed run), `report.json` stands in.
fn load_view(run_dir: &std::path::Path) -> anyhow::Result<RunView> {
    let mut view = RunView::default();
    if let Ok(text) = std::fs::read_to_string(run_dir.join(crate::runner::events::RUN_EVENTS)) {
        for line in text.lines() {
            // A torn last line (kill -9) is skipped.
            if let Ok(e) = serde_json::from_str::<Event>(line) {
                view.apply(&e);
            }
        }
    }
    if view.report.is_none() {
        if let Ok(bytes) = std::fs::read(crate::run_dir::RunDir::new(run_dir).report()) {
            if let Ok(report) = serde_json::from_slice(&bytes) {
                let e = Event::new(
                    run_dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                        .as_str(),
                    crate::event::EventKind::RunEnded {
                        report: std::sync::Arc::new(report),
                    },
                );
                view.apply(&e);
            }
        }
    }
    Ok(view)
}
