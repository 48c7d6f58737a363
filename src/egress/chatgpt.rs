//! A ChatGPT login (`auth.json` with `tokens`), held by the egress proxy. The sandbox gets an
//! `auth.json` of the same shape whose tokens are placeholders ([`placeholder_auth`]); the
//! proxy sends the real access token and account id upstream, and on a `401` refreshes them
//! once with the refresh token, as Codex itself would, writing the new tokens back to the
//! user's `auth.json` (atomically, owner-only) so the rest of the run and later runs use them.
//! No token is ever logged: each is registered with [`crate::redact`] as it is read.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Overrides the OAuth token endpoint (tests point it at a scripted one).
pub const TOKEN_URL_ENV: &str = "FANOUT_CODEX_TOKEN_URL";
/// Where Codex refreshes a ChatGPT login.
const TOKEN_URL: &str = "https://auth.openai.com/oauth/token";
/// Codex's OAuth client id (public: it is in every Codex binary).
const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// What the sandbox holds instead of a token (or a JWT's signature).
pub const PLACEHOLDER: &str = "fanout-placeholder";

/// Whether `auth` (a parsed `auth.json`) is a ChatGPT login: it has an access token.
pub fn is_chatgpt_login(auth: &Value) -> bool {
    auth.pointer("/tokens/access_token")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
}

/// The tokens the proxy holds.
#[derive(Clone)]
struct Tokens {
    access: String,
    refresh: String,
    id: Option<String>,
    account: Option<String>,
}

/// A ChatGPT login read from the user's `auth.json`.
pub struct Login {
    path: PathBuf,
    tokens: Mutex<Tokens>,
    /// One refresh at a time: parallel `401`s refresh once.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        write!(f, "Login({})", self.path.display())
    }
}

/// Logins compare by the file they came from (for routes' equality).
impl PartialEq for Login {
    fn eq(&self, other: &Login) -> bool {
        self.path == other.path
    }
}
impl Eq for Login {}

impl Login {
    /// Reads `path`; `None` when it is not a ChatGPT login.
    pub fn load(path: &Path) -> Option<Login> {
        let auth: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        if !is_chatgpt_login(&auth) {
            return None;
        }
        let get = |k: &str| {
            auth.pointer(&format!("/tokens/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let tokens = Tokens {
            access: get("access_token").unwrap_or_default(),
            refresh: get("refresh_token").unwrap_or_default(),
            id: get("id_token"),
            account: get("account_id"),
        };
        register(&tokens);
        Some(Login {
            path: path.to_path_buf(),
            tokens: Mutex::new(tokens),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The login of `path`, shared by every proxy of the process that holds it now (so
    /// parallel tasks refresh once); read again once none does.
    pub fn shared(path: &Path) -> Option<std::sync::Arc<Login>> {
        use std::sync::{Arc, Weak};
        static ALL: Mutex<Vec<(PathBuf, Weak<Login>)>> = Mutex::new(Vec::new());
        let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(_, w)| w.strong_count() > 0);
        if let Some(l) = all
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, w)| w.upgrade())
        {
            return Some(l);
        }
        let login = Arc::new(Login::load(path)?);
        all.push((path.to_path_buf(), Arc::downgrade(&login)));
        Some(login)
    }

    fn tokens(&self) -> Tokens {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The access token in use now.
    pub fn access_token(&self) -> String {
        self.tokens().access
    }

    /// The headers the upstream gets: `Authorization` and, when known, `ChatGPT-Account-Id`.
    pub fn headers(&self) -> String {
        let t = self.tokens();
        let mut out = format!("Authorization: Bearer {}\r\n", t.access);
        if let Some(a) = t.account.filter(|a| !a.is_empty()) {
            out.push_str(&format!("ChatGPT-Account-Id: {a}\r\n"));
        }
        out
    }

    /// Refreshes the tokens after `used` was refused; a no-op when another request already
    /// replaced `used`. The new tokens are written back to the user's `auth.json`.
    pub async fn refresh(&self, used: &str) -> Result<(), String> {
        let _one = self.refreshing.lock().await;
        let old = self.tokens();
        if old.access != used {
            return Ok(());
        }
        if old.refresh.is_empty() {
            return Err("the login has no refresh token".into());
        }
        let url = std::env::var(TOKEN_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| TOKEN_URL.into());
        let body = json!({"client_id": CLIENT_ID, "grant_type": "refresh_token",
                          "refresh_token": old.refresh, "scope": "openid profile email"});
        let (status, answer) = super::http1::post_json(&url, &body.to_string()).await?;
        if status != 200 {
            return Err(format!("the token endpoint answered {status}"));
        }
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|e| format!("the token endpoint's answer: {e}"))?;
        let take = |k: &str| answer.get(k).and_then(Value::as_str).map(str::to_string);
        let new = Tokens {
            access: take("access_token").ok_or("no access_token in the answer")?,
            refresh: take("refresh_token").unwrap_or(old.refresh),
            id: take("id_token").or(old.id),
            account: old.account,
        };
        register(&new);
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner()) = new.clone();
        write_back(&self.path, &new)
    }
}

fn register(t: &Tokens) {
    for s in [Some(&t.access), Some(&t.refresh), t.id.as_ref()]
        .into_iter()
        .flatten()
    {
        crate::redact::register(s);
    }
}

/// Puts the new tokens into the user's `auth.json` (what else it holds is kept), through a
/// temporary file renamed over it: a crash leaves the old file or the new one.
fn write_back(path: &Path, t: &Tokens) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut auth: Value = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    if !auth.get("tokens").is_some_and(Value::is_object) {
        auth["tokens"] = json!({});
    }
    auth["tokens"]["access_token"] = json!(t.access);
    auth["tokens"]["refresh_token"] = json!(t.refresh);
    if let Some(id) = &t.id {
        auth["tokens"]["id_token"] = json!(id);
    }
    auth["last_refresh"] = json!(now_rfc3339());
    let text = serde_json::to_vec_pretty(&auth).map_err(|e| e.to_string())?;
    let tmp = path.with_extension(format!("json.fanout-{}", std::process::id()));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    let written = f.write_all(&text).and_then(|_| f.sync_all());
    drop(f);
    match written.and_then(|_| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(fail(e))
        }
    }
}

