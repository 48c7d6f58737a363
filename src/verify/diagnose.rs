/*!
Diagnosis before feedback (`defaults.diagnose`): when a task failed a gate and gets another
attempt, Claude Code (confined as a judge, read-only tools, in a snapshot of the attempt's
commit) reads the failed gates' output and the files involved and writes a root-cause diagnosis. It goes to the agent with the gates' output, into
the report (`attempt_history[].diagnosis`) and into the event stream (`diagnosis`).
A diagnosis that fails is only a missing hint: the feedback goes out without it.
*/

use std::time::Duration;

use super::claude::{ask, AskError, Question};
use super::judges::Judges;

/// Time for one diagnosis.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Where a diagnosis runs and logs.
pub struct Place<'a> {
    pub judges: &'a Judges,
    pub claude: &'a str,
    /// The snapshot of the failed attempt's commit (the whole tree).
    pub snapshot: &'a std::path::Path,
    pub stderr_log: &'a std::path::Path,
    pub status_file: &'a std::path::Path,
}

/// Asks for the diagnosis of `feedback` (the gates' report as the agent will see it).
pub async fn diagnose(
    place: Place<'_>,
    task_prompt: &str,
    feedback: &str,
    files: &[String],
) -> Result<String, AskError> {
    let prompt = format!(
        "An automated coding agent worked on the task below in this repository (the current \
         folder holds it as committed), and its change failed verification. Find the root cause of the failure: read \
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
        judges: place.judges,
        claude: place.claude,
        snapshot: place.snapshot,
        stderr_log: place.stderr_log,
        status_file: place.status_file,
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
