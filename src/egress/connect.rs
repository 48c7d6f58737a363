//! `CONNECT` handling: one request head per connection, then bytes both ways.

use super::allow::{AllowList, HostPort};
use super::anthropic::AnthropicRoute;
use super::model::ModelRoute;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc::UnboundedSender;

/// Longest request head accepted (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// A destination the proxy refused: what was asked for and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `host:port` as asked (or the request line when it named none).
    pub destination: String,
    pub reason: String,
}

/// Serves `listener` until it fails: each connection is handled on its own task; refusals are
/// sent on `refused` (a closed receiver loses them, the refusal stands).
pub async fn serve(
    listener: UnixListener,
    allow: Arc<AllowList>,
    refused: UnboundedSender<Refusal>,
) {
    serve_with(listener, allow, None, refused).await
}

/// [`serve`], plus the model route when `model` is set.
pub async fn serve_with(
    listener: UnixListener,
    allow: Arc<AllowList>,
    model: Option<Arc<ModelRoute>>,
    refused: UnboundedSender<Refusal>,
) {
    serve_routes(listener, allow, model, None, refused).await
}

/// [`serve_with`], plus Claude Code's Anthropic route when `anthropic` is set.
pub async fn serve_routes(
    listener: UnixListener,
    allow: Arc<AllowList>,
    model: Option<Arc<ModelRoute>>,
    anthropic: Option<Arc<AnthropicRoute>>,
    refused: UnboundedSender<Refusal>,
) {
    while let Ok((conn, _)) = listener.accept().await {
        let (allow, refused, model) = (allow.clone(), refused.clone(), model.clone());
        let anthropic = anthropic.clone();
        tokio::spawn(async move {
            if let Some(r) = handle(conn, &allow, model.as_deref(), anthropic.as_deref()).await {
                let _ = refused.send(r);
            }
        });
    }
}

/// One client connection; returns the refusal when it was refused.
async fn handle(
    mut conn: UnixStream,
    allow: &AllowList,
    model: Option<&ModelRoute>,
    anthropic: Option<&AnthropicRoute>,
) -> Option<Refusal> {
    let (head, rest) = match read_head(&mut conn).await {
        Ok(h) => h,
        Err(why) => {
            let _ = respond(&mut conn, "400 Bad Request", &why).await;
            return None;
        }
    };
    if let Some((route, up)) = model.and_then(|m| m.rewrite(&head).map(|h| (m, h))) {
        return forward_model(conn, route, &head, &up, rest).await;
    }
    // Claude Code's Messages API (issue 19).
    if let Some((route, up)) = anthropic.and_then(|a| a.rewrite(&head).map(|h| (a.upstream(), h))) {
        return forward_model(conn, route, &head, &up, rest).await;
    }
    let first = head.lines().next().unwrap_or_default().to_string();
    let mut words = first.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let dest = match (
        method.eq_ignore_ascii_case("CONNECT"),
        HostPort::parse(target),
    ) {
        (true, Some(d)) => d,
        (true, None) => return refuse(&mut conn, target, "not a host:port").await,
        (false, _) => {
            return refuse(&mut conn, &first, "only CONNECT is proxied (use https)").await
        }
    };
    if !allow.allows(&dest) {
        let why = "not allowed in this phase (the task file's `network`)";
        return refuse(&mut conn, &dest.to_string(), why).await;
    }
    let mut upstream = match TcpStream::connect((dest.host.as_str(), dest.port)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = respond(&mut conn, "502 Bad Gateway", &format!("{dest}: {e}")).await;
            return None;
        }
    };
    if conn
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
        || upstream.write_all(&rest).await.is_err()
    {
        return None;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
    None
}

/// Bodies up to this size are held, so a request refused for an expired login can be sent
/// again after the refresh; larger ones stream.
const MAX_RETRY_BODY: usize = 64 * 1024 * 1024;

/// Sends the rewritten head and what followed it upstream, then copies both ways. Under a
/// ChatGPT login a request of known length is held whole and sent again once, with refreshed
/// tokens, when the upstream answers `401`.
async fn forward_model(
    mut conn: UnixStream,
    route: &ModelRoute,
    client_head: &str,
    head: &str,
    rest: Vec<u8>,
) -> Option<Refusal> {
    if let Some(login) = &route.login {
        if let Some(len) = content_length(client_head).filter(|n| *n <= MAX_RETRY_BODY) {
            let body = read_body(&mut conn, rest, len).await?;
            let used = login.access_token();
            let mut answer = exchange(&mut conn, route, head, &body).await?;
            if answer.status == 401 && login.refresh(&used).await.is_ok() {
                let again = route.rewrite(client_head)?;
                answer = exchange(&mut conn, route, &again, &body).await?;
            }
            let (mut up, _keep) = tokio::io::split(answer.upstream);
            relay(&mut conn, &mut up, &answer.head, &answer.body).await;
            return None;
        }
    }
    let mut upstream = match super::upstream::connect(&route.host, route.port, route.tls).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("model upstream {e}");
            let _ = respond(&mut conn, "502 Bad Gateway", &why).await;
            return None;
        }
    };
    if upstream.write_all(head.as_bytes()).await.is_err()
        || upstream.write_all(&rest).await.is_err()
        || upstream.flush().await.is_err()
    {
        return None;
    }
    // The rest of the request (its body) streams up while the answer comes down.
    let (mut client_rd, mut conn) = conn.into_split();
    let (mut upstream, mut up_wr) = tokio::io::split(upstream);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_rd, &mut up_wr).await;
        let _ = up_wr.shutdown().await;
    });
    let Ok((answer, body)) = read_head(&mut upstream).await else {
        return None;
    };
    relay(&mut conn, &mut upstream, &answer, &body).await;
    None
}