/// The `auth.json` the sandbox gets for the real `auth`: the same shape, every token replaced
/// by a placeholder (a JWT keeps its claims, with its expiry moved a day ahead so Codex does
/// not try to refresh it itself, and loses its signature), `last_refresh` now.
pub fn placeholder_auth(auth: &Value) -> Value {
    let mut out = auth.clone();
    if let Some(tokens) = out.get_mut("tokens").and_then(Value::as_object_mut) {
        for (k, v) in tokens.iter_mut() {
            if k == "account_id" {
                continue;
            }
            if let Some(s) = v.as_str() {
                *v = json!(placeholder_token(s));
            }
        }
    }
    if out.get("OPENAI_API_KEY").is_some_and(Value::is_string) {
        out["OPENAI_API_KEY"] = json!(PLACEHOLDER);
    }
    if out.get("last_refresh").is_some() {
        out["last_refresh"] = json!(now_rfc3339());
    }
    out
}

/// A JWT's header and claims (expiry a day from now) with a placeholder signature; any other
/// token becomes the placeholder.
fn placeholder_token(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let claims = (parts.len() == 3)
        .then(|| b64url_decode(parts[1]))
        .flatten()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(Value::is_object);
    match claims {
        Some(mut c) => {
            c["exp"] = json!(unix_now() + 86_400);
            let body = b64url_encode(c.to_string().as_bytes());
            format!(
                "{}.{body}.{}",
                parts[0],
                b64url_encode(PLACEHOLDER.as_bytes())
            )
        }
        None => PLACEHOLDER.into(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-12-07T06:00:00Z` (UTC), from the civil-from-days algorithm.
fn now_rfc3339() -> String {
    let secs = unix_now() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'+' => 62,
            b'/' => 63,
            _ => B64.iter().position(|b| *b == c)? as u32,
        };
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            b64url_encode(br#"{"alg":"RS256"}"#),
            b64url_encode(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn the_sandbox_copy_keeps_the_shape_and_no_token() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(
                b64url_decode(&b64url_encode(s.as_bytes())),
                Some(s.as_bytes().to_vec())
            );
        }
        assert_eq!(b64url_encode(b"foobar"), "Zm9vYmFy");
        let claims = json!({"email": "u@example.com", "exp": 1,
                            "https://api.openai.com/auth": {"chatgpt_account_id": "acc-1"}});
        let real = json!({"OPENAI_API_KEY": null, "last_refresh": "2020-01-01T00:00:00Z",
            "tokens": {"id_token": jwt(claims.clone(), "real-id-signature"),
                       "access_token": jwt(claims, "real-access-signature"),
                       "refresh_token": "real-refresh-token", "account_id": "acc-1"}});
        assert!(is_chatgpt_login(&real));
        let fake = placeholder_auth(&real);
        let text = fake.to_string();
        for secret in [
            "real-id-signature",
            "real-access-signature",
            "real-refresh-token",
        ] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(fake["tokens"]["account_id"], "acc-1");
        assert_eq!(fake["tokens"]["refresh_token"], PLACEHOLDER);
        assert!(fake["OPENAI_API_KEY"].is_null());
        let access = fake["tokens"]["access_token"].as_str().unwrap();
        let claims: Value =
            serde_json::from_slice(&b64url_decode(access.split('.').nth(1).unwrap()).unwrap())
                .unwrap();
        assert_eq!(claims["email"], "u@example.com");
        assert!(claims["exp"].as_u64().unwrap() > unix_now());
        assert_ne!(fake["last_refresh"], real["last_refresh"]);
        assert!(now_rfc3339().ends_with('Z') && now_rfc3339().len() == 20);
    }

    #[test]
    fn a_refresh_writes_the_new_tokens_back_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(
            &path,
            json!({"tokens": {"access_token": "a1", "refresh_token": "r1", "account_id": "acc"},
                   "other": 7})
            .to_string(),
        )
        .unwrap();
        let login = Login::load(&path).unwrap();
        assert_eq!(
            login.headers(),
            "Authorization: Bearer a1\r\nChatGPT-Account-Id: acc\r\n"
        );
        assert!(!format!("{login:?}").contains("a1"));
        let new = Tokens {
            access: "a2".into(),
            refresh: "r2".into(),
            id: None,
            account: Some("acc".into()),
        };
        write_back(&path, &new).unwrap();
        let back: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back["tokens"]["access_token"], "a2");
        assert_eq!(back["tokens"]["refresh_token"], "r2");
        assert_eq!(back["other"], 7);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
