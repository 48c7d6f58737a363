//! Token figures as each agent reports them, read into one [`Usage`].

use serde_json::Value;

use super::Usage;

fn get(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Codex app-server's `TokenUsageBreakdown` (`thread/tokenUsage/updated`: `tokenUsage.total`).
pub fn codex_app_server(breakdown: &Value) -> Option<Usage> {
    breakdown.is_object().then(|| Usage {
        input_tokens: get(breakdown, "inputTokens"),
        cached_input_tokens: get(breakdown, "cachedInputTokens"),
        output_tokens: get(breakdown, "outputTokens"),
        reasoning_tokens: get(breakdown, "reasoningOutputTokens"),
        total_tokens: get(breakdown, "totalTokens"),
        usd: None,
    })
}

/// Codex mcp-server's `token_count` event (`info.total_token_usage`), and the same snake-case
/// shape an `exec` agent may write to `$FANOUT_USAGE`.
pub fn codex_snake_case(usage: &Value) -> Option<Usage> {
    if !usage.is_object() {
        return None;
    }
    let (input, output) = (get(usage, "input_tokens"), get(usage, "output_tokens"));
    let total = match get(usage, "total_tokens") {
        0 => input + output,
        t => t,
    };
    Some(Usage {
        input_tokens: input,
        cached_input_tokens: get(usage, "cached_input_tokens"),
        output_tokens: output,
        reasoning_tokens: get(usage, "reasoning_output_tokens").max(get(usage, "reasoning_tokens")),
        total_tokens: total,
        usd: None,
    })
}

/// Claude Code's `-p --output-format json` result: `usage` counts fresh input apart from the
/// cache (`cache_read_input_tokens`, `cache_creation_input_tokens`); its `total_cost_usd` is
/// Claude Code's own estimate, which fanout does not use (prices come from `pricing`).
pub fn claude_result(result: &Value) -> Option<Usage> {
    let usage = result.get("usage").filter(|u| u.is_object())?;
    let cached = get(usage, "cache_read_input_tokens");
    let input = get(usage, "input_tokens") + get(usage, "cache_creation_input_tokens") + cached;
    let output = get(usage, "output_tokens");
    Some(Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        reasoning_tokens: 0,
        total_tokens: input + output,
        usd: None,
    })
}

/// The model Claude Code's result says it used most (`modelUsage` keys), for pricing.
pub fn claude_model(result: &Value) -> Option<String> {
    let models = result.get("modelUsage")?.as_object()?;
    models
        .iter()
        .max_by_key(|(_, u)| get(u, "outputTokens") + get(u, "inputTokens"))
        .map(|(name, _)| name.clone())
}

/// What `after` adds to `before` (figures that only grow, as Codex's thread totals do).
pub fn since(before: &Usage, after: &Usage) -> Usage {
    Usage {
        input_tokens: after.input_tokens.saturating_sub(before.input_tokens),
        cached_input_tokens: after
            .cached_input_tokens
            .saturating_sub(before.cached_input_tokens),
        output_tokens: after.output_tokens.saturating_sub(before.output_tokens),
        reasoning_tokens: after
            .reasoning_tokens
            .saturating_sub(before.reasoning_tokens),
        total_tokens: after.total_tokens.saturating_sub(before.total_tokens),
        usd: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_shape_reads_the_same() {
        let app = codex_app_server(&json!({"inputTokens": 10, "cachedInputTokens": 4,
            "outputTokens": 3, "reasoningOutputTokens": 1, "totalTokens": 13}))
        .unwrap();
        let mcp = codex_snake_case(&json!({"input_tokens": 10, "cached_input_tokens": 4,
            "output_tokens": 3, "reasoning_output_tokens": 1, "total_tokens": 13}))
        .unwrap();
        assert_eq!(app, mcp);
        assert_eq!(codex_app_server(&Value::Null), None);
        let exec = codex_snake_case(&json!({"input_tokens": 2, "output_tokens": 5})).unwrap();
        assert_eq!(exec.total_tokens, 7);
    }

    #[test]
    fn claude_counts_the_cache_as_input() {
        let result = json!({"usage": {"input_tokens": 5, "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000, "output_tokens": 20},
            "modelUsage": {"claude-haiku": {"inputTokens": 1, "outputTokens": 1},
                           "claude-sonnet": {"inputTokens": 1100, "outputTokens": 19}}});
        let u = claude_result(&result).unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.total_tokens),
            (1105, 1000, 1125)
        );
        assert_eq!(claude_model(&result).as_deref(), Some("claude-sonnet"));
        assert_eq!(claude_result(&json!({"result": "x"})), None);
    }

    #[test]
    fn a_turn_is_the_growth_of_the_thread_total() {
        let a = Usage {
            input_tokens: 10,
            total_tokens: 12,
            output_tokens: 2,
            ..Usage::default()
        };
        let b = Usage {
            input_tokens: 25,
            total_tokens: 30,
            output_tokens: 5,
            ..Usage::default()
        };
        let d = since(&a, &b);
        assert_eq!(
            (d.input_tokens, d.output_tokens, d.total_tokens),
            (15, 3, 18)
        );
    }
}
