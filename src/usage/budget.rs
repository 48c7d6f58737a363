//! The task file's `budget`: what one task and the whole run may spend. A task over its budget
//! is stopped (`budget_exceeded`); once the run's is spent no new task or turn starts.

use serde::{Deserialize, Serialize};

use super::Usage;

/// `budget` in the task file.
#[derive(schemars::JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// What each task may spend (its agent and its judges, every attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskBudget>,
    /// What the whole run may spend, tasks and judges together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunBudget>,
}

/// One task's limits; each is optional.
#[derive(schemars::JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// US dollars (needs `pricing` for the models used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    /// Seconds from the start of its agent's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// The run's limits; each is optional.
#[derive(schemars::JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
}

/// Why `spent` is over the `tokens` / `usd` limits, in words (`None` while within).
fn over(tokens: Option<u64>, usd: Option<f64>, spent: &Usage) -> Option<String> {
    if let Some(limit) = tokens.filter(|l| spent.total_tokens >= *l) {
        return Some(format!(
            "{} tokens spent, the budget is {limit}",
            spent.total_tokens
        ));
    }
    match (usd, spent.usd) {
        (Some(limit), Some(s)) if s >= limit => {
            Some(format!("${s:.4} spent, the budget is ${limit}"))
        }
        _ => None,
    }
}

impl TaskBudget {
    /// Why a task that spent `spent` is over its budget.
    pub fn exceeded(&self, spent: &Usage) -> Option<String> {
        over(self.tokens, self.usd, spent).map(|why| format!("task budget exceeded: {why}"))
    }
}

impl RunBudget {
    /// Why a run that spent `spent` has no budget left.
    pub fn spent(&self, spent: &Usage) -> Option<String> {
        over(self.tokens, self.usd, spent).map(|why| format!("run budget spent: {why}"))
    }
}

impl Budget {
    /// This budget with every limit `other` names replaced by `other`'s (`fanout resume --budget`).
    pub fn overridden_by(mut self, other: &Budget) -> Budget {
        if let Some(t) = &other.task {
            let mine = self.task.get_or_insert_with(TaskBudget::default);
            mine.tokens = t.tokens.or(mine.tokens);
            mine.usd = t.usd.or(mine.usd);
            mine.seconds = t.seconds.or(mine.seconds);
        }
        if let Some(r) = &other.run {
            let mine = self.run.get_or_insert_with(RunBudget::default);
            mine.tokens = r.tokens.or(mine.tokens);
            mine.usd = r.usd.or(mine.usd);
        }
        self
    }
}

/// Said when a budget counts money but no model has a price: such limits never stop anything.
pub fn unpriced_money_warning(
    budget: &Budget,
    pricing: &super::pricing::Pricing,
) -> Option<String> {
    let money = budget.task.as_ref().is_some_and(|t| t.usd.is_some())
        || budget.run.as_ref().is_some_and(|r| r.usd.is_some());
    (money && pricing.is_empty()).then(|| {
        "budget sets a limit in usd but pricing names no model: money is not counted, so          that limit stops nothing"
            .to_string()
    })
}

/// Reads `fanout resume --budget`: `run.usd=5,task.tokens=200000` (keys `task.tokens`,
/// `task.usd`, `task.seconds`, `run.tokens`, `run.usd`), or a JSON object shaped like the task
/// file's `budget`, or `@FILE` holding that JSON.
pub fn parse_override(text: &str) -> Result<Budget, String> {
    let text = text.trim();
    if let Some(path) = text.strip_prefix('@') {
        let json = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the budget file {path}: {e}"))?;
        return parse_json(&json);
    }
    if text.starts_with('{') {
        return parse_json(text);
    }
    let mut budget = Budget::default();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("\"{pair}\": expected KEY=VALUE, e.g. run.usd=5"))?;
        set(&mut budget, key.trim(), value.trim())?;
    }
    if budget == Budget::default() {
        return Err("the budget names no limit".into());
    }
    Ok(budget)
}

fn parse_json(json: &str) -> Result<Budget, String> {
    serde_json::from_str(json).map_err(|e| format!("the budget is not valid: {e}"))
}

