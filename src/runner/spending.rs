//! What the run has spent and may still spend (issue 23): prices from the task file's
//! `pricing`, the run's running total, and each task's ledger — everything the task spent in
//! this run (every round, every candidate, its judges) and how long its agent sessions ran,
//! which is what `budget.task` limits and the task's `usage` reports. The run's total also
//! counts the tasks a resumed run carried over. The checks on it are in `budget.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::usage::budget::Budget;
use crate::usage::pricing::{self, Pricing};
use crate::usage::Usage;

pub(crate) struct Spending {
    pricing: Pricing,
    budget: Budget,
    run_total: Mutex<Usage>,
    /// Models already warned about (no price): once per run each.
    warned: Mutex<BTreeSet<String>>,
    /// Each task's ledger, by task id.
    tasks: Mutex<HashMap<String, TaskSpent>>,
}

/// What one task spent in this run, and how long its agent sessions ran.
#[derive(Default)]
struct TaskSpent {
    total: Usage,
    /// Each candidate's spend in the task's current round of candidates.
    candidates: BTreeMap<u32, Usage>,
    /// Sessions open now; since when at least one has been open; the closed spans' time.
    /// Candidates side by side count their common time once.
    open: usize,
    open_since: Option<tokio::time::Instant>,
    closed: Duration,
}

