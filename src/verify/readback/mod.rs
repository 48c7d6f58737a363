/*!
Read-back through a verifier MCP server (by default Claude Code's `claude mcp serve`, tool `Read`).

One verifier process serves the whole run (one connection, calls serialized), confined as a
judge (`verify::judges`). For every added, modified, renamed-to or copied-to file of a task's
diff fanout calls `Read` with the file's absolute path in the task's snapshot — the commit's
files, written by fanout from the object store after the commit — and compares what the
verifier sees with the committed blob; deleted (and renamed-from) paths must not be readable.
Nothing the verifier read is ever quoted back (gate details, report, events, feedback): a
mismatch says where, and what the commit holds. See docs/verify.md for what exactly is
compared.

Measured on `claude mcp serve` 2.1.332:
- the answer is one text block holding JSON
  `{"type":"text","file":{"filePath","content","numLines","startLine","totalLines"}}`; older
  versions answered `cat -n`-style lines (`     1\tline` or `     1→line`): both are accepted;
- `content` is the file with a UTF-8 BOM removed, CRLF turned into LF, invalid UTF-8 replaced
  by U+FFFD; a lone CR and NUL bytes are kept; the trailing newline is kept;
- lines are the pieces between `\n` (`"a\n"` has 2 lines, the last one empty); `offset` is
  1-based (0 behaves like 1), a page is its lines joined with `\n`;
- a read without `offset`/`limit` fails for files over 256 KiB ("exceeds maximum allowed
  size"); below that it has no 2000-line cut but silently stops after about 85 000
  characters, setting `file.truncatedByTokenCap: true` (even in the middle of a line);
- a read with `offset`/`limit` is never cut: it fails when the range exceeds 25 000 "tokens"
  (characters / 4, i.e. 100 000 characters), so a line longer than that cannot be read at all;
- some extensions are refused as binary (`.dat`, …), image extensions must hold images;
- errors (missing file, directory, too large) are results with `isError: true`.

Layout: `verifier` runs the process (start, restart, shutdown), `answer` parses what one
`Read` call answered, `compare` compares one file (whole or paged), `jobs` reads the committed
side from the task's tree; this file puts them together for one task. Nothing here knows the
runner: it is given the verifier, the paths and the collected change.
*/

mod answer;
mod compare;
mod error;
#[cfg(test)]
mod fake;
mod jobs;
mod verifier;

use std::path::Path;

use serde_json::json;

use crate::git::collect::Collected;
use crate::report::{GateResult, ReadbackReport};
use answer::Answer;
use compare::{compare_file, Compared, ReadTool};
use jobs::{jobs_for, Job};

pub use compare::{normalize, PAGE_MAX_BYTES, PAGE_MAX_LINES, WHOLE_READ_MAX_BYTES};
pub use jobs::CommittedError;
/// The paths of `collected` read-back needs in a snapshot (what changed and is committed).
pub fn paths_to_read(collected: &Collected) -> Vec<String> {
    collected
        .summary
        .changes
        .iter()
        .filter(|c| c.kind != "deleted")
        .map(|c| c.path.clone())
        .collect()
}

pub use verifier::{
    default_profile, doctor_line, start_for_run, ReadbackRequired, Verifier, VerifierError,
};

/// What read-back of one task produced.
pub struct ReadbackOutcome {
    pub gate: Option<GateResult>,
    pub report: ReadbackReport,
}

/// Read-back of one task: every changed path of `collected` (committed in the repository at
/// `repo_path`) as the verifier sees it at its place in `snapshot` (or why there is no
/// snapshot: the gate fails closed). Without a verifier the gate is not run and the report
/// says `skipped (<skip_reason>)`.
pub async fn check_task(
    verifier: Option<&tokio::sync::Mutex<Verifier>>,
    skip_reason: Option<&str>,
    repo_path: &Path,
    snapshot: Result<&Path, &str>,
    collected: &Collected,
) -> ReadbackOutcome {
    let Some(verifier) = verifier else {
        return ReadbackOutcome {
            gate: None,
            report: ReadbackReport {
                result: format!("skipped ({})", skip_reason.unwrap_or("no verifier")),
                ..ReadbackReport::default()
            },
        };
    };
    let snapshot = match snapshot {
        Ok(s) => s,
        Err(why) => return failed_outcome(ReadbackReport::default(), why),
    };
    let repo_path = repo_path.to_path_buf();
    let collected_view = Collected {
        commit: collected.commit,
        tree: collected.tree,
        summary: collected.summary.clone(),
        patch: Vec::new(),
    };
    // git2 is blocking: off the async workers.
    let jobs = tokio::task::spawn_blocking(move || jobs_for(&repo_path, &collected_view))
        .await
        .unwrap_or_else(|e| Err(CommittedError::Join(e)));
    match jobs {
        Ok(jobs) => check_jobs(verifier, snapshot, jobs).await,
        Err(e) => failed_outcome(ReadbackReport::default(), &crate::error_chain(&e)),
    }
}

