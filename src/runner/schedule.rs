//! Which task starts next: task-file order among the tasks whose dependencies all ended
//! (pure bookkeeping, so it is unit-tested apart from the runner).

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
}

impl Schedule {
    pub(super) fn new(tasks: &[PlannedTask]) -> Schedule {
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
        }
    }

    pub(super) fn next_ready(&mut self) -> Option<usize> {
        self.ready.pop().map(|std::cmp::Reverse(i)| i)
    }

    /// The ended dependencies' results, in the form the pipeline waits on (already filled in).
    pub(super) fn dep_receivers(
        &self,
        task: &PlannedTask,
    ) -> Vec<(String, watch::Receiver<Option<outcome::DepResult>>)> {
        task.spec
            .depends_on
            .iter()
            .filter_map(|d| {
                let &j = self.index.get(d.as_str())?;
                let (_tx, rx) = watch::channel(self.results[j].clone());
                Some((d.to_string(), rx))
            })
            .collect()
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
        let mut s = Schedule::new(&t);
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
        let deps = s.dep_receivers(&t[3]);
        let oks: Vec<bool> = deps
            .iter()
            .map(|(_, rx)| rx.borrow().as_ref().is_some_and(|r| r.ok))
            .collect();
        assert_eq!(oks, vec![false, true]);
    }
}
