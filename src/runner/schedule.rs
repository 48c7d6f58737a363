//! Which task starts next: task-file order among the tasks whose dependencies (and the earlier
//! tasks of their lane, `overlap: serialize`) all ended (pure bookkeeping, so it is
//! unit-tested apart from the runner).

use tokio::sync::watch;

use super::outcome;
use crate::plan::PlannedTask;

/// Which task may start next: task-file order among the tasks whose dependencies all ended.
pub(super) struct Schedule {
    /// Task indices ready to start, smallest (earliest in the task file) first.
    ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>>,
    /// Dependencies of each task that have not ended yet.
    waiting: Vec<usize>,
    /// Tasks that depend on each task.
    dependents: Vec<Vec<usize>>,
    /// What each ended task tells its dependents.
    results: Vec<Option<outcome::DepResult>>,
    index: std::collections::HashMap<String, usize>,
    /// The earlier tasks of each task's lane that are not among its dependencies.
    lane_before: Vec<Vec<usize>>,
}

impl Schedule {
    /// `lanes`: each lane's tasks in the order they run (merge order).
    pub(super) fn new(tasks: &[PlannedTask], lanes: &[Vec<usize>]) -> Schedule {
        let index: std::collections::HashMap<String, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id().to_string(), i))
            .collect();
        let mut waiting = vec![0; tasks.len()];
        let mut dependents = vec![Vec::new(); tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            for d in &t.spec.depends_on {
                if let Some(&j) = index.get(d.as_str()) {
                    waiting[i] += 1;
                    dependents[j].push(i);
                }
            }
        }
        let mut lane_before = vec![Vec::new(); tasks.len()];
        for lane in lanes {
            for (k, &i) in lane.iter().enumerate() {
                for &j in &lane[..k] {
                    if !tasks[i].spec.depends_on.iter().any(|d| d == tasks[j].id()) {
                        lane_before[i].push(j);
                        waiting[i] += 1;
                        dependents[j].push(i);
                    }
                }
            }
        }
        let ready = (0..tasks.len())
            .filter(|&i| waiting[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        Schedule {
            ready,
            waiting,
            dependents,
            results: vec![None; tasks.len()],
            index,
            lane_before,
        }
    }

    pub(super) fn next_ready(&mut self) -> Option<usize> {
        self.ready.pop().map(|std::cmp::Reverse(i)| i)
    }

    /// The ended dependencies' results, then the lane's earlier tasks' (in lane order), in the
    /// form the pipeline waits on (already filled in).
    pub(super) fn dep_receivers(&self, i: usize, tasks: &[PlannedTask]) -> Vec<outcome::Awaited> {
        let awaited = |j: usize, lane: bool| {
            let (_tx, rx) = watch::channel(self.results[j].clone());
            outcome::Awaited {
                name: tasks[j].id().to_string(),
                rx,
                lane,
            }
        };
        let deps = tasks[i]
            .spec
            .depends_on
            .iter()
            .filter_map(|d| self.index.get(d.as_str()).map(|&j| awaited(j, false)));
        let lane = self.lane_before[i].iter().map(|&j| awaited(j, true));
        deps.chain(lane).collect()
    }

    pub(super) fn finished(&mut self, i: usize, result: outcome::DepResult) {
        self.results[i] = Some(result);
        for k in std::mem::take(&mut self.dependents[i]) {
            self.waiting[k] -= 1;
            if self.waiting[k] == 0 {
                self.ready.push(std::cmp::Reverse(k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TaskStatus;

    fn tasks(spec: &[(&str, &[&str])]) -> Vec<PlannedTask> {
        spec.iter()
            .map(|(id, deps)| PlannedTask::for_tests(id, deps))
            .collect()
    }

    fn done(ok: bool) -> outcome::DepResult {
        outcome::DepResult {
            commit: None,
            ok,
            status: if ok {
                TaskStatus::NoChanges
            } else {
                TaskStatus::Failed
            },
        }
    }

    #[test]
    fn tasks_start_in_file_order_once_their_dependencies_ended() {
        let t = tasks(&[("a", &[]), ("b", &["c"]), ("c", &[]), ("d", &["a", "c"])]);
        let mut s = Schedule::new(&t, &[]);
        assert_eq!(s.next_ready(), Some(0));
        assert_eq!(s.next_ready(), Some(2));
        assert_eq!(s.next_ready(), None);
        s.finished(2, done(true));
        // b (index 1) is ready before d, which still waits for a.
        assert_eq!(s.next_ready(), Some(1));
        assert_eq!(s.next_ready(), None);
        s.finished(0, done(false));
        assert_eq!(s.next_ready(), Some(3));
        // d learns both results, the failed one included.
        let deps = s.dep_receivers(3, &t);
        let oks: Vec<bool> = deps
            .iter()
            .map(|a| a.rx.borrow().as_ref().is_some_and(|r| r.ok))
            .collect();
        assert_eq!(oks, vec![false, true]);
    }

    #[test]
    fn a_lane_runs_its_tasks_one_after_another_whatever_their_outcome() {
        // Lane b → d → a (merge order); c is free; d also depends on b explicitly.
        let t = tasks(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &["b"])]);
        let mut s = Schedule::new(&t, &[vec![1, 3, 0]]);
        assert_eq!(s.next_ready(), Some(1));
        assert_eq!(s.next_ready(), Some(2));
        assert_eq!(s.next_ready(), None);
        s.finished(1, done(false));
        assert_eq!(s.next_ready(), Some(3));
        // d waits for b once, as a dependency (not as its lane too).
        let d: Vec<(String, bool)> = s
            .dep_receivers(3, &t)
            .iter()
            .map(|a| (a.name.clone(), a.lane))
            .collect();
        assert_eq!(d, vec![("b".to_string(), false)]);
        assert_eq!(s.next_ready(), None);
        s.finished(3, done(true));
        assert_eq!(s.next_ready(), Some(0));
        let a: Vec<(String, bool)> = s
            .dep_receivers(0, &t)
            .iter()
            .map(|a| (a.name.clone(), a.lane))
            .collect();
        assert_eq!(a, vec![("b".into(), true), ("d".into(), true)]);
    }
}
