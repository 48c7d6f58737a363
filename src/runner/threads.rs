//! Threads that outlive their process (issue 21): a resolve or repair round comes after the
//! agent's process ended. An app-server thread is continued (`thread/resume`) from the task's
//! private CODEX_HOME, which is kept in its scratch folder until the run ends; any other agent
//! gets a new session told its earlier change and last message.

use std::path::Path;

use super::shared::Shared;
use crate::report::TaskReport;

/// The folder of the task's scratch that holds Codex's sessions (see `agent::codex`).
const CODEX_HOME: &str = "codex-home";

/// Most bytes of the earlier change shown to a new session.
const EARLIER_DIFF: usize = 8000;

/// Whether a task of this run may get a later round on its own thread (resolve, repair): its
/// CODEX_HOME is then kept until the run ends.
pub(super) fn may_continue(shared: &Shared) -> bool {
    shared.on_conflict.resolves() || shared.integrate.as_ref().is_some_and(|g| g.repair > 0)
}

/// The thread a later round continues: an app-server's (an mcp-server conversation ends with
/// its process: `codex-reply` needs the same process).
pub(super) fn thread_of(report: &TaskReport) -> Option<String> {
    (report.agent.protocol == "codex-app-server")
        .then(|| report.agent.thread_id.clone())
        .flatten()
}

/// What a new session is told of the task's earlier round: its change and its last message.
pub(super) fn earlier_round(report: &TaskReport) -> String {
    let mut text = String::new();
    let diff = report
        .patch
        .as_deref()
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if !diff.trim().is_empty() {
        let cut = super::tail::tail(&diff, EARLIER_DIFF);
        text.push_str(&format!(
            "Your earlier change (this task's first round, as a diff):\n{cut}\n\n"
        ));
    }
    if let Some(m) = report
        .agent
        .last_message
        .as_deref()
        .filter(|m| !m.trim().is_empty())
    {
        text.push_str(&format!("Your last message then: {m}\n\n"));
    }
    text
}

/// Removes a task's scratch folder; with `keep_thread`, all but its CODEX_HOME.
pub(super) fn remove_scratch(scratch: &Path, keep_thread: bool) -> std::io::Result<()> {
    if !keep_thread || !scratch.join(CODEX_HOME).is_dir() {
        return crate::fs_util::remove_tree(scratch);
    }
    for entry in std::fs::read_dir(scratch)? {
        let entry = entry?;
        if entry.file_name() == CODEX_HOME {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            crate::fs_util::remove_tree(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
