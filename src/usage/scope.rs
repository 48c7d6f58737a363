//! What the judges (review, diagnosis, selection) spend, collected without threading a counter
//! through every call: the runner runs a judging step inside [`counting`], and each Claude Code
//! answer read inside it is [`record`]ed there. Outside a `counting` scope nothing is kept.

use std::cell::RefCell;
use std::future::Future;

use super::Usage;

/// One answer's usage and the model that gave it.
pub type Spent = (Usage, Option<String>);

tokio::task_local! {
    static SPENT: RefCell<Vec<Spent>>;
}

/// Runs `f`, and returns with its output what every answer recorded inside it spent.
pub async fn counting<F: Future>(f: F) -> (F::Output, Vec<Spent>) {
    SPENT
        .scope(RefCell::new(Vec::new()), async {
            let out = f.await;
            let spent = SPENT.with(|s| s.take());
            (out, spent)
        })
        .await
}

/// Keeps what one answer spent, when a [`counting`] scope is open.
pub fn record(usage: Usage, model: Option<String>) {
    let _ = SPENT.try_with(|s| s.borrow_mut().push((usage, model)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_inside_the_scope_are_counted_and_outside_ignored() {
        record(Usage::default(), None);
        let one = Usage {
            total_tokens: 5,
            ..Usage::default()
        };
        let (out, spent) = counting(async {
            record(one.clone(), Some("m".into()));
            tokio::task::yield_now().await;
            record(one.clone(), None);
            7
        })
        .await;
        assert_eq!(out, 7);
        assert_eq!(spent.len(), 2);
        assert_eq!(spent[0].1.as_deref(), Some("m"));
    }
}
