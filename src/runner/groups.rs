//! Task groups (`group` in the task file): tasks that land together or not at all. What the
//! integration and the integration gate need to treat a group as one unit.

use std::collections::{BTreeMap, BTreeSet};

use super::shared::Shared;

/// The group of task `i`, if it has one.
pub(crate) fn group_of(shared: &Shared, i: usize) -> Option<&str> {
    shared.tasks[i].spec.group.as_deref()
}

/// Every group's tasks, in `order`: O(tasks) once, instead of a walk per group.
pub(crate) fn by_group<'a>(shared: &'a Shared, order: &[usize]) -> BTreeMap<&'a str, Vec<usize>> {
    let mut out: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in order {
        if let Some(g) = group_of(shared, i) {
            out.entry(g).or_default().push(i);
        }
    }
    out
}

/// One item per unit of `items` (a task, or a whole group at its first task), in order.
pub(crate) fn units(shared: &Shared, items: &[usize]) -> Vec<usize> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    items
        .iter()
        .copied()
        .filter(|&i| group_of(shared, i).is_none_or(|g| seen.insert(g)))
        .collect()
}

/// The items of `all` (in its order) that the units `chosen` stand for.
pub(crate) fn expand(shared: &Shared, chosen: &[usize], all: &[usize]) -> Vec<usize> {
    // Sets: bisection calls this on every check, with up to every merged task.
    let groups: BTreeSet<&str> = chosen.iter().filter_map(|&u| group_of(shared, u)).collect();
    let chosen: BTreeSet<usize> = chosen.iter().copied().collect();
    all.iter()
        .copied()
        .filter(|&i| match group_of(shared, i) {
            Some(g) => groups.contains(&g),
            None => chosen.contains(&i),
        })
        .collect()
}

/// The unit standing for item `i` among `units`.
pub(crate) fn unit_of(shared: &Shared, i: usize, units: &[usize]) -> usize {
    match group_of(shared, i) {
        Some(g) => units
            .iter()
            .copied()
            .find(|&u| group_of(shared, u) == Some(g))
            .unwrap_or(i),
        None => i,
    }
}
