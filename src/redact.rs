/*!
Secrets never reach fanout's logs or reports. Values that look like secrets — environment
variables named like keys, tokens or passwords (fanout's own and every agent profile's), and
values a profile took from the environment with `${VAR}` — are registered once per run and
replaced by `[redacted]` in event logs, agents' stderr logs, state.json, report.json and the
terminal output.
*/

use std::borrow::Cow;
use std::sync::RwLock;

/// Shorter values are not treated as secrets (they would redact ordinary words).
const MIN_SECRET_LEN: usize = 6;

pub const MASK: &str = "[redacted]";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether an environment variable's name says it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "AUTH",
        "COOKIE",
        "SESSION",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

/// Registers one secret value.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the secret-looking variables of fanout's own environment.
pub fn register_process_env() {
    for (k, v) in std::env::vars() {
        if is_secret_name(&k) {
            register(&v);
        }
    }
}

/// Registers every string of a JSON document that is long enough to be a credential
/// (used for Codex's `auth.json`).
pub fn register_json_strings(value: &serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.len() >= 16 => register(s),
        serde_json::Value::Array(a) => a.iter().for_each(register_json_strings),
        serde_json::Value::Object(m) => m.values().for_each(register_json_strings),
        _ => {}
    }
}

/// `text` with every registered secret masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// Byte version of [`redact`] for log chunks (lossy only where a secret was found).
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let hit = secrets
        .iter()
        .any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()));
    drop(secrets);
    if !hit {
        return Cow::Borrowed(bytes);
    }
    Cow::Owned(
        redact(&String::from_utf8_lossy(bytes))
            .into_owned()
            .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_registered_secrets_only() {
        register("sk-test-0123456789");
        register("abc"); // too short to be treated as a secret
        assert_eq!(redact("key=sk-test-0123456789!"), "key=[redacted]!");
        assert_eq!(redact("abc stays"), "abc stays");
        assert_eq!(&*redact_bytes(b"x sk-test-0123456789 y"), b"x [redacted] y");
        assert!(is_secret_name("OPENAI_API_KEY") && is_secret_name("github_token"));
        assert!(!is_secret_name("PATH"));
    }
}
