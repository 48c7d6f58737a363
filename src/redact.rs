/*!
Secrets never reach fanout's logs or reports. Two kinds of values are masked as `[redacted]`:

- registered values: fanout's environment variables named like keys, tokens, passwords,
  personal access tokens (`*_PAT`), webhooks or DSNs, the password of a credential URL in any
  variable, values an agent profile took from the environment with `${VAR}`, and the strings of
  Codex's `auth.json`;
- values that look like credentials whoever they belong to: GitHub, OpenAI, Anthropic, Slack,
  AWS, GitLab, npm and Google API tokens, JWTs, private key blocks, Slack and Discord webhook
  URLs, and the `user:password@` part of URLs.

Every writer of a log, report or terminal line masks through here; long outputs (stderr, verify
logs) go through [`StreamRedactor`], which keeps a window between reads so that a secret split
across two reads is still masked.
*/

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, RwLock};

use regex::bytes::Regex;

/// Shorter values are not treated as secrets (they would redact ordinary words).
const MIN_SECRET_LEN: usize = 6;

pub const MASK: &str = "[redacted]";

/// What a streamed output holds back between reads, at least: longer than every bounded value
/// pattern, so a token cut by a read is seen whole with the next one.
const PATTERN_WINDOW: usize = 8 * 1024;

/// A stream holds back at most this much while a match keeps growing at its end (a private key
/// block without its end line); past it the held bytes are masked and written.
const MAX_HELD: usize = 1024 * 1024;

/// Values that look like credentials. `(?-u)`: bytes, ASCII word boundaries. `{B}` is where a
/// token starts: a word boundary, or a JSON escape (`\n`, `\t`, `\r`) right before it, which
/// [`Matcher::write_replacement`] keeps. No pattern matches a `"` or a `\` of its own, so
/// masking serialized JSON keeps it valid.
const PATTERNS: &[&str] = &[
    // GitHub: classic, OAuth, user-to-server, server-to-server, refresh, fine-grained.
    r"{B}gh[pousr]_[A-Za-z0-9]{20,}",
    r"{B}github_pat_[A-Za-z0-9_]{20,}",
    // OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`).
    r"{B}sk-[A-Za-z0-9_-]{20,}",
    // Slack tokens.
    r"{B}xox[abprs]-[A-Za-z0-9-]{10,}",
    // AWS access key ids.
    r"{B}(?:AKIA|ASIA)[A-Z0-9]{16}",
    // GitLab, npm, Google API keys.
    r"{B}glpat-[A-Za-z0-9_-]{20,}",
    r"{B}npm_[A-Za-z0-9]{36,}",
    r"{B}AIza[A-Za-z0-9_-]{35}",
    // JWTs: three base64url parts, the first a JSON object.
    r"{B}eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    // Private key blocks, the end line included when present (single dashes occur in old
    // PEM headers; two mean the end line). JSON escapes of line ends are part of the block.
    r#"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:[^"\\-]|\\[nrt]|-[^"\\-])*(?:-----END[A-Z0-9 ]*PRIVATE KEY-----)?"#,
    // Webhook URLs, which are their own credential.
    r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+",
    r"(?:https?://)?discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_-]+",
    // `scheme://user:password@`: the credentials go, scheme and host stay.
    r#"://[^\s/?#@:'"<>\\]+:[^\s/?#@'"<>\\]+@"#,
];

/// A regex that matches nothing: the last resort if the patterns did not compile.
const NEVER: &str = r"a\Ab";

/// Where a token pattern may start (see [`PATTERNS`]).
const TOKEN_START: &str = r"(?:\b|\\[nrt])";

/// The registered values, longest first (a secret that contains another is masked whole).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registered values and patterns as one regex, rebuilt when a value is registered.
static MATCHER: LazyLock<RwLock<Arc<Matcher>>> =
    LazyLock::new(|| RwLock::new(Arc::new(Matcher::build(&[]))));

struct Matcher {
    re: Regex,
    /// What a stream holds back between reads.
    window: usize,
}

