//! The Anthropic route (Claude Code: the review, diagnoses, pattern 2's `claude-code` server):
//! `/anthropic/…` requests go to the Messages API fanout's environment names, with the
//! credential fanout holds — `x-api-key` for an API key, `Authorization: Bearer` for an auth
//! token. Claude Code inside holds the placeholder only; the `x-api-key` and `Authorization` it
//! sends are dropped. Streaming answers (server-sent events) pass as they come.

use super::model::ModelRoute;

/// The route's path prefix: Claude Code's `ANTHROPIC_BASE_URL` is `http://127.0.0.1:3128/anthropic`.
pub const ANTHROPIC_PREFIX: &str = "/anthropic";
/// The Messages API when fanout's environment names none.
pub const ANTHROPIC_DEFAULT_URL: &str = "https://api.anthropic.com";
/// What a sandboxed Claude Code holds instead of a key (the proxy adds the real one).
pub const ANTHROPIC_KEY_PLACEHOLDER: &str = "fanout-placeholder";

/// The base URL a sandboxed Claude Code is given.
pub fn anthropic_url() -> String {
    format!(
        "http://127.0.0.1:{}{ANTHROPIC_PREFIX}",
        super::FORWARDER_PORT
    )
}

/// Where the Anthropic route goes, and the credential fanout adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnthropicRoute {
    /// Upstream and path rewriting; its `authorization` carries an auth token.
    upstream: ModelRoute,
    /// Sent as `x-api-key`.
    api_key: Option<String>,
}

impl AnthropicRoute {
    /// The route to `base_url` (without `/v1`, as Claude Code's `ANTHROPIC_BASE_URL`).
    pub fn to(
        base_url: &str,
        api_key: Option<String>,
        auth_token: Option<String>,
    ) -> Result<AnthropicRoute, String> {
        let upstream = ModelRoute::to(
            ANTHROPIC_PREFIX,
            base_url,
            auth_token.map(|t| format!("Bearer {t}")),
        )?;
        Ok(AnthropicRoute { upstream, api_key })
    }

    /// The route `lookup` (a view of an environment) names: `ANTHROPIC_BASE_URL` (else
    /// Anthropic's own), `ANTHROPIC_API_KEY`, `ANTHROPIC_AUTH_TOKEN`. The credentials are
    /// registered for redaction.
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<AnthropicRoute, String> {
        let get = |n: &str| lookup(n).filter(|v| !v.is_empty());
        let (key, token) = (get("ANTHROPIC_API_KEY"), get("ANTHROPIC_AUTH_TOKEN"));
        for secret in key.iter().chain(token.iter()) {
            crate::redact::register(secret);
        }
        let url = get("ANTHROPIC_BASE_URL").unwrap_or_else(|| ANTHROPIC_DEFAULT_URL.into());
        AnthropicRoute::to(&url, key, token)
    }

    /// Where the rewritten request goes.
    pub fn upstream(&self) -> &ModelRoute {
        &self.upstream
    }

    /// The upstream request head for `head`, or `None` when its target is not under the route.
    pub fn rewrite(&self, head: &str) -> Option<String> {
        let kept: Vec<&str> = head
            .split("\r\n")
            .enumerate()
            .filter(|(i, l)| *i == 0 || !is_header(l, "x-api-key"))
            .map(|(_, l)| l)
            .collect();
        let mut up = self.upstream.rewrite(&kept.join("\r\n"))?;
        if let Some(k) = &self.api_key {
            let after_request_line = up.find("\r\n")? + 2;
            up.insert_str(after_request_line, &format!("x-api-key: {k}\r\n"));
        }
        Some(up)
    }
}