impl TaskSpent {
    fn seconds(&self) -> Duration {
        self.closed + self.open_since.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

impl Spending {
    /// `carried`: what the tasks a resumed run keeps spent before.
    pub fn new(pricing: Pricing, budget: Budget, carried: Usage) -> Spending {
        Spending {
            pricing,
            budget,
            run_total: Mutex::new(carried),
            warned: Mutex::new(BTreeSet::new()),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// `usage` priced for `model`, and the warning to give when its model has no price
    /// (the first time only).
    pub fn price(&self, model: Option<&str>, usage: Usage) -> (Usage, Option<String>) {
        let priced = pricing::priced(&self.pricing, model, usage);
        let warning = pricing::unpriced_warning(&self.pricing, model).filter(|_| {
            let key = model.unwrap_or("").to_string();
            self.warned
                .lock()
                .map(|mut w| w.insert(key))
                .unwrap_or(false)
        });
        (priced, warning)
    }

    /// `usage` priced for `model`, nothing said.
    pub fn priced(&self, model: Option<&str>, usage: Usage) -> Usage {
        pricing::priced(&self.pricing, model, usage)
    }

    /// Adds what a task (its candidate `candidate`, when it has candidates) just spent to the
    /// task's and the run's totals.
    pub fn record(&self, task: &str, candidate: Option<u32>, usage: &Usage) {
        // Nothing to add to a task's total (exec agents report nothing): no ledger entry.
        if candidate.is_none() && *usage == Usage::default() {
            return;
        }
        if let Ok(mut total) = self.run_total.lock() {
            total.add(usage);
        }
        self.with_task(task, |t| {
            t.total.add(usage);
            if let Some(k) = candidate {
                t.candidates.entry(k).or_default().add(usage);
            }
        });
    }

    fn with_task<R>(&self, task: &str, f: impl FnOnce(&mut TaskSpent) -> R) -> Option<R> {
        let mut tasks = self.tasks.lock().ok()?;
        Some(f(tasks.entry(task.to_string()).or_default()))
    }

    /// The task's figures, without making an entry for a task that has none.
    fn existing_task<R>(&self, task: &str, f: impl FnOnce(&mut TaskSpent) -> R) -> Option<R> {
        let mut tasks = self.tasks.lock().ok()?;
        tasks.get_mut(task).map(f)
    }

    /// Everything the task spent in this run.
    pub fn task_spent(&self, task: &str) -> Usage {
        self.existing_task(task, |t| t.total.clone())
            .unwrap_or_default()
    }

    /// What candidate `k` of the task spent in its current round of candidates.
    pub fn candidate_spent(&self, task: &str, k: u32) -> Option<Usage> {
        self.existing_task(task, |t| t.candidates.get(&k).cloned())
            .flatten()
    }

    /// A new round of the task's candidates: each candidate's figure starts again (the
    /// task's total goes on).
    pub fn begin_candidates(&self, task: &str) {
        self.existing_task(task, |t| t.candidates.clear());
    }

    /// How long the task's agent sessions ran, in every round.
    pub fn task_seconds(&self, task: &str) -> Duration {
        self.existing_task(task, |t| t.seconds())
            .unwrap_or_default()
    }

    pub(super) fn session_opened(&self, task: &str) {
        // Sessions are timed for `budget.task.seconds` only: without it a run of 10 000 tasks
        // kept 10 000 clocks nobody reads.
        if self.task_time().is_none() {
            return;
        }
        self.with_task(task, |t| {
            if t.open == 0 {
                t.open_since = Some(tokio::time::Instant::now());
            }
            t.open += 1;
        });
    }

    pub(super) fn session_closed(&self, task: &str) {
        if self.task_time().is_none() {
            return;
        }
        self.with_task(task, |t| {
            t.open = t.open.saturating_sub(1);
            if t.open == 0 {
                if let Some(since) = t.open_since.take() {
                    t.closed += since.elapsed();
                }
            }
        });
    }

    pub fn run_total(&self) -> Usage {
        self.run_total.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Why no new task or turn may start: the run's budget is spent.
    pub fn run_spent(&self) -> Option<String> {
        self.budget.run.as_ref()?.spent(&self.run_total())
    }

    /// Why a task that spent `spent` must stop (tokens or money).
    pub(super) fn task_over(&self, spent: &Usage) -> Option<String> {
        self.budget.task.as_ref()?.exceeded(spent)
    }

    /// How long a task may run (`budget.task.seconds`).
    pub fn task_time(&self) -> Option<Duration> {
        self.budget
            .task
            .as_ref()?
            .seconds
            .map(Duration::from_secs_f64)
    }

    /// Whether limits are set that the live meter must watch while a turn runs.
    pub fn watches_tokens(&self) -> bool {
        self.budget
            .task
            .as_ref()
            .is_some_and(|t| t.tokens.is_some() || t.usd.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::budget::RunBudget;
    use crate::usage::pricing::Price;

    #[test]
    fn the_run_total_counts_what_was_carried_and_warns_once_per_unpriced_model() {
        let mut prices = Pricing::new();
        prices.insert(
            "m".into(),
            Price {
                input: 1.0,
                cached_input: None,
                output: 1.0,
            },
        );
        let budget = Budget {
            task: None,
            run: Some(RunBudget {
                tokens: Some(100),
                usd: None,
            }),
        };
        let carried = Usage {
            total_tokens: 60,
            ..Usage::default()
        };
        let s = Spending::new(prices, budget, carried);
        assert_eq!(s.run_spent(), None);
        let (u, w) = s.price(
            Some("other"),
            Usage {
                total_tokens: 50,
                ..Usage::default()
            },
        );
        assert!(w.is_some());
        assert_eq!(s.price(Some("other"), u.clone()).1, None);
        s.record("t", Some(2), &u);
        assert!(s.run_spent().unwrap().contains("110 tokens spent"));
        // The task's ledger: its total and its candidate's, the candidates' starting again.
        s.record("t", None, &u);
        assert_eq!(s.task_spent("t").total_tokens, 100);
        assert_eq!(s.candidate_spent("t", 2).map(|u| u.total_tokens), Some(50));
        s.begin_candidates("t");
        assert_eq!(s.candidate_spent("t", 2), None);
        assert_eq!(s.task_spent("t").total_tokens, 100);
        assert_eq!(s.task_spent("other").total_tokens, 0);
    }

    #[test]
    fn a_tasks_time_counts_its_open_sessions_once() {
        let ms = |n| Duration::from_millis(n);
        let budget = Budget {
            task: Some(crate::usage::budget::TaskBudget {
                seconds: Some(60.0),
                ..Default::default()
            }),
            run: None,
        };
        let s = Spending::new(Pricing::new(), budget, Usage::default());
        s.session_opened("t");
        std::thread::sleep(ms(60));
        // A second candidate side by side: their common time counts once.
        s.session_opened("t");
        std::thread::sleep(ms(40));
        s.session_closed("t");
        s.session_closed("t");
        std::thread::sleep(ms(200));
        let ran = s.task_seconds("t");
        assert!(ran >= ms(100) && ran < ms(200), "{ran:?}");
        // A later round adds its own.
        s.session_opened("t");
        std::thread::sleep(ms(50));
        assert!(s.task_seconds("t") >= ran + ms(50));
    }

    #[test]
    fn tasks_that_spend_nothing_and_have_no_time_budget_keep_no_ledger() {
        let s = Spending::new(Pricing::new(), Budget::default(), Usage::default());
        s.session_opened("t");
        s.record("t", None, &Usage::default());
        s.session_closed("t");
        assert_eq!(s.task_spent("t"), Usage::default());
        assert_eq!(s.task_seconds("t"), Duration::ZERO);
        assert!(s.tasks.lock().expect("lock").is_empty());
    }
}
