//! The terminal output (stderr): on a TTY a live display — one line per running task (id,
//! phase, elapsed, last agent activity) under an overall bar with counts and ETA, or the run's
//! long phase (the integration gate, a bisection step) while one runs, redrawn at a bounded
//! rate — and, elsewhere (CI), one plain line per task transition and gate step, plus a
//! heartbeat ("still running: …") when nothing was printed for a minute. A task run again
//! after a conflict is counted once. Warnings are always printed. `NO_COLOR` and `--color` are
//! respected; the final table goes to stdout (the CLI).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use super::progress::{clock, heartbeat_every, Progress};
use crate::event::{Event, EventKind, Output, OutputError};
use crate::report::table::short;
use crate::report::{TaskReport, TaskStatus};

/// How often the live display may redraw.
const REDRAW_EVERY: Duration = Duration::from_millis(150);

/// Colour choice (`--color`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour a stream that is (or is not) a terminal; `NO_COLOR` wins over `auto`.
    pub fn enabled(self, is_tty: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

struct Running {
    started: Instant,
    phase: String,
    activity: String,
    round: u32,
}

/// Tasks the heartbeat names before it says how many more run.
const HEARTBEAT_TASKS: usize = 6;

/// The terminal output on stderr.
pub struct TerminalOutput {
    live: bool,
    color: bool,
    quiet: bool,
    total: usize,
    done: usize,
    counts: BTreeMap<&'static str, usize>,
    running: BTreeMap<String, Running>,
    drawn_lines: usize,
    last_draw: Option<Instant>,
    started: Instant,
    durations_ms: Vec<u64>,
    jobs: usize,
    /// Tasks that ended, with the count they are in (a task run again moves between them).
    ended: BTreeMap<String, &'static str>,
    progress: Progress,
    /// When the last line was printed (plain output: the heartbeat's clock).
    last_line: Instant,
    heartbeat: Duration,
    run_open: bool,
    /// Visible rounds (issue 21): each task's last round (`round_started`), so the numbers
    /// shown are the report's (feedback rounds counted).
    rounds_seen: BTreeMap<String, u32>,
}

impl TerminalOutput {
    /// `live`: redraw a live view (stderr is a terminal); `quiet`: only warnings.
    pub fn new(live: bool, color: bool, quiet: bool) -> TerminalOutput {
        TerminalOutput {
            live: live && !quiet,
            color,
            quiet,
            total: 0,
            done: 0,
            counts: BTreeMap::new(),
            running: BTreeMap::new(),
            drawn_lines: 0,
            last_draw: None,
            started: Instant::now(),
            durations_ms: Vec::new(),
            jobs: 1,
            ended: BTreeMap::new(),
            progress: Progress::default(),
            last_line: Instant::now(),
            heartbeat: heartbeat_every(),
            run_open: false,
            rounds_seen: BTreeMap::new(),
        }
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn status_color(status: &str) -> &'static str {
        match status {
            "merged" | "verified" | "no changes" | "no_changes" => "32",
            "conflict" | "verify_failed" | "integration_failed" | "flaky" | "interrupted" => "33",
            "failed" | "timed_out" => "31",
            _ => "2",
        }
    }

    /// Prints lines above the live area (which is then drawn again).
    fn print(&mut self, lines: &[String]) -> Result<(), OutputError> {
        let mut err = std::io::stderr().lock();
        let mut text = String::new();
        if self.live {
            text.push_str(&self.clear_live());
        }
        for l in lines {
            text.push_str(&crate::redact::redact(l));
            text.push('\n');
        }
        err.write_all(text.as_bytes())
            .and_then(|_| err.flush())
            .map_err(|e| OutputError::new("terminal", e))?;
        drop(err);
        self.last_line = Instant::now();
        if self.live {
            self.draw(true)?;
        }
        Ok(())
    }

    fn clear_live(&mut self) -> String {
        let mut s = String::new();
        for _ in 0..self.drawn_lines {
            s.push_str("\x1b[1A\x1b[2K");
        }
        self.drawn_lines = 0;
        s
    }

    fn draw(&mut self, force: bool) -> Result<(), OutputError> {
        if !self.live {
            return Ok(());
        }
        if !force && self.last_draw.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return Ok(());
        }
        self.last_draw = Some(Instant::now());
        let width = terminal_width();
        let mut text = self.clear_live();
        let mut lines = Vec::new();
        for (id, r) in &self.running {
            let line = format!(
                "  {}{} {:<14} {:>6.1}s  {}",
                id,
                round_note(r.round),
                r.phase,
                r.started.elapsed().as_secs_f64(),
                r.activity
            );
            lines.push(cut(&line, width));
        }
        lines.push(cut(&self.bar(), width));
        for l in &lines {
            text.push_str(&crate::redact::redact(l));
            text.push('\n');
        }
        self.drawn_lines = lines.len();
        let mut err = std::io::stderr().lock();
        err.write_all(text.as_bytes())
            .and_then(|_| err.flush())
            .map_err(|e| OutputError::new("terminal", e))
    }

    fn bar(&self) -> String {
        let width = 24usize;
        let filled = (self.done * width).checked_div(self.total).unwrap_or(0);
        let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled));
        let now = Instant::now();
        // A long phase of the run is named instead of counts that do not move.
        if let Some(label) = self.progress.gate_label(now) {
            return format!("{bar} {label}");
        }
        if self.running.is_empty() {
            if let Some(label) = self.progress.stage_label(now) {
                return format!("{bar} {}/{} done · {label}", self.done, self.total);
            }
        }
        let eta = if self.done > 0
            && self.done < self.total
            && !self.running.is_empty()
            && !self.progress.past_tasks()
            && !self.durations_ms.is_empty()
        {
            // Remaining tasks at the observed rate of completed ones.
            let elapsed = self.started.elapsed().as_secs_f64();
            let per_task = elapsed / self.done as f64;
            format!(" · ETA {:.0}s", per_task * (self.total - self.done) as f64)
        } else {
            String::new()
        };
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| self.paint(&format!("{v} {k}"), Self::status_color(k)))
            .collect();
        format!(
            "{bar} {}/{} done · {} running{}{}{}",
            self.done,
            self.total,
            self.running.len(),
            if counts.is_empty() { "" } else { " · " },
            counts.join(" · "),
            eta
        )
    }

    fn finished_line(&self, r: &TaskReport, verified: bool, round: u32) -> String {
        let status = if verified {
            "verified"
        } else if r.status == TaskStatus::NoChanges {
            "no changes"
        } else {
            r.status.as_str()
        };
        let width = self.total.to_string().len();
        let mut line = format!(
            "  [{:>width$}/{}] {} {}{}: {} file(s) +{} -{} in {:.1} s",
            self.done,
            self.total,
            r.id,
            self.paint(status, Self::status_color(status)),
            round_note(round),
            r.files.len(),
            r.insertions,
            r.deletions,
            r.duration_ms as f64 / 1000.0
        );
        if r.queued_ms >= 100 {
            line.push_str(&format!(" (queued {:.1} s)", r.queued_ms as f64 / 1000.0));
        }
        if let Some(e) = &r.error {
            line.push_str(&format!(" — {}", e.lines().next().unwrap_or("")));
        }
        if let Some(g) = r.verify.iter().find(|g| g.flaky) {
            let flaky = format!("{} gate {}", g.gate, g.detail.as_deref().unwrap_or("flaky"));
            line.push_str(&format!(" — {}", self.paint(&flaky, "33")));
        }
        line
    }

    fn set_phase(&mut self, task: &str, phase: &str) {
        if let Some(r) = self.running.get_mut(task) {
            r.phase = phase.to_string();
        }
    }
}

