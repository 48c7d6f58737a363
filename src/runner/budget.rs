//! What the run has spent and may still spend (issue 23): prices from the task file's
//! `pricing`, the run's running total, and the `budget` checks the task pipelines and the
//! scheduler make. A task's own total lives in its report; the run's total here also counts
//! the tasks a resumed run carried over.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::shared::Shared;
use crate::agent::AgentInfo;
use crate::usage::meter::Meter;

use crate::usage::budget::Budget;
use crate::usage::pricing::{self, Pricing};
use crate::usage::Usage;

pub(crate) struct Spending {
    pricing: Pricing,
    budget: Budget,
    run_total: Mutex<Usage>,
    /// Models already warned about (no price): once per run each.
    warned: Mutex<BTreeSet<String>>,
}

impl Spending {
    /// `carried`: what the tasks a resumed run keeps spent before.
    pub fn new(pricing: Pricing, budget: Budget, carried: Usage) -> Spending {
        Spending {
            pricing,
            budget,
            run_total: Mutex::new(carried),
            warned: Mutex::new(BTreeSet::new()),
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

    /// Adds what a task just spent to the run's total.
    pub fn record(&self, usage: &Usage) {
        if let Ok(mut total) = self.run_total.lock() {
            total.add(usage);
        }
    }

    pub fn run_total(&self) -> Usage {
        self.run_total.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Why no new task or turn may start: the run's budget is spent.
    pub fn run_spent(&self) -> Option<String> {
        self.budget.run.as_ref()?.spent(&self.run_total())
    }

    /// Why a task that spent `spent` must stop.
    pub fn task_over(&self, spent: &Usage) -> Option<String> {
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

/// Resolves, with why, when a running turn must stop for the task's budget: its time is up, or
/// (read live from the session's meter) its tokens or money are. Never resolves without limits.
/// `before`: the session at the turn's start; `spent`: what the task spent before the turn.
pub(crate) async fn task_limit(
    shared: Arc<Shared>,
    meter: Meter,
    before: AgentInfo,
    spent: Usage,
    session_started: tokio::time::Instant,
) -> String {
    let spending = &shared.spending;
    let time = async {
        match spending.task_time() {
            Some(limit) => {
                tokio::time::sleep_until(session_started + limit).await;
                time_up(limit)
            }
            None => std::future::pending().await,
        }
    };
    let tokens = async {
        if !spending.watches_tokens() {
            return std::future::pending().await;
        }
        let start = before.usage.clone().unwrap_or_default();
        let mut live = meter.watch();
        loop {
            let turn = crate::usage::read::since(&start, &live.borrow_and_update());
            let mut total = spent.clone();
            total.add(&spending.priced(before.model.as_deref(), turn));
            if let Some(why) = spending.task_over(&total) {
                return why;
            }
            if live.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    tokio::select! {
        why = time => why,
        why = tokens => why,
    }
}

fn time_up(limit: Duration) -> String {
    format!(
        "task budget exceeded: it ran {} s, the budget is {} s",
        limit.as_secs_f64(),
        limit.as_secs_f64()
    )
}

/// Why a task that spent `task_spent` and started its session then is over its budget
/// (tokens, money or time).
pub(crate) fn task_over(
    shared: &Shared,
    task_spent: Option<&Usage>,
    session_started: tokio::time::Instant,
) -> Option<String> {
    let spending = &shared.spending;
    if let Some(limit) = spending
        .task_time()
        .filter(|l| session_started.elapsed() >= *l)
    {
        return Some(time_up(limit));
    }
    task_spent.and_then(|s| spending.task_over(s))
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
        s.record(&u);
        assert!(s.run_spent().unwrap().contains("110 tokens spent"));
    }
}