impl Matcher {
    fn build(secrets: &[String]) -> Matcher {
        let alternatives: Vec<String> = secrets
            .iter()
            .map(|s| regex::escape(s))
            .chain(
                PATTERNS
                    .iter()
                    .map(|p| format!("(?:{})", p.replace("{B}", TOKEN_START))),
            )
            .collect();
        let re = regex::bytes::RegexBuilder::new(&format!("(?-u){}", alternatives.join("|")))
            .size_limit(64 * 1024 * 1024)
            .build()
            .or_else(|_| {
                Regex::new(&format!(
                    "(?-u){}",
                    PATTERNS.join("|").replace("{B}", TOKEN_START)
                ))
            })
            .unwrap_or_else(|_| Regex::new(NEVER).expect("a constant regex compiles"));
        let longest = secrets.iter().map(String::len).max().unwrap_or(0);
        Matcher {
            re,
            window: PATTERN_WINDOW.max(longest),
        }
    }

    /// Appends what replaces one match: the mask, after the JSON escape the match started with,
    /// and between a URL's scheme and host for credentials in a URL.
    fn write_replacement(found: &[u8], out: &mut Vec<u8>) {
        if found.starts_with(b"://") {
            out.extend_from_slice(b"://[redacted]@");
            return;
        }
        if found.len() > 2 && found[0] == b'\\' && b"nrt".contains(&found[1]) {
            out.extend_from_slice(&found[..2]);
        }
        out.extend_from_slice(MASK.as_bytes());
    }
}

fn matcher() -> Arc<Matcher> {
    MATCHER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether an environment variable's name says it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let substrings = [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "CREDENTIAL",
        "AUTH",
        "COOKIE",
        "SESSION",
        "WEBHOOK",
        "PRIVATE",
    ];
    // Whole words only: `PATH` is not a `PAT`; `PWD` alone is the shell's folder.
    let words = ["PAT", "DSN", "PWD", "PASS"];
    substrings.iter().any(|w| upper.contains(w))
        || (upper != "PWD"
            && upper
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|part| words.contains(&part)))
}

/// The password of a credential URL (`scheme://user:password@host…`), if it has one.
fn url_password(value: &str) -> Option<&str> {
    let rest = &value[value.find("://")? + 3..];
    let userinfo = &rest[..rest.find('@')?];
    if userinfo.contains('/') {
        return None;
    }
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// Registers one secret value.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if secrets.iter().any(|s| s == value) {
        return;
    }
    secrets.push(value.to_string());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let built = Arc::new(Matcher::build(&secrets));
    *MATCHER.write().unwrap_or_else(|e| e.into_inner()) = built;
}

/// Registers the secret-looking variables of fanout's own environment, and the password of
/// every credential URL among them (`DATABASE_URL=postgres://user:pass@host/db`).
pub fn register_process_env() {
    for (k, v) in std::env::vars() {
        register_variable(&k, &v);
    }
}

/// Registers what a variable `name=value` holds that is secret.
pub fn register_variable(name: &str, value: &str) {
    if is_secret_name(name) {
        register(value);
    } else if let Some(password) = url_password(value) {
        register(password);
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

/// Appends `bytes[..upto]` to `out` with every match that ends by `upto` masked.
fn mask_into(m: &Matcher, bytes: &[u8], upto: usize, out: &mut Vec<u8>) {
    let mut at = 0;
    for found in m.re.find_iter(&bytes[..upto]) {
        out.extend_from_slice(&bytes[at..found.start()]);
        Matcher::write_replacement(found.as_bytes(), out);
        at = found.end();
    }
    out.extend_from_slice(&bytes[at..upto]);
}

/// `text` with every secret masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    match redact_bytes(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// Byte version of [`redact`] for log chunks.
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let m = matcher();
    if !m.re.is_match(bytes) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    mask_into(&m, bytes, bytes.len(), &mut out);
    Cow::Owned(out)
}

/// Masks a stream read in pieces: a secret split between two reads is masked whole. Holds back
/// the last [`PATTERN_WINDOW`] bytes (or the longest registered secret) until more comes or the
/// stream ends.
#[derive(Default)]
pub struct StreamRedactor {
    held: Vec<u8>,
}

impl StreamRedactor {
    pub fn new() -> StreamRedactor {
        StreamRedactor::default()
    }

    /// Adds `chunk`; appends to `out` what is final (masked).
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.held.extend_from_slice(chunk);
        let m = matcher();
        if self.held.len() <= m.window {
            return;
        }
        let len = self.held.len();
        let mut cut = len - m.window;
        // A match across the cut: complete if it ends before the held bytes do (the next byte
        // did not continue it), else it may still grow: hold it from its start.
        for found in m.re.find_iter(&self.held) {
            if found.end() <= cut {
                continue;
            }
            if found.start() < cut {
                cut = if found.end() < len {
                    found.end()
                } else {
                    found.start()
                };
            }
            break;
        }
        if cut == 0 {
            if len <= MAX_HELD {
                return;
            }
            cut = len;
        }
        mask_into(&m, &self.held, cut, out);
        self.held.drain(..cut);
    }

    /// The end of the stream: appends the rest, masked.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let m = matcher();
        let held = std::mem::take(&mut self.held);
        mask_into(&m, &held, held.len(), out);
    }
}

