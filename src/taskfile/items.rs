//! A template's `for_each.items`: strings (`{item}`, `{name}`), or objects of strings whose
//! fields are the placeholders — a list of paths with what to do to each, for instance.

use std::collections::BTreeMap;

use serde_json::Value;

use super::problem::Problem;

/// The placeholder values of each item; every problem is reported at `loc` (`…items`).
pub fn parse_items(
    items: &[Value],
    loc: &str,
    problems: &mut Vec<Problem>,
) -> Vec<BTreeMap<String, String>> {
    let mut problem = |at: String, message: String| {
        problems.push(Problem {
            location: at,
            message,
        })
    };
    let mut out = Vec::new();
    // The fields of the first object item: every object item has the same.
    let mut fields: Option<Vec<String>> = None;
    let strings = items.first().is_some_and(Value::is_string);
    for (i, it) in items.iter().enumerate() {
        let at = format!("{loc}[{i}]");
        match (it, strings) {
            (Value::String(s), true) => {
                let b = [("item", s), ("name", s)];
                out.push(
                    b.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
            }
            (Value::Object(obj), false) => {
                let mut b = BTreeMap::new();
                for (k, v) in obj {
                    if !is_field_name(k) {
                        problem(
                            format!("{at}.{k}"),
                            "a field name is a placeholder: lowercase letters, digits and `_`, starting with a letter, not `n`".into(),
                        );
                    }
                    match v.as_str() {
                        Some(s) => {
                            b.insert(k.clone(), s.to_string());
                        }
                        None => problem(format!("{at}.{k}"), "expected a string".into()),
                    }
                }
                let keys: Vec<String> = obj.keys().cloned().collect();
                match &fields {
                    None if keys.is_empty() => problem(at, "an item object needs a field".into()),
                    None => fields = Some(keys),
                    Some(f) if *f != keys => problem(
                        at,
                        format!("every item has the same fields ({})", f.join(", ")),
                    ),
                    Some(_) => {}
                }
                out.push(b);
            }
            _ if strings => problem(at, "expected a string, like the first item".into()),
            _ => problem(
                at,
                "expected an object of strings, like the first item".into(),
            ),
        }
    }
    out
}

fn is_field_name(k: &str) -> bool {
    k != "n"
        && k.starts_with(|c: char| c.is_ascii_lowercase())
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
