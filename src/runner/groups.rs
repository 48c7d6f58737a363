//! Task groups (`group` in the task file): tasks that land together or not at all. What the
//! integration and the integration gate need to treat a group as one unit.

use super::shared::Shared;

/// The group of task `i`, if it has one.
pub(crate) fn group_of(shared: &Shared, i: usize) -> Option<&str> {
    shared.tasks[i].spec.group.as_deref()
}

/// The tasks of group `name`, in `order`.
pub(crate) fn members(shared: &Shared, name: &str, order: &[usize]) -> Vec<usize> {
    order
        .iter()
        .copied()
        .filter(|&i| group_of(shared, i) == Some(name))
        .collect()
}

/// Whether `i` is the last task of its group in `order`: the group is integrated there, once
/// every member's dependencies had their turn.
pub(crate) fn is_last_in(shared: &Shared, i: usize, order: &[usize]) -> bool {
    let g = group_of(shared, i);
    !order
        .iter()
        .skip_while(|&&j| j != i)
        .skip(1)
        .any(|&j| g.is_some() && group_of(shared, j) == g)
}

/// One item per unit of `items` (a task, or a whole group at its first member), in order.
pub(crate) fn units(shared: &Shared, items: &[usize]) -> Vec<usize> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for &i in items {
        match group_of(shared, i) {
            Some(g) if seen.contains(&g) => {}
            Some(g) => {
                seen.push(g);
                out.push(i);
            }
            None => out.push(i),
        }
    }
    out
}

/// The items of `all` (in its order) that the units `chosen` stand for.
pub(crate) fn expand(shared: &Shared, chosen: &[usize], all: &[usize]) -> Vec<usize> {
    let groups: Vec<&str> = chosen.iter().filter_map(|&u| group_of(shared, u)).collect();
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
