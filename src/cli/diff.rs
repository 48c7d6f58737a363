//! `fanout diff RUN TASK`: the task's change against the commit it started from, coloured.

use std::io::{IsTerminal, Write};

use super::{DiffArgs, EXIT_OK, EXIT_USAGE};
use crate::ids::{task_branch, RunId, TaskId};

pub fn run(a: DiffArgs) -> anyhow::Result<i32> {
    let (run, task) = match (RunId::parse(&a.run), TaskId::parse(&a.task)) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("fanout: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let repo = super::open_repo(&a.repo)?;
    // The patch written at collection time is exactly what was verified.
    let patch_file = repo
        .runs_dir()
        .join(run.as_str())
        .join("patches")
        .join(format!("{task}.patch"));
    let patch = match std::fs::read(&patch_file) {
        Ok(p) => p,
        Err(_) => {
            let branch = task_branch(&run, &task);
            let commit = repo
                .repo
                .find_branch(&branch, git2::BranchType::Local)
                .ok()
                .and_then(|b| b.get().peel_to_commit().ok());
            let Some(commit) = commit else {
                eprintln!(
                    "fanout: task {task} of run {run} has no change (no patch, no branch {branch})"
                );
                return Ok(EXIT_USAGE);
            };
            let parent = commit
                .parent(0)
                .map(|p| p.tree_id())
                .unwrap_or(commit.tree_id());
            crate::git::collect::summarize(&repo.repo, parent, commit.tree_id())?.1
        }
    };
    let color = match a.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    write_patch(&patch, color).map_err(super::out::OutputError)?;
    Ok(EXIT_OK)
}

/// Writes the patch to stdout, coloured or not.
fn write_patch(patch: &[u8], color: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in patch.split_inclusive(|&b| b == b'\n') {
        let code = match line.first() {
            _ if !color => None,
            Some(b'+') if !line.starts_with(b"+++") => Some("32"),
            Some(b'-') if !line.starts_with(b"---") => Some("31"),
            Some(b'@') => Some("36"),
            Some(b'd') if line.starts_with(b"diff ") => Some("1"),
            _ => None,
        };
        match code {
            Some(c) => {
                let body = line.strip_suffix(b"\n").unwrap_or(line);
                write!(out, "\x1b[{c}m")?;
                out.write_all(body)?;
                writeln!(out, "\x1b[0m")?;
            }
            None => out.write_all(line)?,
        }
    }
    out.flush()
}
