//! The one HTTP request fanout makes itself (a token refresh): `POST` of a JSON body over
//! HTTP/1.1, `Connection: close`, the answer read whole (bounded), chunked or not.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// `POST url` with `body` as JSON; returns the status and the answer's body.
pub async fn post_json(url: &str, body: &str) -> Result<(u16, Vec<u8>), String> {
    let (tls, rest) = match url.split_once("://") {
        Some(("http", r)) => (false, r),
        Some(("https", r)) => (true, r),
        _ => return Err(format!("{url}: not an http(s) URL")),
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("{url}: bad port"))?),
        None => (authority, if tls { 443 } else { 80 }),
    };
    let mut conn = super::upstream::connect(host, port, tls).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let io = |e: std::io::Error| format!("{host}:{port}: {e}");
    conn.write_all(head.as_bytes()).await.map_err(io)?;
    conn.write_all(body.as_bytes()).await.map_err(io)?;
    conn.flush().await.map_err(io)?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A TLS peer that closes without close_notify still sent a whole answer.
        let n = match conn.read(&mut chunk).await {
            Ok(n) => n,
            Err(_) if !answer.is_empty() => 0,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_ANSWER {
            return Err(format!("{host}:{port}: answer too long"));
        }
    }
    parse_answer(&answer)
}

/// Status and body of a whole HTTP/1.1 answer.
fn parse_answer(answer: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer ended before its head did")?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status in the answer")?;
    let body = &answer[end + 4..];
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let n =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        body = &body[eol + 2..];
        if n == 0 || n > body.len() {
            break;
        }
        out.extend_from_slice(&body[..n]);
        body = body.get(n + 2..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(plain), Ok((200, b"{}".to_vec())));
        let chunked =
            b"HTTP/1.1 401 No\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked), Ok((401, b"abcde".to_vec())));
        assert!(parse_answer(b"HTTP/1.1 200").is_err());
    }
}
