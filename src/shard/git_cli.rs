//! The few git commands a hand-over needs that libgit2 does not do (bundles, push, fetch),
//! run with no hooks and no pager.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::error::HandOverError;

/// Runs `git ARGS` in `repo` with `stdin`; its stdout, or an error with its stderr.
pub fn git(repo: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, HandOverError> {
    let what = format!("git {}", args.first().copied().unwrap_or(""));
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "core.hooksPath=/dev/null", "-c", "core.pager=cat"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HandOverError::Git {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| HandOverError::Git {
                what: what.clone(),
                detail: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| HandOverError::Git {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(HandOverError::Git {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
