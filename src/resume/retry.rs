//! Which tasks `fanout retry RUN [ID…]` runs again.

use std::collections::{BTreeSet, HashMap};

use crate::state::RunState;

/// What the user asked to run again.
#[derive(Clone, Debug, Default)]
pub struct RetryChoice {
    /// Task ids; empty: every task that did not succeed.
    pub ids: Vec<String>,
    /// Also run again tasks that merged (or were verified).
    pub force: bool,
}

/// Why a retry is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RetryError {
    #[error("run {run} has no task {id}; its tasks: {known}")]
    UnknownTask {
        run: String,
        id: String,
        known: String,
    },
    #[error("task {id} of run {run} {status}; give --force to run it again")]
    Succeeded {
        run: String,
        id: String,
        status: String,
    },
    #[error("nothing to retry: every task of run {0} merged or changed nothing")]
    Nothing(String),
}

/// Statuses a retry leaves alone unless named with `--force`.
fn succeeded(status: &str) -> bool {
    matches!(status, "merged" | "verified")
}

/// The tasks to run again: the named ones (or every task that did not merge or end with no
/// changes), plus the tasks skipped because a dependency did not succeed when that dependency
/// runs again (transitively). `deps` are the run's tasks with their `depends_on`.
pub fn retry_set(
    state: &RunState,
    deps: &[(String, Vec<String>)],
    choice: &RetryChoice,
) -> Result<BTreeSet<String>, RetryError> {
    let run = state.run_id.clone();
    let mut set = BTreeSet::new();
    for id in &choice.ids {
        let Some(t) = state.tasks.get(id) else {
            return Err(RetryError::UnknownTask {
                run,
                id: id.clone(),
                known: state.order.join(", "),
            });
        };
        if succeeded(&t.status) && !choice.force {
            let status = if t.status == "merged" {
                "merged"
            } else {
                "was verified"
            };
            return Err(RetryError::Succeeded {
                run,
                id: id.clone(),
                status: status.into(),
            });
        }
        set.insert(id.clone());
    }
    if choice.ids.is_empty() {
        set.extend(
            state
                .tasks
                .iter()
                .filter(|(_, t)| !succeeded(&t.status) && t.status != "no_changes")
                .map(|(id, _)| id.clone()),
        );
    }
    add_skipped_dependents(state, deps, &mut set);
    if set.is_empty() {
        return Err(RetryError::Nothing(run));
    }
    Ok(set)
}

/// Adds every skipped task one of whose dependencies is in `set`, transitively (linear in
/// the tasks and their dependencies).
fn add_skipped_dependents(
    state: &RunState,
    deps: &[(String, Vec<String>)],
    set: &mut BTreeSet<String>,
) {
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, d) in deps {
        for x in d {
            dependents.entry(x.as_str()).or_default().push(id.as_str());
        }
    }
    let mut todo: Vec<String> = set.iter().cloned().collect();
    while let Some(id) = todo.pop() {
        for &dependent in dependents.get(id.as_str()).into_iter().flatten() {
            let skipped = state
                .tasks
                .get(dependent)
                .is_some_and(|t| t.status == "skipped");
            if skipped && set.insert(dependent.to_string()) {
                todo.push(dependent.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TaskState;

    fn state(tasks: &[(&str, &str)]) -> RunState {
        RunState {
            run_id: "r".into(),
            pid: 1,
            status: "finished".into(),
            base: "b".into(),
            integration_branch: "fanout/r/merged".into(),
            started_at_ms: 0,
            tasks: tasks
                .iter()
                .map(|(id, status)| {
                    (
                        id.to_string(),
                        TaskState {
                            status: status.to_string(),
                            commit: None,
                            error: None,
                            phase: None,
                            usage: None,
                        },
                    )
                })
                .collect(),
            order: tasks.iter().map(|(id, _)| id.to_string()).collect(),
        }
    }

    fn deps() -> Vec<(String, Vec<String>)> {
        vec![
            ("a".into(), vec![]),
            ("b".into(), vec!["a".into()]),
            ("c".into(), vec![]),
            ("d".into(), vec![]),
        ]
    }

    fn ids(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn by_default_every_task_that_did_not_succeed_runs_again() {
        let st = state(&[
            ("a", "failed"),
            ("b", "skipped"),
            ("c", "merged"),
            ("d", "no_changes"),
        ]);
        let set = retry_set(&st, &deps(), &RetryChoice::default()).unwrap();
        assert_eq!(ids(&set), ["a", "b"]);
    }

    #[test]
    fn a_named_task_brings_its_skipped_dependents() {
        let st = state(&[
            ("a", "verify_failed"),
            ("b", "skipped"),
            ("c", "timed_out"),
            ("d", "merged"),
        ]);
        let choice = RetryChoice {
            ids: vec!["a".into()],
            force: false,
        };
        assert_eq!(ids(&retry_set(&st, &deps(), &choice).unwrap()), ["a", "b"]);
    }

    #[test]
    fn skipped_dependents_follow_a_long_chain() {
        let n = 5000;
        let mut tasks = vec![("t0".to_string(), "failed".to_string())];
        let mut deps = vec![("t0".to_string(), vec![])];
        for i in 1..n {
            tasks.push((format!("t{i}"), "skipped".into()));
            deps.push((format!("t{i}"), vec![format!("t{}", i - 1)]));
        }
        let refs: Vec<(&str, &str)> = tasks
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let st = state(&refs);
        let choice = RetryChoice {
            ids: vec!["t0".into()],
            force: false,
        };
        assert_eq!(retry_set(&st, &deps, &choice).unwrap().len(), n);
    }

    #[test]
    fn refusals_name_the_task() {
        let st = state(&[("a", "merged"), ("b", "merged"), ("c", "no_changes")]);
        let named = |id: &str, force| RetryChoice {
            ids: vec![id.into()],
            force,
        };
        assert!(matches!(
            retry_set(&st, &deps(), &named("zz", false)),
            Err(RetryError::UnknownTask { .. })
        ));
        let e = retry_set(&st, &deps(), &named("a", false)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "task a of run r merged; give --force to run it again"
        );
        assert_eq!(
            ids(&retry_set(&st, &deps(), &named("a", true)).unwrap()),
            ["a"]
        );
        assert_eq!(
            retry_set(&st, &deps(), &RetryChoice::default()),
            Err(RetryError::Nothing("r".into()))
        );
    }
}
