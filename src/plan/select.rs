//! `fanout run --only ID…`: a run of some tasks of the task file.

use std::collections::BTreeSet;

use super::error::PlanError;

/// Why a selection is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectError {
    #[error("--only names no task {unknown}; the tasks are: {known}")]
    Unknown { unknown: String, known: String },
    #[error(
        "--only selects {task}, which depends on {missing}, not selected: select {missing} too, or give --with-deps"
    )]
    MissingDependency { task: String, missing: String },
}

impl From<SelectError> for PlanError {
    fn from(e: SelectError) -> PlanError {
        PlanError::Invalid(e.to_string())
    }
}

/// The ids a list of `--only` values names: each value may be a comma list.
pub fn split_ids(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The tasks (by index, in task-file order) that `ids` select among `tasks` (id, depends_on):
/// with `with_deps` their dependencies too, transitively; without, a dependency that is not
/// selected is an error naming both.
pub fn selection(
    tasks: &[(String, Vec<String>)],
    ids: &[String],
    with_deps: bool,
) -> Result<Vec<usize>, SelectError> {
    let positions: std::collections::HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (t.as_str(), i))
        .collect();
    let index = |id: &str| positions.get(id).copied();
    let mut chosen = BTreeSet::new();
    let mut todo = Vec::new();
    for id in ids {
        let i = index(id).ok_or_else(|| SelectError::Unknown {
            unknown: id.clone(),
            known: tasks
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        if chosen.insert(i) {
            todo.push(i);
        }
    }
    while let Some(i) = todo.pop() {
        for dep in &tasks[i].1 {
            // An unknown dependency was already reported by validation.
            let Some(j) = index(dep) else { continue };
            if chosen.contains(&j) {
                continue;
            }
            if !with_deps {
                return Err(SelectError::MissingDependency {
                    task: tasks[i].0.clone(),
                    missing: dep.clone(),
                });
            }
            chosen.insert(j);
            todo.push(j);
        }
    }
    Ok(chosen.into_iter().collect())
}

/// `items` (in task-file order) without those [`selection`] did not keep.
pub fn keep_selected<T>(items: Vec<T>, keep: &[usize]) -> Vec<T> {
    let keep: BTreeSet<usize> = keep.iter().copied().collect();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, t)| t)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> Vec<(String, Vec<String>)> {
        vec![
            ("a".into(), vec![]),
            ("b".into(), vec!["a".into()]),
            ("c".into(), vec!["b".into()]),
            ("d".into(), vec![]),
        ]
    }

    #[test]
    fn ids_come_repeated_or_as_comma_lists() {
        let v = vec!["a,b".to_string(), " c ".into(), ",".into()];
        assert_eq!(split_ids(&v), ["a", "b", "c"]);
    }

    #[test]
    fn a_selection_keeps_task_file_order() {
        let ids = vec!["d".to_string(), "a".into()];
        assert_eq!(selection(&tasks(), &ids, false), Ok(vec![0, 3]));
    }

    #[test]
    fn an_unselected_dependency_is_named_or_added() {
        let ids = vec!["c".to_string()];
        assert_eq!(
            selection(&tasks(), &ids, false),
            Err(SelectError::MissingDependency {
                task: "c".into(),
                missing: "b".into()
            })
        );
        assert_eq!(selection(&tasks(), &ids, true), Ok(vec![0, 1, 2]));
        assert_eq!(keep_selected(vec!['a', 'b', 'c', 'd'], &[0, 2]), ['a', 'c']);
    }

    #[test]
    fn an_unknown_id_lists_the_tasks() {
        let e = selection(&tasks(), &["x".to_string()], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--only names no task x; the tasks are: a, b, c, d"
        );
    }
}