/// A writer that masks what goes through it as a [`StreamRedactor`] does: a large value (the
/// run's last event holds every task's report) is written without being held whole. Give it
/// large writes (e.g. through a `BufWriter`): each one is searched with the held window.
pub struct RedactingWriter<W: std::io::Write> {
    inner: W,
    stream: StreamRedactor,
    out: Vec<u8>,
}

impl<W: std::io::Write> RedactingWriter<W> {
    pub fn new(inner: W) -> Self {
        RedactingWriter {
            inner,
            stream: StreamRedactor::new(),
            out: Vec::new(),
        }
    }

    /// Writes what is still held back, masked.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.clear();
        self.stream.finish(&mut self.out);
        self.inner.write_all(&self.out)?;
        Ok(self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.clear();
        self.stream.push(buf, &mut self.out);
        self.inner.write_all(&self.out)?;
        Ok(buf.len())
    }

    /// Held bytes stay held: they may be the start of a secret.
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake credentials of every kind the patterns know (none of them real).
    pub(crate) fn fake_tokens() -> Vec<String> {
        vec![
            format!("ghp_{}", "a1B2".repeat(9)),
            format!("gho_{}", "Z9y8".repeat(9)),
            format!("ghs_{}", "Q0w9".repeat(9)),
            format!("github_pat_11ABCDEFG0{}", "x_Y7".repeat(15)),
            format!("sk-{}", "Abc123".repeat(8)),
            format!("sk-ant-api03-{}", "Q-w_E1".repeat(16)),
            format!("sk-proj-{}", "Zz09_".repeat(20)),
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".to_string(),
            "AKIAIOSFODNN7EXAMPLE".to_string(),
            "ASIA1234567890ABCDEF".to_string(),
            format!("glpat-{}", "aB3-".repeat(5)),
            format!("npm_{}", "n0PQ".repeat(9)),
            format!("AIza{}", "SyA-1_b".repeat(5)),
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U".to_string(),
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAAAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5\n-----END OPENSSH PRIVATE KEY-----".to_string(),
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX".to_string(),
        ]
    }

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

    #[test]
    fn non_ascii_secrets_and_the_fallback() {
        register("pässwört-geheim-✓");
        assert_eq!(redact("x pässwört-geheim-✓ y"), "x [redacted] y");
        assert!(!NEVER.is_empty() && Regex::new(NEVER).is_ok_and(|r| !r.is_match(b"any\n")));
    }

