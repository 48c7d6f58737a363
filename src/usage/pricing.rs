//! The task file's `pricing` table: US dollars per million tokens, per model. fanout ships no
//! prices (they change); a model the table does not name is counted in tokens only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Usage;

/// One model's prices, in US dollars per million tokens.
#[derive(schemars::JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    /// Input tokens read from the prompt cache; the `input` price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    pub output: f64,
}

/// Model name → its prices, as the task file's `pricing` says.
pub type Pricing = BTreeMap<String, Price>;

impl Price {
    /// What `usage` costs at these prices (reasoning tokens are output tokens).
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        let cached_price = self.cached_input.unwrap_or(self.input);
        (fresh as f64 * self.input
            + cached as f64 * cached_price
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// `usage` with its money filled in from `pricing` for `model`; unchanged (tokens only) when the
/// model has no price or is not known.
pub fn priced(pricing: &Pricing, model: Option<&str>, mut usage: Usage) -> Usage {
    if let Some(price) = model.and_then(|m| pricing.get(m)) {
        usage.usd = Some(price.cost(&usage));
    }
    usage
}

/// Why `model`'s tokens carry no money, when `pricing` is in use but does not name it.
pub fn unpriced_warning(pricing: &Pricing, model: Option<&str>) -> Option<String> {
    if pricing.is_empty() {
        return None;
    }
    match model {
        Some(m) if pricing.contains_key(m) => None,
        Some(m) => Some(format!(
            "pricing names no model \"{m}\": its tokens are counted, not priced"
        )),
        None => Some(
            "the agent did not say which model it used: its tokens are counted, not priced".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Usage {
        Usage {
            input_tokens: 2_000_000,
            cached_input_tokens: 1_000_000,
            output_tokens: 500_000,
            reasoning_tokens: 100_000,
            total_tokens: 2_500_000,
            usd: None,
        }
    }

    #[test]
    fn cached_input_has_its_own_price() {
        let price = Price {
            input: 1.25,
            cached_input: Some(0.125),
            output: 10.0,
        };
        // 1M fresh × 1.25 + 1M cached × 0.125 + 0.5M × 10
        assert!((price.cost(&usage()) - 6.375).abs() < 1e-9);
        let no_cache_price = Price {
            input: 1.0,
            cached_input: None,
            output: 2.0,
        };
        assert!((no_cache_price.cost(&usage()) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn unknown_model_stays_in_tokens() {
        let mut pricing = Pricing::new();
        pricing.insert(
            "m".into(),
            Price {
                input: 1.0,
                cached_input: None,
                output: 1.0,
            },
        );
        assert_eq!(priced(&pricing, Some("other"), usage()).usd, None);
        assert_eq!(priced(&pricing, None, usage()).usd, None);
        assert!(priced(&pricing, Some("m"), usage()).usd.is_some());
        assert!(unpriced_warning(&pricing, Some("other"))
            .unwrap()
            .contains("\"other\""));
        assert_eq!(unpriced_warning(&Pricing::new(), Some("other")), None);
    }
}