/// Runs the jobs of one task through `reader`; the first verifier error ends read-back
/// (failed closed), mismatches are collected.
async fn check_jobs<R: ReadTool>(reader: &R, root: &Path, jobs: Vec<Job>) -> ReadbackOutcome {
    let mut report = ReadbackReport::default();
    let mut problems: Vec<String> = Vec::new();
    for job in jobs {
        let checked = match job {
            Job::Binary(path) => {
                report.skipped_binary.push(path);
                continue;
            }
            Job::Skip { path, why } => {
                report.skipped.push(format!("{path}: {why}"));
                continue;
            }
            Job::MustBeGone(path) => {
                let abs = root.join(&path);
                match reader
                    .read(json!({"file_path": abs.display().to_string()}))
                    .await
                {
                    Ok(Answer::Error(_)) => {
                        report.deleted_checked += 1;
                        Ok(None)
                    }
                    Ok(_) => Ok(Some((
                        path,
                        "deleted in the commit but still readable".to_string(),
                    ))),
                    Err(e) => Err(e),
                }
            }
            Job::Compare { path, content } => {
                let abs = root.join(&path);
                match compare_file(reader, &abs, &content).await {
                    Ok(Compared::Same { bytes }) => {
                        report.files_read += 1;
                        report.bytes += bytes;
                        Ok(None)
                    }
                    Ok(Compared::SkippedBinary) => {
                        report.skipped_binary.push(path);
                        Ok(None)
                    }
                    Ok(Compared::Skipped(why)) => {
                        report.skipped.push(format!("{path}: {why}"));
                        Ok(None)
                    }
                    Ok(Compared::Differs(why)) => Ok(Some((path, why))),
                    Err(e) => Err(e),
                }
            }
        };
        match checked {
            Ok(None) => {}
            Ok(Some((path, why))) => {
                problems.push(format!("{path}: {why}"));
                report.mismatches.push(path);
            }
            Err(e) => return failed_outcome(report, &e.to_string()),
        }
    }
    if problems.is_empty() {
        report.result = "passed".into();
        ReadbackOutcome {
            gate: Some(GateResult {
                gate: "readback".into(),
                passed: true,
                detail: None,
                paths: Vec::new(),
                output: None,
                stderr: None,
                flaky: false,
            }),
            report,
        }
    } else {
        report.result = "failed".into();
        ReadbackOutcome {
            gate: Some(GateResult {
                gate: "readback".into(),
                passed: false,
                detail: Some(format!(
                    "the verifier does not see the committed content of: {}",
                    crate::jsonrpc::truncate(&problems.join("; "), 4000)
                )),
                paths: report.mismatches.clone(),
                output: None,
                stderr: None,
                flaky: false,
            }),
            report,
        }
    }
}

/// Read-back could not be done (verifier gone, repository error): the gate fails closed.
fn failed_outcome(mut report: ReadbackReport, why: &str) -> ReadbackOutcome {
    report.result = "failed".into();
    ReadbackOutcome {
        gate: Some(GateResult {
            gate: "readback".into(),
            passed: false,
            detail: Some(format!("read-back could not be completed: {why}")),
            paths: Vec::new(),
            output: None,
            stderr: None,
            flaky: false,
        }),
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeReader;
    use super::*;

    fn check(reader: &FakeReader, jobs: Vec<Job>) -> ReadbackOutcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(check_jobs(reader, Path::new("/w"), jobs))
    }

    #[test]
    fn equal_files_pass_and_are_counted() {
        let r = FakeReader::new(Some("a\n"));
        let out = check(
            &r,
            vec![
                Job::Compare {
                    path: "a.txt".into(),
                    content: "a\n".into(),
                },
                Job::Binary("b.bin".into()),
                Job::Skip {
                    path: "l".into(),
                    why: "symbolic link".into(),
                },
            ],
        );
        let gate = out.gate.expect("gate");
        assert!(gate.passed);
        assert_eq!(out.report.result, "passed");
        assert_eq!(out.report.files_read, 1);
        assert_eq!(out.report.bytes, 2);
        assert_eq!(out.report.skipped_binary, ["b.bin"]);
        assert_eq!(out.report.skipped, ["l: symbolic link"]);
        assert_eq!(r.calls(), [json!({"file_path": "/w/a.txt"})]);
    }

    #[test]
    fn deleted_files_must_not_be_readable() {
        let out = check(&FakeReader::new(None), vec![Job::MustBeGone("old".into())]);
        assert!(out.gate.expect("gate").passed);
        assert_eq!(out.report.deleted_checked, 1);

        let out = check(
            &FakeReader::new(Some("still here")),
            vec![Job::MustBeGone("old".into())],
        );
        let gate = out.gate.expect("gate");
        assert!(!gate.passed);
        assert_eq!(gate.paths, ["old"]);
        assert_eq!(out.report.result, "failed");
        assert_eq!(out.report.mismatches, ["old"]);
        assert!(gate
            .detail
            .unwrap_or_default()
            .contains("old: deleted in the commit but still readable"));
    }

    #[test]
    fn mismatches_fail_the_gate_with_where() {
        let out = check(
            &FakeReader::new(Some("a\nB\n")),
            vec![Job::Compare {
                path: "x".into(),
                content: "a\nb\n".into(),
            }],
        );
        let gate = out.gate.expect("gate");
        assert!(!gate.passed);
        let detail = gate.detail.unwrap_or_default();
        assert!(
            detail.starts_with(
                "the verifier does not see the committed content of: x: line 2 differs"
            ),
            "{detail}"
        );
    }

    #[test]
    fn failures_fail_closed() {
        let out = failed_outcome(ReadbackReport::default(), "the verifier is unavailable: x");
        assert_eq!(out.report.result, "failed");
        let gate = out.gate.expect("gate");
        assert!(!gate.passed);
        assert_eq!(
            gate.detail.as_deref(),
            Some("read-back could not be completed: the verifier is unavailable: x")
        );
    }
}