/// An upstream's answer: its head read, the rest still to stream.
struct Answer {
    upstream: Box<dyn super::upstream::Io>,
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// One whole request upstream and the head of its answer; a failure to connect answers the
/// client `502` itself.
async fn exchange(
    conn: &mut UnixStream,
    route: &ModelRoute,
    head: &str,
    body: &[u8],
) -> Option<Answer> {
    let mut up = match super::upstream::connect(&route.host, route.port, route.tls).await {
        Ok(s) => s,
        Err(e) => {
            let _ = respond(conn, "502 Bad Gateway", &format!("model upstream {e}")).await;
            return None;
        }
    };
    up.write_all(head.as_bytes()).await.ok()?;
    up.write_all(body).await.ok()?;
    up.flush().await.ok()?;
    let (head, body) = read_head(&mut up).await.ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        upstream: up,
        status,
        head,
        body,
    })
}

/// The answer's head (saying `Connection: close`), what came with it, then the rest as it comes.
async fn relay<W, R>(conn: &mut W, upstream: &mut R, answer: &str, body: &[u8])
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    // `Connection: close`: the client's next request comes on a new connection, whose head is
    // rewritten again (never raw bytes with the placeholder).
    let mut out = String::new();
    for line in answer.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    if conn.write_all(out.as_bytes()).await.is_err() || conn.write_all(body).await.is_err() {
        return;
    }
    let _ = tokio::io::copy(upstream, conn).await;
    let _ = conn.shutdown().await;
}

/// The request's `Content-Length`; `None` without one (chunked, or no body at all).
fn content_length(head: &str) -> Option<usize> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

/// Reads the request body of `len` bytes, `rest` of it already read.
async fn read_body(conn: &mut UnixStream, mut body: Vec<u8>, len: usize) -> Option<Vec<u8>> {
    let mut chunk = vec![0u8; 64 * 1024];
    while body.len() < len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(body)
}

async fn refuse(conn: &mut UnixStream, destination: &str, reason: &str) -> Option<Refusal> {
    let _ = respond(
        conn,
        "403 Forbidden",
        &format!("fanout: {destination}: {reason}"),
    )
    .await;
    Some(Refusal {
        destination: destination.to_string(),
        reason: reason.to_string(),
    })
}

/// Reads up to the blank line ending the head; returns it and what came after it.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    conn: &mut R,
) -> Result<(String, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too long".into());
        }
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the request: {e}"))?;
        if n == 0 {
            return Err("the request ended before its head did".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(conn: &mut UnixStream, status: &str, body: &str) -> std::io::Result<()> {
    let body = format!("{body}\n");
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(text.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    async fn ask(socket: &std::path::Path, request: &str) -> (String, UnixStream) {
        let mut c = UnixStream::connect(socket)
            .await
            .expect("connect the proxy");
        c.write_all(request.as_bytes()).await.expect("write");
        let mut line = String::new();
        let mut r = tokio::io::BufReader::new(&mut c);
        r.read_line(&mut line).await.expect("status line");
        (line, c)
    }

    #[tokio::test]
    async fn connects_allowed_names_and_refuses_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("egress.sock");
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = echo.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let allow = AllowList(vec![HostPort::parse(&format!("localhost:{port}")).unwrap()]);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let listener = UnixListener::bind(&socket).expect("bind the socket");
        tokio::spawn(serve(listener, Arc::new(allow), tx));

        let (line, mut c) = ask(
            &socket,
            &format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\nhi"),
        )
        .await;
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let mut buf = Vec::new();
        while !buf.ends_with(b"hi") {
            let mut b = [0u8; 64];
            let n = c.read(&mut b).await.expect("read");
            assert!(n > 0, "{buf:?}");
            buf.extend_from_slice(&b[..n]);
        }
        for (req, dest) in [
            (
                format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
                format!("127.0.0.1:{port}"),
            ),
            (
                "CONNECT localhost:1 HTTP/1.1\r\n\r\n".into(),
                "localhost:1".into(),
            ),
            (
                "GET http://localhost/ HTTP/1.1\r\n\r\n".into(),
                "GET http://localhost/ HTTP/1.1".into(),
            ),
        ] {
            let (line, _) = ask(&socket, &req).await;
            assert!(line.starts_with("HTTP/1.1 403"), "{req}: {line}");
            let r = rx.recv().await.expect("a refusal");
            assert_eq!(r.destination, dest);
        }
    }
}
