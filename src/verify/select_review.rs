/*!
Candidates (best-of-N), `select: "review"`: Claude Code reads the passing candidates' diffs
(made by fanout from the committed trees, never read from a workspace) in a read-only
snapshot of the commit they all started from — confined as the review gate is — and names the
best with a reason: a first line `CHOOSE <n>: <reason>`.
*/

use std::time::Duration;

use super::claude::{ask, AskError, Question};
use super::judges::Judges;

/// Time for one choice.
pub const TIMEOUT_SECS: f64 = 300.0;

/// The most of each candidate's diff put into the prompt.
const MAX_DIFF: usize = 100 * 1024;

/// One passing candidate, as the reviewer sees it.
pub struct Entry {
    pub candidate: u32,
    pub agent: String,
    /// Changed lines.
    pub size: usize,
    pub diff: String,
}

/// Where the reviewer runs and what it reads.
pub struct Place<'a> {
    pub judges: &'a Judges,
    pub claude: &'a str,
    /// The snapshot of the start commit (the whole tree).
    pub snapshot: &'a std::path::Path,
    pub stderr_log: &'a std::path::Path,
    pub status_file: &'a std::path::Path,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Ask(#[from] AskError),
    #[error("the reviewer's answer did not start with CHOOSE <n> naming a passing candidate: {0}")]
    Unclear(String),
}

/// Reads `CHOOSE <n>: <reason>` from the first non-empty line (markdown emphasis tolerated).
pub fn parse_choice(answer: &str) -> Option<(u32, String)> {
    let first = answer
        .lines()
        .map(|l| l.trim().trim_matches(|c| c == '*' || c == '`').trim())
        .find(|l| !l.is_empty())?;
    let rest = first
        .get(..6)
        .filter(|w| w.eq_ignore_ascii_case("choose"))
        .map(|_| first[6..].trim_start())?;
    let rest = rest.strip_prefix("candidate").unwrap_or(rest).trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n = digits.parse().ok()?;
    let reason = rest[digits.len()..]
        .trim_start_matches([':', ' ', '-', '.', '*'])
        .trim();
    Some((n, reason.to_string()))
}

fn prompt(task_prompt: &str, entries: &[Entry]) -> String {
    let mut p = format!(
        "Automated coding agents each made a candidate change for the same task, and each \
         passed the project's checks. Pick the best one: correct, complete, focused, clear. \
         The current folder holds the repository as it was before any of them (read any file \
         you need, change nothing).\n\n## The task\n{}\n",
        task_prompt.trim()
    );
    for e in entries {
        p.push_str(&format!(
            "\n## Candidate {} (agent {}, {} changed lines)\n```diff\n{}\n```\n",
            e.candidate,
            e.agent,
            e.size,
            crate::jsonrpc::truncate(&e.diff, MAX_DIFF)
        ));
    }
    p.push_str(
        "\nAnswer with `CHOOSE <n>: <one-line reason>` as the very first line (n: the \
         candidate's number), then anything else you want to say.\n",
    );
    p
}

/// Asks which candidate is best: its number (one of `entries`) and the reviewer's reason.
pub async fn choose(
    place: Place<'_>,
    task_prompt: &str,
    entries: &[Entry],
) -> Result<(u32, String), SelectError> {
    let answer = ask(Question {
        judges: place.judges,
        claude: place.claude,
        snapshot: place.snapshot,
        stderr_log: place.stderr_log,
        status_file: place.status_file,
        purpose: "select",
        prompt: prompt(task_prompt, entries),
        timeout: Duration::from_secs_f64(TIMEOUT_SECS),
    })
    .await?;
    match parse_choice(&answer) {
        Some((n, why)) if entries.iter().any(|e| e.candidate == n) => Ok((
            n,
            if why.is_empty() {
                "no reason given".into()
            } else {
                why
            },
        )),
        _ => Err(SelectError::Unclear(crate::jsonrpc::truncate(
            answer.trim(),
            300,
        ))),
    }
}

/// A commit's change against the start, as a patch, from the committed trees.
pub fn diff_text(
    repo: &git2::Repository,
    start: git2::Oid,
    commit: git2::Oid,
) -> Result<String, git2::Error> {
    let old = repo.find_commit(start)?.tree()?;
    let new = repo.find_commit(commit)?.tree()?;
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None)?;
    let mut out = Vec::new();
    diff.print(git2::DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            out.push(line.origin() as u8);
        }
        out.extend_from_slice(line.content());
        true
    })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_choice() {
        assert_eq!(
            parse_choice("CHOOSE 2: smallest and clear\nmore"),
            Some((2, "smallest and clear".into()))
        );
        assert_eq!(
            parse_choice("\n**Choose candidate 3** - tests kept"),
            Some((3, "tests kept".into()))
        );
        assert_eq!(parse_choice("CHOOSE 1"), Some((1, String::new())));
        assert_eq!(parse_choice("I like 2"), None);
        assert_eq!(parse_choice("CHOOSE two"), None);
        assert_eq!(parse_choice(""), None);
    }
}
