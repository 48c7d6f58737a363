//! The outputs of a run's event stream (`crate::event`): the terminal (live or plain),
//! `--json` lines, JUnit XML and the self-contained HTML report. `report.json` and
//! `state.json` are written by the runner's own outputs (`runner::events`).

pub mod html;
pub mod html_candidates;
pub mod jsonl;
pub mod junit;
pub mod progress;
pub mod terminal;
