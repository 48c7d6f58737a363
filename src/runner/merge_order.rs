//! The order tasks are integrated in: task-file order, every task after its dependencies, and
//! a group's tasks together (at the place of its first task), so a task that depends on one of
//! them comes after the whole group.

use std::collections::{BTreeMap, BTreeSet};

use super::groups;
use super::shared::Shared;

/// Task indices in merge order.
pub(crate) fn merge_order(shared: &Shared) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = shared
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id().as_str(), i))
        .collect();
    let all: Vec<usize> = (0..shared.tasks.len()).collect();
    let mut placer = Placer {
        shared,
        index,
        groups: groups::by_group(shared, &all),
        placed: BTreeSet::new(),
        order: Vec::new(),
    };
    for i in 0..shared.tasks.len() {
        placer.place(i);
    }
    placer.order
}

struct Placer<'a> {
    shared: &'a Shared,
    index: BTreeMap<&'a str, usize>,
    /// Each group's tasks in task-file order.
    groups: BTreeMap<&'a str, Vec<usize>>,
    placed: BTreeSet<usize>,
    order: Vec<usize>,
}

impl Placer<'_> {
    /// Places task `i` (with its whole group) after what it depends on.
    fn place(&mut self, i: usize) {
        if self.placed.contains(&i) {
            return;
        }
        let unit = match groups::group_of(self.shared, i) {
            Some(g) => self.groups.get(g).cloned().unwrap_or_else(|| vec![i]),
            None => vec![i],
        };
        self.placed.extend(unit.iter().copied());
        for &u in &unit {
            for d in &self.shared.tasks[u].spec.depends_on {
                if let Some(&j) = self.index.get(d.as_str()) {
                    self.place(j);
                }
            }
        }
        self.push_in_dependency_order(unit);
    }

    /// Appends `unit` in task-file order, but each task after the ones of `unit` it depends on.
    fn push_in_dependency_order(&mut self, mut unit: Vec<usize>) {
        while !unit.is_empty() {
            let waits = |u: usize, rest: &[usize]| {
                self.shared.tasks[u].spec.depends_on.iter().any(|d| {
                    rest.iter()
                        .any(|&r| r != u && self.shared.tasks[r].id() == d)
                })
            };
            // Dependencies form no cycle (validated), so some task waits for none of the rest.
            let next = unit.iter().position(|&u| !waits(u, &unit)).unwrap_or(0);
            self.order.push(unit.remove(next));
        }
    }
}