impl Output for TerminalOutput {
    fn name(&self) -> String {
        "terminal".into()
    }

    fn event(&mut self, e: &Event) -> Result<(), OutputError> {
        if let Some(line) = self.progress.event(&e.kind) {
            if !self.quiet {
                self.print(&[line])?;
            }
        }
        match &e.kind {
            EventKind::Warning { task, message } => {
                let text = match task {
                    Some(t) => format!("{t}: {message}"),
                    None => message.clone(),
                };
                let line = format!("fanout: {} {text}", self.paint("warning:", "33"));
                let quiet = self.quiet;
                self.quiet = false;
                let r = self.print(&[line]);
                self.quiet = quiet;
                return r;
            }
            // Egress refusals (issue 19): shown like warnings, even when quiet.
            EventKind::EgressRefused {
                task,
                phase,
                host,
                port,
                reason,
            } => {
                let dest = crate::report::EgressRefusal {
                    host: host.clone(),
                    port: *port,
                    ..Default::default()
                }
                .destination();
                let line = format!(
                    "fanout: {} {task}: egress refused ({phase}): {dest}: {reason}; allow it in the task file's network.{phase}",
                    self.paint("warning:", "33")
                );
                let quiet = self.quiet;
                self.quiet = false;
                let r = self.print(&[line]);
                self.quiet = quiet;
                return r;
            }
            _ if self.quiet => return Ok(()),
            EventKind::RunStarted {
                mode,
                base,
                base_rev,
                jobs,
                tasks,
                sandbox,
                workspace,
                ..
            } => {
                self.total = tasks.len();
                self.jobs = *jobs;
                self.started = Instant::now();
                self.run_open = true;
                let sb = match (sandbox.mode.as_str(), sandbox.kernel_abi) {
                    ("off", _) => self.paint("OFF", "31"),
                    (_, Some(abi)) => format!("landlock (kernel ABI {abi})"),
                    (_, None) => {
                        "landlock (not supported by this kernel: agents will not start)".into()
                    }
                };
                let root = match &sandbox.agent_user {
                    Some(who) => {
                        format!("; fanout runs as root: agents run as {who}, no capabilities")
                    }
                    None => String::new(),
                };
                let verb = if mode == "resume" { "resumed" } else { "run" };
                return self.print(&[
                    format!(
                        "fanout: {verb} {} — {} task(s) from {base_rev} ({}), {jobs} at a time, sandbox {sb}{root}",
                        e.run,
                        tasks.len(),
                        short(base)
                    ),
                    format!("fanout: workspaces: {} ({})", workspace.mode, workspace.reason),
                ]);
            }
            EventKind::TaskStarted { task, round, .. } => {
                // A run again is the round after the task's last one.
                let round = &match self.rounds_seen.get(task) {
                    Some(n) if *round > 1 => n + 1,
                    _ => *round,
                };
                self.running.insert(
                    task.clone(),
                    Running {
                        started: Instant::now(),
                        phase: "workspace".into(),
                        activity: String::new(),
                        round: *round,
                    },
                );
                if !self.live {
                    return self.print(&[format!("  start  {task}{}", round_note(*round))]);
                }
            }
            EventKind::Phase { task, phase } if phase.is_running() => {
                self.set_phase(task, &phase.describe())
            }
            EventKind::AgentEvent { task, summary, .. } => {
                if let Some(r) = self.running.get_mut(task) {
                    r.activity = summary.lines().next().unwrap_or("").to_string();
                }
            }
            EventKind::GateFailed { task, gate, .. } => {
                if let Some(r) = self.running.get_mut(task) {
                    r.activity = format!("{gate} gate failed");
                }
            }
            EventKind::TaskEnded {
                task,
                report,
                resume_state,
            } => {
                let round = self.running.remove(task).map_or(1, |r| r.round);
                let key = match report.status {
                    _ if resume_state == "verified" => "verified",
                    s => s.as_str(),
                };
                self.count_end(task, key, report.duration_ms);
                let line = self.finished_line(report, resume_state == "verified", round);
                return self.print(&[line]);
            }
            EventKind::RoundStarted { task, round, .. } => {
                self.rounds_seen.insert(task.clone(), *round);
                if let Some(r) = self.running.get_mut(task) {
                    r.round = *round;
                }
            }
            EventKind::ConflictRetry { task, round, paths } => {
                let next = self.rounds_seen.get(task).map_or(round + 1, |n| n + 1);
                let line = format!(
                    "  {task}: {} in {} — running it again (round {next})",
                    self.paint("conflict", "33"),
                    paths.join(", "),
                );
                return self.print(&[line]);
            }
            // Overlap before dispatch (issue 21).
            EventKind::Overlap {
                tasks,
                paths,
                serialized,
            } => {
                let how = match serialized {
                    true => "one after another (overlap: serialize)",
                    false => "at the same time; they may conflict (overlap: parallel)",
                };
                let line = format!(
                    "fanout: tasks {} overlap in {} — {how}",
                    few(tasks, 8),
                    few(paths, 4)
                );
                return self.print(&[line]);
            }
            EventKind::IntegrationStarted { ready } => {
                return self.print(&[format!(
                    "fanout: integrating {ready} verified commit(s) onto the merged branch"
                )]);
            }
            EventKind::Conflict { task, .. } => {
                let line = format!("  {task}: {}", self.paint("conflict", "33"));
                return self.print(&[line]);
            }
            EventKind::RunEnded { .. } => {
                if self.live {
                    let clear = self.clear_live();
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(clear.as_bytes());
                    let _ = err.flush();
                }
                self.live = false;
                self.run_open = false;
                return Ok(());
            }
            _ => {}
        }
        self.draw(false)
    }

