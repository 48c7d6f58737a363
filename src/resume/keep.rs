//! What a continued run (`fanout resume`, `fanout retry`) keeps of each task and what it redoes,
//! decided from the task's last phase (`crate::phase::TaskPhase`) and status in `state.json`.
//!
//! | last phase | status | decision |
//! | --- | --- | --- |
//! | `ready`, `integrated` (or any) | `verified`, `merged`, with a commit | kept: the commit is integrated again |
//! | `ended` (or any) | `no_changes`, `failed`, `timed_out`, `verify_failed` | kept: the outcome stands |
//! | `workspace` … `feedback` (gates included) | `running`, `interrupted` | redone: nothing of a cut-off turn is trusted |
//! | `ready` | no commit recorded | redone |
//! | `waiting_for_dependencies`, `queued`, none | `pending`, `skipped`, … | redone: never started, or a dependency runs again |
//! | (any) | `budget_exceeded` | redone |
//!
//! `fanout resume --budget` also continues a finished run ([`on_budget_resume`]): the tasks a
//! budget stopped or skipped run again, every other outcome stands.
//!
//! A task cut off while its gates judged a commit runs again rather than being judged again:
//! its workspace (the agent's session, the verify command's environment) is gone, and a
//! verdict on a half-collected commit would not be the one the run would have reached.

use crate::phase::TaskPhase;
use crate::report::TaskStatus;
use crate::state::{Prior, TaskState};

/// What happens to one task of a continued run.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Its outcome is carried over.
    Keep(Prior),
    /// It runs again; why, in the phase wording of `fanout status`.
    Redo(String),
}

/// A status of `state.json` as the report's status, for statuses a task ends with.
pub fn ended_status(status: &str) -> Option<TaskStatus> {
    serde_json::from_value(serde_json::Value::String(status.to_string())).ok()
}

/// The decision of `fanout resume` for a task of an interrupted run.
pub fn on_resume(t: &TaskState) -> Decision {
    match t.status.as_str() {
        "verified" | "merged" => keep_commit(t),
        "no_changes" | "failed" | "timed_out" | "verify_failed" => ended(t),
        _ => Decision::Redo(why_redone(t)),
    }
}

/// The decision of `fanout retry` for a task it was not asked to run again: every outcome
/// stands (conflicts, integration failures and skips too); only a task the run never
/// finished (an interrupted run) runs, as `fanout resume` would run it.
pub fn on_retry(t: &TaskState) -> Decision {
    match t.status.as_str() {
        "verified" | "merged" => keep_commit(t),
        "pending" | "running" | "interrupted" => Decision::Redo(why_redone(t)),
        _ => ended(t),
    }
}

/// The decision of `fanout resume --budget` for a task of a finished run: what a budget
/// stopped (`budget_exceeded`) or kept from starting (`skipped`: the run's budget, or a
/// dependency it stopped) runs again; every other outcome stands, as for `fanout retry`.
pub fn on_budget_resume(t: &TaskState) -> Decision {
    match t.status.as_str() {
        "budget_exceeded" => Decision::Redo("stopped by its budget".into()),
        "skipped" => Decision::Redo(why_redone(t)),
        _ => on_retry(t),
    }
}

fn keep_commit(t: &TaskState) -> Decision {
    match t
        .commit
        .as_deref()
        .and_then(|c| git2::Oid::from_str(c).ok())
    {
        Some(oid) => Decision::Keep(Prior::Verified(oid)),
        None => Decision::Redo("verified, but its commit was not recorded".into()),
    }
}

fn ended(t: &TaskState) -> Decision {
    match ended_status(&t.status) {
        Some(status) => Decision::Keep(Prior::Ended {
            status,
            commit: t.commit.clone(),
            error: t.error.clone(),
        }),
        None => Decision::Redo(why_redone(t)),
    }
}

/// Why a task runs again, from the phase it was in.
fn why_redone(t: &TaskState) -> String {
    match t.phase {
        Some(p) if p.is_running() => format!("cut off in {}", p.describe()),
        Some(TaskPhase::Ready) => "cut off at ready before its commit was recorded".into(),
        Some(p @ (TaskPhase::Conflicted | TaskPhase::Ejected)) => {
            format!("{} before the interruption", p.describe())
        }
        _ if t.status == "skipped"
            && t.error
                .as_deref()
                .is_some_and(|e| e.starts_with("run budget spent")) =>
        {
            "skipped: the run's budget was spent".into()
        }
        _ if t.status == "skipped" => "skipped: a dependency may succeed now".into(),
        Some(TaskPhase::WaitingForDependencies) | Some(TaskPhase::Queued) | None => {
            "never started".into()
        }
        Some(p) => format!("{} ({})", t.status, p.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: &str, commit: Option<&str>, phase: Option<TaskPhase>) -> TaskState {
        TaskState {
            status: status.into(),
            commit: commit.map(str::to_string),
            error: None,
            phase,
            usage: None,
        }
    }

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn resume_keeps_commits_and_outcomes_and_redoes_cut_off_phases() {
        let oid = git2::Oid::from_str(C).unwrap();
        let ready = task("verified", Some(C), Some(TaskPhase::Ready));
        assert_eq!(on_resume(&ready), Decision::Keep(Prior::Verified(oid)));
        let failed = task("verify_failed", None, Some(TaskPhase::Ended));
        assert!(matches!(
            on_resume(&failed),
            Decision::Keep(Prior::Ended {
                status: TaskStatus::VerifyFailed,
                ..
            })
        ));
        let gates = task("running", None, Some(TaskPhase::Gates { turn: 2 }));
        assert_eq!(
            on_resume(&gates),
            Decision::Redo("cut off in gates (turn 2)".into())
        );
        let turn = task("interrupted", None, Some(TaskPhase::AgentTurn { turn: 1 }));
        assert_eq!(
            on_resume(&turn),
            Decision::Redo("cut off in agent turn 1".into())
        );
        let no_commit = task("verified", None, Some(TaskPhase::Ready));
        assert!(matches!(on_resume(&no_commit), Decision::Redo(_)));
        assert_eq!(
            on_resume(&task("pending", None, None)),
            Decision::Redo("never started".into())
        );
        // Resume runs conflicts and skips again; retry keeps them unless asked.
        let conflict = task("conflict", Some(C), Some(TaskPhase::Conflicted));
        assert!(matches!(on_resume(&conflict), Decision::Redo(_)));
        assert!(matches!(
            on_retry(&conflict),
            Decision::Keep(Prior::Ended {
                status: TaskStatus::Conflict,
                ..
            })
        ));
        assert!(matches!(
            on_retry(&task("running", None, Some(TaskPhase::Setup))),
            Decision::Redo(_)
        ));
        assert_eq!(
            ended_status("integration_failed"),
            Some(TaskStatus::IntegrationFailed)
        );
        assert_eq!(ended_status("pending"), None);
    }
}