fn set(budget: &mut Budget, key: &str, value: &str) -> Result<(), String> {
    let tokens = || {
        value
            .parse::<u64>()
            .map_err(|_| format!("{key}: \"{value}\" is not a whole number of tokens"))
    };
    let number = || match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{key}: \"{value}\" is not a number ≥ 0")),
    };
    let task = || TaskBudget::default();
    match key {
        "task.tokens" => budget.task.get_or_insert_with(task).tokens = Some(tokens()?),
        "task.usd" => budget.task.get_or_insert_with(task).usd = Some(number()?),
        "task.seconds" => budget.task.get_or_insert_with(task).seconds = Some(number()?),
        "run.tokens" => budget.run.get_or_insert_with(RunBudget::default).tokens = Some(tokens()?),
        "run.usd" => budget.run.get_or_insert_with(RunBudget::default).usd = Some(number()?),
        _ => {
            return Err(format!(
                "unknown budget key \"{key}\" (known: task.tokens, task.usd, task.seconds, run.tokens, run.usd)"
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spent(tokens: u64, usd: Option<f64>) -> Usage {
        Usage {
            total_tokens: tokens,
            usd,
            ..Usage::default()
        }
    }

    #[test]
    fn limits_say_why_they_are_over() {
        let task = TaskBudget {
            tokens: Some(100),
            usd: Some(1.0),
            seconds: None,
        };
        assert_eq!(task.exceeded(&spent(99, Some(0.5))), None);
        assert!(task
            .exceeded(&spent(100, None))
            .unwrap()
            .contains("100 tokens spent"));
        assert!(task
            .exceeded(&spent(5, Some(1.5)))
            .unwrap()
            .contains("$1.5000 spent"));
        let run = RunBudget {
            tokens: None,
            usd: Some(2.0),
        };
        assert_eq!(run.spent(&spent(1_000_000, None)), None);
        assert!(run
            .spent(&spent(1, Some(2.0)))
            .unwrap()
            .starts_with("run budget spent"));
    }

    #[test]
    fn a_money_limit_without_prices_is_said() {
        let budget = parse_override("run.usd=5").unwrap();
        let mut pricing = crate::usage::pricing::Pricing::new();
        assert!(unpriced_money_warning(&budget, &pricing).is_some());
        assert!(
            unpriced_money_warning(&parse_override("run.tokens=5").unwrap(), &pricing).is_none()
        );
        pricing.insert(
            "m".into(),
            crate::usage::pricing::Price {
                input: 1.0,
                cached_input: None,
                output: 1.0,
            },
        );
        assert!(unpriced_money_warning(&budget, &pricing).is_none());
    }

    #[test]
    fn overrides_parse_in_three_forms_and_replace_only_what_they_name() {
        let pairs = parse_override("run.usd=5, task.tokens=200000").unwrap();
        assert_eq!(pairs.run.as_ref().unwrap().usd, Some(5.0));
        assert_eq!(pairs.task.as_ref().unwrap().tokens, Some(200_000));
        let json = parse_override(r#"{"run": {"tokens": 10}}"#).unwrap();
        assert_eq!(json.run.unwrap().tokens, Some(10));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.json");
        std::fs::write(&file, r#"{"task": {"seconds": 30}}"#).unwrap();
        let from_file = parse_override(&format!("@{}", file.display())).unwrap();
        assert_eq!(from_file.task.unwrap().seconds, Some(30.0));
        assert!(parse_override("run.euros=5")
            .unwrap_err()
            .contains("unknown budget key"));
        assert!(parse_override("run.usd=-1").is_err());
        assert!(parse_override("").is_err());

        let old = Budget {
            task: Some(TaskBudget {
                tokens: Some(1),
                usd: None,
                seconds: Some(9.0),
            }),
            run: Some(RunBudget {
                tokens: Some(7),
                usd: Some(1.0),
            }),
        };
        let new = old.overridden_by(&pairs);
        assert_eq!(new.run.as_ref().unwrap().usd, Some(5.0));
        assert_eq!(new.run.as_ref().unwrap().tokens, Some(7));
        assert_eq!(new.task.as_ref().unwrap().tokens, Some(200_000));
        assert_eq!(new.task.as_ref().unwrap().seconds, Some(9.0));
    }
}