    fn tick(&mut self) -> Result<(), OutputError> {
        // CI's plain output: a line at least every heartbeat while the run goes on.
        if !self.live && !self.quiet && self.run_open && self.last_line.elapsed() >= self.heartbeat
        {
            let line = format!("fanout: still running: {}", self.still_running());
            return self.print(&[line]);
        }
        self.draw(false)
    }
}

impl TerminalOutput {
    /// A task ended under `key`: counted once, however many rounds it runs.
    fn count_end(&mut self, task: &str, key: &'static str, duration_ms: u64) {
        match self.ended.insert(task.to_string(), key) {
            Some(before) => {
                if let Some(n) = self.counts.get_mut(before) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.counts.remove(before);
                    }
                }
            }
            None => {
                self.done += 1;
                self.durations_ms.push(duration_ms);
            }
        }
        *self.counts.entry(key).or_default() += 1;
    }

    /// What the run is at, for the heartbeat: the gate's step, the running tasks with their
    /// phase and time, or the stage after the tasks.
    fn still_running(&self) -> String {
        let now = Instant::now();
        if let Some(gate) = self.progress.gate_label(now) {
            return gate;
        }
        if !self.running.is_empty() {
            let mut named: Vec<String> = self
                .running
                .iter()
                .take(HEARTBEAT_TASKS)
                .map(|(id, r)| {
                    format!(
                        "{id}{} ({}, {})",
                        round_note(r.round),
                        r.phase,
                        clock(r.started.elapsed())
                    )
                })
                .collect();
            if self.running.len() > HEARTBEAT_TASKS {
                named.push(format!("and {} more", self.running.len() - HEARTBEAT_TASKS));
            }
            return named.join(", ");
        }
        match self.progress.stage_label(now) {
            Some(stage) => stage,
            None => format!("the run, {}", clock(self.started.elapsed())),
        }
    }
}

