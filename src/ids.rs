/*!
Validated identifiers: task ids (which name branches and folders, so they are checked before
anything is created) and run ids (short, sortable, time based).
*/

use std::fmt;

/// Longest task id accepted: it becomes part of a branch name and a folder name.
pub const MAX_TASK_ID_LEN: usize = 64;

/// A task id: 1–64 characters of `[A-Za-z0-9._-]`, no leading dot, not ending in `.lock`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    pub fn parse(raw: &str) -> Result<TaskId, String> {
        if raw.is_empty() {
            return Err("task id is empty".into());
        }
        if raw.len() > MAX_TASK_ID_LEN {
            return Err(format!(
                "task id is {} characters long; at most {MAX_TASK_ID_LEN} are allowed",
                raw.len()
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "task id {raw:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
            ));
        }
        if raw.starts_with('.') {
            return Err(format!("task id {raw:?} must not start with '.'"));
        }
        // Git refuses ref components ending in ".lock" and containing "..".
        if raw.ends_with(".lock") || raw.contains("..") {
            return Err(format!(
                "task id {raw:?} is not a valid git branch component (no '..', no '.lock' suffix)"
            ));
        }
        Ok(TaskId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A run id: UTC time to the second plus a short random suffix, e.g. `20261126-021308-4f2a`.
/// Sorting run ids sorts runs by start time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub fn new() -> RunId {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs() as i64;
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        let suffix = (now.subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
        RunId(format!(
            "{y:04}{mo:02}{d:02}-{:02}{:02}{:02}-{suffix:04x}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        ))
    }

    /// Accepts a run id given by the user (same character rules as task ids).
    pub fn parse(raw: &str) -> Result<RunId, String> {
        TaskId::parse(raw)
            .map(|t| RunId(t.0))
            .map_err(|e| e.replace("task id", "run id"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The branch a task's commit lives on.
pub fn task_branch(run: &RunId, task: &TaskId) -> String {
    format!("fanout/{run}/task/{task}")
}

// Candidates (best-of-N).
/// Candidate `k`'s branch: `fanout/<run>/task/<id>/candidate-<k>`.
pub fn candidate_branch(run: &RunId, task: &TaskId, k: u32) -> String {
    format!("{}/candidate-{k}", task_branch(run, task))
}

/// What names candidate `k`'s files and folders in the run folder (`<id>+candidate-<k>`: `+`
/// is in no task id, so no task's names collide with it).
pub fn candidate_key(task: &str, k: u32) -> String {
    format!("{task}+candidate-{k}")
}

/// The integration branch of a run.
pub fn merged_branch(run: &RunId) -> String {
    format!("fanout/{run}/merged")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs() {
        for ok in ["a", "users-route", "v1.2_x", &"x".repeat(64)] {
            assert!(TaskId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_ids() {
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            "x.lock",
            "a..b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(TaskId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_ids_are_sortable_and_valid() {
        let a = RunId::new();
        assert_eq!(a.as_str().len(), "20261126-021308-4f2a".len());
        assert!(RunId::parse(a.as_str()).is_ok());
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
    }
}
