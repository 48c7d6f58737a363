//! The task file's `merge` rules: `[{"paths": [GLOB, …], "strategy": "union"}]`.

use serde_json::Value;

use super::model::MergeRule;
use super::read::kind;
use super::schema;
use super::validator::Validator;
use crate::git::merge_rules::{self, MergeStrategy};

impl Validator {
    /// `merge`: each rule's globs compile, its strategy is known.
    pub(super) fn merge_rules(&mut self, value: &Value) -> Vec<MergeRule> {
        let path = "$.merge";
        let Value::Array(items) = value else {
            self.problem(
                path,
                format!("expected an array of rules, found {}", kind(value)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let loc = format!("{path}[{i}]");
            let Some(obj) = self.object(item, &loc) else {
                continue;
            };
            self.known_fields(obj, &loc, &schema::names(schema::MERGE_RULE_FIELDS));
            for key in ["paths", "strategy"] {
                if !obj.contains_key(key) {
                    self.problem(&loc, format!("missing field {key:?}"));
                }
            }
            let paths = self.strings(obj, "paths", &loc).unwrap_or_default();
            if obj.contains_key("paths") && paths.is_empty() {
                self.problem(&format!("{loc}.paths"), "name at least one glob");
            }
            for (j, g) in paths.iter().enumerate() {
                if let Err(e) = merge_rules::glob(g) {
                    self.problem(&format!("{loc}.paths[{j}]"), e);
                }
            }
            let strategy = self.string(obj, "strategy", &loc).and_then(|s| {
                let parsed = MergeStrategy::parse(&s);
                if parsed.is_none() {
                    self.problem(
                        &format!("{loc}.strategy"),
                        format!(
                            "unknown strategy {s:?}; expected one of: {}",
                            MergeStrategy::NAMES.join(", ")
                        ),
                    );
                }
                parsed
            });
            if let (false, Some(strategy)) = (paths.is_empty(), strategy) {
                out.push(MergeRule { paths, strategy });
            }
        }
        out
    }
}
