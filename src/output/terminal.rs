//! The terminal output (stderr): on a TTY a live display — one line per running task (id,
//! phase, elapsed, last agent activity) under an overall bar with counts and ETA, redrawn at a
//! bounded rate — and, elsewhere (CI), one plain line per task transition. Warnings are always
//! printed. `NO_COLOR` and `--color` are respected; the final table goes to stdout (the CLI).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

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
}

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
            "conflict" | "verify_failed" | "integration_failed" | "flaky" => "33",
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
                "  {} {:<10} {:>6.1}s  {}",
                id,
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
        let eta = if self.done > 0 && self.done < self.total && !self.durations_ms.is_empty() {
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
            "[{}{}] {}/{} done · {} running{}{}{}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total,
            self.running.len(),
            if counts.is_empty() { "" } else { " · " },
            counts.join(" · "),
            eta
        )
    }

    fn finished_line(&self, r: &TaskReport, verified: bool) -> String {
        let status = if verified {
            "verified"
        } else if r.status == TaskStatus::NoChanges {
            "no changes"
        } else {
            r.status.as_str()
        };
        let width = self.total.to_string().len();
        let mut line = format!(
            "  [{:>width$}/{}] {} {}: {} file(s) +{} -{} in {:.1} s",
            self.done,
            self.total,
            r.id,
            self.paint(status, Self::status_color(status)),
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
            EventKind::TaskStarted { task, .. } => {
                self.running.insert(
                    task.clone(),
                    Running {
                        started: Instant::now(),
                        phase: "workspace".into(),
                        activity: String::new(),
                    },
                );
                if !self.live {
                    return self.print(&[format!("  start  {task}")]);
                }
            }
            EventKind::WorkspaceReady { task, .. } => self.set_phase(task, "agent"),
            EventKind::AgentStarted { task, attempt } if *attempt > 1 => {
                self.set_phase(task, &format!("agent #{attempt}"))
            }
            EventKind::AgentEvent { task, summary, .. } => {
                if let Some(r) = self.running.get_mut(task) {
                    r.activity = summary.lines().next().unwrap_or("").to_string();
                }
            }
            EventKind::AttemptEnded { task, .. } => self.set_phase(task, "verify"),
            EventKind::GateFailed { task, gate, .. } => {
                self.set_phase(task, "feedback");
                if let Some(r) = self.running.get_mut(task) {
                    r.activity = format!("{gate} gate failed");
                }
            }
            EventKind::TaskEnded {
                task,
                report,
                resume_state,
            } => {
                self.running.remove(task);
                self.done += 1;
                self.durations_ms.push(report.duration_ms);
                let key = match report.status {
                    _ if resume_state == "verified" => "verified",
                    s => s.as_str(),
                };
                *self.counts.entry(key).or_default() += 1;
                let line = self.finished_line(report, resume_state == "verified");
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
                return Ok(());
            }
            _ => {}
        }
        self.draw(false)
    }

    fn tick(&mut self) -> Result<(), OutputError> {
        self.draw(false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_and_choices() {
        assert!(ColorChoice::Always.enabled(false));
        assert!(!ColorChoice::Never.enabled(true));
        assert!(!ColorChoice::Auto.enabled(false));
    }

    #[test]
    fn long_lines_are_cut_to_the_terminal() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
