/*!
Diagnosis before feedback (`defaults.diagnose`): when a task failed a gate and gets another
attempt, Claude Code (confined, read-only tools) reads the failed gates' output and the files
involved and writes a root-cause diagnosis. It goes to the agent with the gates' output, into
the report (`attempt_history[].diagnosis`) and into the event stream (`diagnosis`).
A diagnosis that fails is only a missing hint: the feedback goes out without it.
*/

use std::time::Duration;

use super::claude::{ask, AskError, Question};
use crate::process::SpawnSpec;

/// Time for one diagnosis.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Asks for the diagnosis of `feedback` (the gates' report as the agent will see it).
pub async fn diagnose(
    spec: &SpawnSpec,
    claude: &str,
    worktree: &std::path::Path,
    scratch: &std::path::Path,
    task_prompt: &str,
    feedback: &str,
    files: &[String],
) -> Result<String, AskError> {
    let prompt = format!(
        "An automated coding agent worked on the task below in this repository (the current \
         folder), and its change failed verification. Find the root cause of the failure: read \
         the files involved, change nothing, and explain in a few short paragraphs what is wrong \
         and what to change to fix it.\n\n## The agent's task\n{}\n\n## Files the change touched\n{}\n\n\
         ## The verification report\n{}\n",
        task_prompt.trim(),
        if files.is_empty() {
            "(none)".to_string()
        } else {
            files.join("\n")
        },
        feedback.trim()
    );
    ask(Question {
        spec,
        claude,
        worktree,
        scratch,
        purpose: "diagnose",
        prompt,
        timeout: TIMEOUT,
    })
    .await
}

/// The diagnosis as a section of the feedback message.
pub fn section(text: &str) -> String {
    format!(
        "\n## diagnosis (root cause, by Claude Code)\n{}\n",
        crate::jsonrpc::truncate(text.trim(), 8000)
    )
}
