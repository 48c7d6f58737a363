//! The `budget` checks the task pipelines and the scheduler make, on what the run's
//! [`Spending`](super::spending::Spending) holds: a task's agent sessions timed, a turn's
//! spend recorded even when its future is dropped, a running turn stopped when the task's
//! budget is spent.

use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use crate::agent::AgentInfo;
use crate::usage::meter::Meter;

/// An agent session of a task, open while it lives: its time counts towards
/// `budget.task.seconds` (closed when dropped, also when a stopped candidate's future is).
pub(crate) struct SessionClock {
    shared: Arc<Shared>,
    task: String,
}

impl SessionClock {
    pub fn open(shared: &Arc<Shared>, task: &str) -> SessionClock {
        shared.spending.session_opened(task);
        SessionClock {
            shared: shared.clone(),
            task: task.to_string(),
        }
    }
}

impl Drop for SessionClock {
    fn drop(&mut self) {
        self.shared.spending.session_closed(&self.task);
    }
}

/// A turn's spend not yet accounted: when its future is dropped (a candidate stopped because
/// another passed first) what the session's live meter grew by is recorded then; a turn that
/// ended is accounted by the runner and [`TurnInFlight::done`] disarms this.
pub(crate) struct TurnInFlight {
    shared: Arc<Shared>,
    task: String,
    candidate: Option<u32>,
    meter: Meter,
    before: AgentInfo,
    armed: bool,
}

impl TurnInFlight {
    pub fn start(
        shared: &Arc<Shared>,
        (task, candidate): (&str, Option<u32>),
        meter: &Meter,
        before: &AgentInfo,
    ) -> TurnInFlight {
        TurnInFlight {
            shared: shared.clone(),
            task: task.to_string(),
            candidate,
            meter: meter.clone(),
            before: before.clone(),
            armed: true,
        }
    }

    pub fn done(mut self) {
        self.armed = false;
    }
}

impl Drop for TurnInFlight {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let start = self.before.usage.clone().unwrap_or_default();
        let turn = crate::usage::read::since(&start, &self.meter.get());
        if turn.is_empty() {
            return;
        }
        let spending = &self.shared.spending;
        let turn = spending.priced(self.before.model.as_deref(), turn);
        spending.record(&self.task, self.candidate, &turn);
    }
}

/// Resolves, with why, when a running turn must stop for the task's budget: its time is up, or
/// (read live from the session's meter, with what the task spent elsewhere — its earlier
/// rounds, its other candidates) its tokens or money are. Never resolves without limits.
/// `before`: the session at the turn's start.
pub(crate) async fn task_limit(
    shared: Arc<Shared>,
    meter: Meter,
    before: AgentInfo,
    task: String,
) -> String {
    let spending = &shared.spending;
    let time = async {
        match spending.task_time() {
            Some(limit) => {
                // This session is open while it waits: the task's time grows as the clock.
                let left = limit.saturating_sub(spending.task_seconds(&task));
                tokio::time::sleep(left).await;
                time_up(spending.task_seconds(&task), limit)
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
            let mut total = spending.task_spent(&task);
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

fn time_up(ran: Duration, limit: Duration) -> String {
    format!(
        "task budget exceeded: its agent ran {:.1} s, the budget is {} s",
        ran.as_secs_f64().max(limit.as_secs_f64()),
        limit.as_secs_f64()
    )
}

/// Why what the task spent in this run (tokens, money, not time) is over its budget: after its
/// judges (gates, the review that chose among its candidates), nothing is merged then.
pub(crate) fn task_spent_over(shared: &Shared, task: &str) -> Option<String> {
    let spending = &shared.spending;
    spending.task_over(&spending.task_spent(task))
}

/// Why the task is over its budget: everything it spent in this run (tokens, money), or the
/// time its agent sessions ran.
pub(crate) fn task_over(shared: &Shared, task: &str) -> Option<String> {
    let spending = &shared.spending;
    if let Some(limit) = spending.task_time() {
        let ran = spending.task_seconds(task);
        if ran >= limit {
            return Some(time_up(ran, limit));
        }
    }
    spending.task_over(&spending.task_spent(task))
}