/// ` (round 2)` for a task run again after a conflict; nothing for its first run.
fn round_note(round: u32) -> String {
    if round > 1 {
        format!(" (round {round})")
    } else {
        String::new()
    }
}

fn cut(line: &str, width: usize) -> String {
    // Counting chars is enough here: escape codes only appear in the bar's counts.
    if line.chars().count() <= width || line.contains('\x1b') {
        line.to_string()
    } else {
        line.chars()
            .take(width.saturating_sub(1))
            .collect::<String>()
            + "…"
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w: &usize| *w >= 20)
        .or_else(|| {
            let mut ws = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ fills a winsize for a terminal descriptor (stderr).
            #[allow(unsafe_code)]
            let rc = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
            (rc == 0 && ws.ws_col >= 20).then_some(ws.ws_col as usize)
        })
        .unwrap_or(100)
}

/// The first `n` of `items`, and how many more (`a, b, c and 5 more`).
fn few(items: &[String], n: usize) -> String {
    let shown = items[..items.len().min(n)].join(", ");
    match items.len().saturating_sub(n) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_and_choices() {
        assert!(ColorChoice::Always.enabled(false));
        assert!(!ColorChoice::Never.enabled(true));
        assert!(!ColorChoice::Auto.enabled(false));
    }

    fn ev(kind: EventKind) -> Event {
        Event::new("r", kind)
    }

    fn ended(task: &str, status: TaskStatus, resume_state: &str) -> EventKind {
        let mut report = TaskReport::new(task, "e");
        report.status = status;
        EventKind::TaskEnded {
            task: task.into(),
            report: Box::new(report),
            resume_state: resume_state.into(),
        }
    }

    fn started(task: &str, round: u32) -> EventKind {
        EventKind::TaskStarted {
            task: task.into(),
            slot: 0,
            round,
        }
    }

    /// A plain terminal following two tasks (it prints its lines to stderr).
    fn two_tasks() -> TerminalOutput {
        let mut t = TerminalOutput::new(false, false, false);
        t.total = 2;
        t.run_open = true;
        t
    }

    #[test]
    fn a_task_run_again_after_a_conflict_is_counted_once() {
        let mut t = two_tasks();
        for kind in [
            started("a", 1),
            started("b", 1),
            ended("a", TaskStatus::Merged, "verified"),
            ended("b", TaskStatus::Merged, "verified"),
            EventKind::ConflictRetry {
                task: "b".into(),
                round: 1,
                paths: vec!["x".into()],
            },
            started("b", 2),
            ended("b", TaskStatus::Failed, "failed"),
        ] {
            t.event(&ev(kind)).expect("event");
        }
        assert_eq!(t.done, 2);
        assert_eq!(t.counts.get("verified"), Some(&1));
        assert_eq!(t.counts.get("failed"), Some(&1));
        assert!(t.bar().contains("2/2 done"), "{}", t.bar());
    }

    #[test]
    fn the_bar_names_the_gate_step_and_shows_no_eta() {
        let mut t = two_tasks();
        for kind in [
            started("a", 1),
            started("b", 1),
            ended("a", TaskStatus::Merged, "verified"),
        ] {
            t.event(&ev(kind)).expect("event");
        }
        t.durations_ms.push(1);
        assert!(t.bar().contains("ETA"), "{}", t.bar());
        for kind in [
            ended("b", TaskStatus::Merged, "verified"),
            EventKind::IntegrationStarted { ready: 2 },
        ] {
            t.event(&ev(kind)).expect("event");
        }
        assert!(
            t.bar()
                .contains("2/2 done · integrating 2 verified commit(s), 0m0"),
            "{}",
            t.bar()
        );
        t.event(&ev(EventKind::IntegrationGateStarted { tasks: 2 }))
            .expect("event");
        t.event(&ev(EventKind::GateStepStarted {
            step: crate::event::GateStep {
                verify_run: 2,
                kind: crate::event::GateStepKind::Bisect,
                step: Some(1),
                steps: Some(1),
                prefix: 1,
                tasks: 2,
            },
        }))
        .expect("event");
        let bar = t.bar();
        assert!(
            bar.contains("bisect step 1/1: first 1 of 2 tasks, 0m0"),
            "{bar}"
        );
        assert!(!bar.contains("ETA") && !bar.contains("running"), "{bar}");
        assert!(t.still_running().starts_with("bisect step 1/1"));
    }

    #[test]
    fn long_lines_are_cut_to_the_terminal() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
