/*!
Token and money accounting: what an agent or a judge spent, summed per attempt, per task and per
run (`usage` in events, report.json, JUnit, HTML, `fanout status`). Money comes only from the task
file's `pricing` table (`pricing.rs`): fanout ships no prices, and a model without one is counted in
tokens only. `budget.rs` holds the limits a task and a run may spend.
*/

pub mod budget;
pub mod meter;
pub mod pricing;
pub mod read;
pub mod scope;

use serde::{Deserialize, Serialize};

/// Tokens (and money, when priced) spent by one agent turn, attempt, task or run.
#[derive(schemars::JsonSchema, Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// The part of `input_tokens` read from the model's prompt cache.
    pub cached_input_tokens: u64,
    /// Output tokens, reasoning ones included.
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on reasoning.
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    /// US dollars, from the task file's `pricing`; absent when no price was known for any of
    /// the tokens (a sum of priced and unpriced parts counts the priced ones: the run's
    /// warnings name the models without a price).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
}

impl Usage {
    /// Whether nothing was spent (no token counted).
    pub fn is_empty(&self) -> bool {
        self.total_tokens == 0 && self.input_tokens == 0 && self.output_tokens == 0
    }

    /// Adds `other` to this sum. Money adds when either side has some: a priced part and an
    /// unpriced part sum to the priced part (the tokens still say the whole).
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.output_tokens += other.output_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.total_tokens += other.total_tokens;
        self.usd = match (self.usd, other.usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }

    /// The sum of several.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Usage>) -> Usage {
        let mut total = Usage::default();
        for u in all {
            total.add(u);
        }
        total
    }

    /// Adds what `other` says to an optional sum (`None` + nothing stays `None`).
    pub fn add_to(sum: &mut Option<Usage>, other: Option<&Usage>) {
        if let Some(o) = other {
            sum.get_or_insert_with(Usage::default).add(o);
        }
    }

    /// Its figures as `(name, value)` pairs, for JUnit properties and HTML data attributes
    /// (`usd` only when priced).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("input_tokens", self.input_tokens.to_string()),
            ("cached_input_tokens", self.cached_input_tokens.to_string()),
            ("output_tokens", self.output_tokens.to_string()),
            ("reasoning_tokens", self.reasoning_tokens.to_string()),
            ("total_tokens", self.total_tokens.to_string()),
        ];
        if let Some(usd) = self.usd {
            f.push(("usd", format!("{usd:.6}")));
        }
        f
    }

    /// `1234 tokens ($0.0123)` or `1234 tokens`.
    pub fn brief(&self) -> String {
        match self.usd {
            Some(usd) => format!("{} tokens (${usd:.4})", self.total_tokens),
            None => format!("{} tokens", self.total_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: u64, output: u64, usd: Option<f64>) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            usd,
            ..Usage::default()
        }
    }

    #[test]
    fn sums_tokens_and_money() {
        let total = Usage::sum([&tokens(10, 5, Some(0.5)), &tokens(1, 2, Some(0.25))]);
        assert_eq!(total.total_tokens, 18);
        assert_eq!(total.usd, Some(0.75));
        let unpriced = Usage::sum([&tokens(10, 5, None), &tokens(1, 1, None)]);
        assert_eq!(unpriced.usd, None);
        assert_eq!(unpriced.brief(), "17 tokens");
    }

    #[test]
    fn optional_sum_stays_none_without_figures() {
        let mut sum = None;
        Usage::add_to(&mut sum, None);
        assert_eq!(sum, None);
        Usage::add_to(&mut sum, Some(&tokens(3, 4, None)));
        assert_eq!(sum.map(|u| u.total_tokens), Some(7));
    }
}