    #[test]
    fn names_that_hold_secrets() {
        for n in [
            "GITHUB_PAT",
            "PAT",
            "MY_PAT_VALUE",
            "SLACK_WEBHOOK",
            "SLACK_WEBHOOK_URL",
            "SENTRY_DSN",
            "DB_PASS",
            "GPG_PASSPHRASE",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "PATH",
            "PATTERN",
            "XDG_DATA_DIRS",
            "PWD",
            "OLDPWD",
            "HOME",
            "DATABASE_URL",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn credential_urls_lose_their_password() {
        assert_eq!(
            url_password("postgres://app:s3cr3t-pw@db:5432/x"),
            Some("s3cr3t-pw")
        );
        assert_eq!(url_password("https://example.com/a:b@c"), None);
        assert_eq!(url_password("https://user@host"), None);
        register_variable("DATABASE_URL", "mysql://root:hunter2-long@db/app");
        assert_eq!(redact("password is hunter2-long"), "password is [redacted]");
        // Any URL with credentials, registered or not.
        assert_eq!(
            redact("connect postgres://bob:pw@db.local:5432/x now"),
            "connect postgres://[redacted]@db.local:5432/x now"
        );
        assert_eq!(
            redact("see https://example.com:8080/a@b"),
            "see https://example.com:8080/a@b"
        );
    }

    #[test]
    fn every_kind_of_token_is_masked() {
        for t in fake_tokens() {
            let text = format!("before {t} after");
            let masked = redact(&text);
            assert_eq!(masked, "before [redacted] after", "{t}");
            for text in [
                text.clone(),
                format!("line\n{t}\tnext"),
                format!("a\"{t}\""),
            ] {
                let json = serde_json::to_string(&text).unwrap();
                let masked = redact(&json);
                assert!(!masked.contains(&t[t.len() - 12..]), "{masked}");
                let back: String = serde_json::from_str(&masked).unwrap();
                assert!(back.contains(MASK), "{back}");
            }
        }
    }

    #[test]
    fn ordinary_text_stays() {
        for s in [
            "task-description-for-the-new-feature-and-more",
            "disk-usage-report-for-all-the-volumes",
            "npm_config_user_agent=npm/10",
            "eyJ is how base64 JSON starts",
            "see https://example.com/path?q=a:b",
            "risk-assessment-and-mitigation-plan-2026",
        ] {
            assert_eq!(redact(s), s);
        }
    }

    /// Every token, cut at every offset into two reads (and into one-byte reads), comes out
    /// masked, and the text around it intact.
    #[test]
    fn split_tokens_are_masked_at_every_offset() {
        register("registered-secret-value-0042");
        let mut tokens = fake_tokens();
        tokens.push("registered-secret-value-0042".into());
        for t in &tokens {
            let text = format!("{}{t}\nnext line\n", "x ".repeat(5000));
            let want = format!("{}[redacted]\nnext line\n", "x ".repeat(5000));
            let start = 10_000;
            for cut in start..=start + t.len() {
                let mut s = StreamRedactor::new();
                let mut out = Vec::new();
                s.push(&text.as_bytes()[..cut], &mut out);
                s.push(&text.as_bytes()[cut..], &mut out);
                s.finish(&mut out);
                assert_eq!(String::from_utf8_lossy(&out), want, "{t} cut at {cut}");
            }
            let mut s = StreamRedactor::new();
            let mut out = Vec::new();
            for b in text.as_bytes() {
                s.push(std::slice::from_ref(b), &mut out);
            }
            s.finish(&mut out);
            assert_eq!(String::from_utf8_lossy(&out), want, "{t} byte by byte");
        }
    }

    #[test]
    fn streams_in_8k_reads_keep_everything_else() {
        let token = fake_tokens()[0].clone();
        let mut text = Vec::new();
        for i in 0..5000 {
            text.extend_from_slice(format!("line {i} {token}\n").as_bytes());
        }
        let mut s = StreamRedactor::new();
        let mut out = Vec::new();
        for chunk in text.chunks(8192) {
            s.push(chunk, &mut out);
        }
        s.finish(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains(&token));
        assert_eq!(out.lines().count(), 5000);
        assert!(out.lines().all(|l| l.ends_with(" [redacted]")));
    }

    #[test]
    fn a_large_json_value_written_through_the_writer_is_masked_as_a_whole_one() {
        let tokens = fake_tokens();
        let items: Vec<serde_json::Value> = (0..3000)
            .map(|i| serde_json::json!({"id": format!("t{i}"), "error": format!("said {}", tokens[i % tokens.len()])}))
            .collect();
        let value = serde_json::json!({"tasks": items});
        let whole = redact(&serde_json::to_string(&value).unwrap()).into_owned();
        let mut line =
            std::io::BufWriter::with_capacity(8 * 1024, RedactingWriter::new(Vec::new()));
        serde_json::to_writer(&mut line, &value).unwrap();
        let out = line.into_inner().ok().unwrap().finish().unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, whole);
        assert!(tokens.iter().all(|t| !out.contains(t.as_str())));
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    }

    #[test]
    fn a_key_block_without_its_end_is_held_then_masked() {
        let mut s = StreamRedactor::new();
        let mut out = Vec::new();
        s.push(b"-----BEGIN RSA PRIVATE KEY-----\n", &mut out);
        for _ in 0..200 {
            s.push(b"MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2qb8qLQ4\n", &mut out);
        }
        s.finish(&mut out);
        assert_eq!(out, MASK.as_bytes());
    }
}
