//! Which shard a task runs in: rendezvous (highest random weight) hashing of the id of its
//! component, so a task keeps its shard when others are added or removed.
//!
//! A component is a set of tasks that must run in one shard: a `depends_on` chain (a task
//! starts from its dependencies' commits, so they must be in the same run) and a `group`
//! (its tasks land together or not at all). The component is named by its first task in
//! task-file order; adding a task in front of a component's first task, or joining two
//! components with a new `depends_on`, may move that component (the trade-off for keeping
//! chains whole without a coordinator).

use std::collections::BTreeMap;

/// One task as assignment sees it: its id, what it depends on, its group.
pub struct Node<'a> {
    pub id: &'a str,
    pub depends_on: Vec<&'a str>,
    pub group: Option<&'a str>,
}

/// The 1-based shard (in `1..=count`) of every task, in the order given.
pub fn assign(nodes: &[Node<'_>], count: u32) -> Vec<u32> {
    let count = count.max(1);
    let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut sets = UnionFind::new(nodes.len());
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for d in &n.depends_on {
            if let Some(&j) = index.get(d) {
                sets.join(i, j);
            }
        }
        if let Some(g) = n.group {
            let first = *groups.entry(g).or_insert(i);
            sets.join(i, first);
        }
    }
    // The component's name: its first task in file order (the union keeps the smallest index).
    (0..nodes.len())
        .map(|i| shard_of(nodes[sets.root(i)].id, count))
        .collect()
}

/// The shard whose weight for `key` is highest (rendezvous hashing): adding a shard moves
/// only the keys the new shard wins.
pub fn shard_of(key: &str, count: u32) -> u32 {
    (1..=count.max(1))
        .max_by_key(|k| (weight(key, *k), std::cmp::Reverse(*k)))
        .unwrap_or(1)
}

/// 64-bit FNV-1a of the key and the shard number, finished with a mixer so close keys spread.
fn weight(key: &str, shard: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0u8]).chain(shard.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Union-find whose root is always the smallest index of its set.
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.0[hi] = lo;
    }
}

/// The ids of the tasks of `file`'s planned tasks that shard `shard` runs, in file order.
pub fn tasks_of_shard(
    tasks: &[crate::plan::PlannedTask],
    shard: super::engine::Shard,
) -> Vec<String> {
    let shards = shard_of_tasks(tasks, shard.count);
    tasks
        .iter()
        .zip(shards)
        .filter(|(_, s)| *s == shard.index)
        .map(|(t, _)| t.id().to_string())
        .collect()
}

/// The shard of every planned task, in order.
pub fn shard_of_tasks(tasks: &[crate::plan::PlannedTask], count: u32) -> Vec<u32> {
    let nodes: Vec<Node<'_>> = tasks
        .iter()
        .map(|t| Node {
            id: t.id().as_str(),
            depends_on: t.spec.depends_on.iter().map(|d| d.as_str()).collect(),
            group: t.spec.group.as_deref(),
        })
        .collect();
    assign(&nodes, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(ids: &[String]) -> Vec<Node<'_>> {
        ids.iter()
            .map(|id| Node {
                id,
                depends_on: vec![],
                group: None,
            })
            .collect()
    }

    #[test]
    fn adding_a_task_moves_no_other_task() {
        let ids: Vec<String> = (0..200).map(|i| format!("task-{i}")).collect();
        let before = assign(&plain(&ids), 4);
        let mut more = ids.clone();
        more.insert(50, "a-new-one".into());
        let after = assign(&plain(&more), 4);
        let mut after_without = after.clone();
        after_without.remove(50);
        assert_eq!(before, after_without);
    }

    #[test]
    fn shards_are_balanced_and_all_used() {
        let ids: Vec<String> = (0..4000).map(|i| format!("t{i}")).collect();
        let shards = assign(&plain(&ids), 8);
        for k in 1..=8 {
            let n = shards.iter().filter(|s| **s == k).count();
            assert!((400..=600).contains(&n), "shard {k} has {n} tasks");
        }
    }

    #[test]
    fn a_dependency_chain_and_a_group_stay_together() {
        let ids: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        let mut nodes = plain(&ids);
        nodes[7].depends_on = vec!["t3"];
        nodes[20].depends_on = vec!["t7"];
        nodes[11].group = Some("g");
        nodes[30].group = Some("g");
        nodes[35].group = Some("g");
        let s = assign(&nodes, 5);
        assert_eq!(s[3], s[7]);
        assert_eq!(s[7], s[20]);
        assert_eq!(s[11], s[30]);
        assert_eq!(s[30], s[35]);
        // The chain is named by its first task: it lands where t3 alone would.
        assert_eq!(s[3], shard_of("t3", 5));
    }
}