fn is_header(line: &str, name: &str) -> bool {
    line.split_once(':')
        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    /// Through `serve_routes`: the upstream gets the real key, and a server-sent event reaches
    /// the client before the upstream sends the next one (nothing is buffered to the end).
    #[tokio::test]
    async fn answers_stream_through_the_proxy() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = upstream.local_addr().expect("addr").port();
        let (got_head, head_rx) = tokio::sync::oneshot::channel::<String>();
        let (release, second) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                head.extend_from_slice(&buf[..n]);
            }
            let _ = got_head.send(String::from_utf8_lossy(&head).into_owned());
            let first = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: message_start\ndata: {}\n\n";
            s.write_all(first.as_bytes()).await.expect("write");
            let _ = second.await;
            s.write_all(b"event: message_stop\ndata: {}\n\n")
                .await
                .expect("write");
        });
        let dir = tempfile::tempdir().expect("tmp");
        let socket = dir.path().join("p.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let route = AnthropicRoute::to(
            &format!("http://127.0.0.1:{port}"),
            Some("sk-ant-real".into()),
            None,
        )
        .expect("route");
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(super::super::serve_routes(
            listener,
            Arc::new(super::super::AllowList::default()),
            None,
            Some(Arc::new(route)),
            tx,
        ));
        let mut c = tokio::net::UnixStream::connect(&socket)
            .await
            .expect("connect");
        c.write_all(b"POST /anthropic/v1/messages HTTP/1.1\r\nx-api-key: fanout-placeholder\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .expect("write");
        let head = head_rx.await.expect("the upstream got a request");
        assert!(head.contains("x-api-key: sk-ant-real\r\n"), "{head}");
        assert!(!head.contains("placeholder"), "{head}");
        let mut r = tokio::io::BufReader::new(c);
        let mut seen = String::new();
        while !seen.contains("message_start") {
            let mut line = String::new();
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(10), r.read_line(&mut line))
                    .await
                    .expect("the first event came before the stream ended")
                    .expect("read");
            assert!(n > 0, "{seen}");
            seen.push_str(&line);
        }
        assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
        let _ = release.send(());
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.expect("read");
        assert!(rest.contains("message_stop"), "{rest}");
    }

    const HEAD: &str = "POST /anthropic/v1/messages?beta=true HTTP/1.1\r\nhost: 127.0.0.1:3128\r\nX-Api-Key: fanout-placeholder\r\nanthropic-version: 2023-06-01\r\ncontent-length: 2\r\nconnection: keep-alive";

    #[test]
    fn the_placeholder_key_becomes_the_real_one() {
        let r = AnthropicRoute::to("http://127.0.0.1:4321", Some("sk-ant-real".into()), None)
            .expect("route");
        let up = r.rewrite(HEAD).expect("under the route");
        assert!(
            up.starts_with("POST /v1/messages?beta=true HTTP/1.1\r\nx-api-key: sk-ant-real\r\n"),
            "{up}"
        );
        assert!(!up.contains("placeholder"), "{up}");
        assert!(up.contains("anthropic-version: 2023-06-01\r\n"), "{up}");
        assert!(up.contains("Host: 127.0.0.1:4321\r\n"), "{up}");
        assert!(!up.to_ascii_lowercase().contains("authorization"), "{up}");
        assert!(r.rewrite("POST /model/responses HTTP/1.1\r\n").is_none());
    }

    #[test]
    fn an_auth_token_goes_as_bearer_and_https_needs_tls() {
        let r = AnthropicRoute::to("http://h:80/base/", None, Some("tok".into())).expect("route");
        let head = "POST http://127.0.0.1:3128/anthropic/v1/messages HTTP/1.1\r\nAuthorization: Bearer fanout-placeholder\r\nx-api-key: fanout-placeholder";
        let up = r.rewrite(head).expect("under the route");
        assert!(
            up.starts_with("POST /base/v1/messages HTTP/1.1\r\n"),
            "{up}"
        );
        assert!(up.contains("Authorization: Bearer tok\r\n"), "{up}");
        assert!(!up.contains("placeholder"), "{up}");
        let env = |n: &str| (n == "ANTHROPIC_API_KEY").then(|| "k".to_string());
        // Anthropic's own API is https: the route exists once the proxy has a TLS client.
        let made = AnthropicRoute::from_env(&env);
        assert!(
            made.is_err() == ModelRoute::to("/x", ANTHROPIC_DEFAULT_URL, None).is_err(),
            "{made:?}"
        );
    }
}
