//! The model route: `/<route>/…` requests (origin form, or absolute form naming the proxy
//! itself) are sent to the real upstream with fanout's credential in `Authorization`; the
//! sandbox holds a placeholder only. One request per connection (`Connection: close` both
//! ways), streamed: nothing is buffered beyond the request head.

/// Where the model route goes, and the credential fanout adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRoute {
    /// The path prefix inside (`/model`).
    pub prefix: String,
    /// Upstream `host:port`.
    pub host: String,
    pub port: u16,
    /// Whether the upstream speaks TLS (`https://`).
    pub tls: bool,
    /// The upstream's base path (`/v1`), without a trailing slash.
    pub base_path: String,
    /// The whole `Authorization` value (`Bearer sk-…`), if fanout holds one.
    pub authorization: Option<String>,
    /// A ChatGPT login: its tokens replace `authorization` (and are refreshed on a `401`).
    pub login: Option<std::sync::Arc<super::chatgpt::Login>>,
}

impl ModelRoute {
    /// The route to `base_url` (`http://host:port/path`); `Err` for what it cannot carry.
    pub fn to(
        prefix: &str,
        base_url: &str,
        authorization: Option<String>,
    ) -> Result<ModelRoute, String> {
        let (tls, rest) = match base_url.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => return Err(format!("{base_url}: not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{base_url}: bad port"))?,
            ),
            None => (authority, if tls { 443 } else { 80 }),
        };
        Ok(ModelRoute {
            prefix: prefix.trim_end_matches('/').to_string(),
            host: host.to_string(),
            port,
            tls,
            base_path: path.trim_end_matches('/').to_string(),
            authorization,
            login: None,
        })
    }

    /// `host:port`, or `host` alone on the scheme's default port (as clients send `Host`).
    pub fn authority(&self) -> String {
        if self.port == if self.tls { 443 } else { 80 } {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The upstream request head for `head` (request line and headers), or `None` when its
    /// target is not under the route.
    pub fn rewrite(&self, head: &str) -> Option<String> {
        let mut lines = head.split("\r\n");
        let first = lines.next()?;
        let mut words = first.split(' ');
        let (method, target, version) = (words.next()?, words.next()?, words.next()?);
        // Absolute form (a client that sends even loopback through its proxy): drop the
        // scheme and authority.
        let path = match target.strip_prefix("http://") {
            Some(rest) => &rest[rest.find('/')?..],
            None => target,
        };
        let tail = path.strip_prefix(&self.prefix)?;
        if !(tail.is_empty() || tail.starts_with('/') || tail.starts_with('?')) {
            return None;
        }
        let mut out = format!("{method} {}{tail} {version}\r\n", self.base_path);
        for h in lines.filter(|l| !l.is_empty()) {
            let name = h
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if !matches!(
                name.as_str(),
                "host"
                    | "authorization"
                    | "connection"
                    | "proxy-connection"
                    | "proxy-authorization"
                    | "keep-alive"
                    | "chatgpt-account-id"
            ) {
                out.push_str(h);
                out.push_str("\r\n");
            }
        }
        out.push_str(&format!("Host: {}\r\n", self.authority()));
        if let Some(login) = &self.login {
            out.push_str(&login.headers());
        } else if let Some(a) = &self.authorization {
            out.push_str(&format!("Authorization: {a}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_path_host_and_credential() {
        let r = ModelRoute::to(
            "/model",
            "http://127.0.0.1:4321/v1/",
            Some("Bearer sk-real".into()),
        )
        .unwrap();
        let head = "POST http://127.0.0.1:3128/model/responses HTTP/1.1\r\nHost: 127.0.0.1:3128\r\nAuthorization: Bearer fanout-placeholder\r\nContent-Length: 2\r\nConnection: keep-alive";
        let up = r.rewrite(head).unwrap();
        assert!(up.starts_with("POST /v1/responses HTTP/1.1\r\n"), "{up}");
        assert!(
            up.contains("Host: 127.0.0.1:4321\r\n")
                && up.contains("Authorization: Bearer sk-real\r\n"),
            "{up}"
        );
        assert!(
            !up.contains("placeholder") && up.contains("Content-Length: 2\r\n"),
            "{up}"
        );
        assert!(up.ends_with("Connection: close\r\n\r\n"), "{up}");
        assert!(r.rewrite("GET /other/x HTTP/1.1\r\n").is_none());
        assert!(r.rewrite("GET /modelx HTTP/1.1\r\n").is_none());
        let tls = ModelRoute::to("/model", "https://api.openai.com/v1", None).unwrap();
        assert!(tls.tls && tls.port == 443, "{tls:?}");
        let up = tls.rewrite("GET /model/models HTTP/1.1\r\n").unwrap();
        assert!(up.contains("\r\nHost: api.openai.com\r\n"), "{up}");
        assert!(ModelRoute::to("/model", "ftp://x/v1", None).is_err());
    }
}
