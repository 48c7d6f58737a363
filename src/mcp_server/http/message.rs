//! A small, bounded HTTP/1.1 reader and writer: one request per connection (`Connection:
//! close`), headers up to 64 KiB, bodies up to 16 MiB with a `Content-Length`.

use std::io::{BufRead, Write};

/// Longest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Longest request body (a task list inline can be large, not unbounded).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct Request {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no request could be read: the status to answer with, if any.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed or the connection failed: nothing to answer.
    Gone,
    Status(u16, &'static str),
}

fn line(input: &mut impl BufRead, used: &mut usize) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let limit = (MAX_HEAD - *used) as u64 + 1;
    let n = std::io::Read::take(&mut *input, limit)
        .read_until(b'\n', &mut buf)
        .map_err(|_| ReadError::Gone)?;
    if n == 0 {
        return Err(ReadError::Gone);
    }
    *used += n;
    if *used > MAX_HEAD || !buf.ends_with(b"\n") {
        return Err(ReadError::Status(431, "request head too large"));
    }
    let text = String::from_utf8(buf).map_err(|_| ReadError::Status(400, "head is not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one request.
pub fn read(input: &mut impl BufRead) -> Result<Request, ReadError> {
    let mut used = 0;
    let first = line(input, &mut used)?;
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Status(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Status(505, "HTTP/1.x only"));
    }
    let mut headers = Vec::new();
    loop {
        let l = line(input, &mut used)?;
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(ReadError::Status(400, "malformed header"));
        };
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|t| !t.eq_ignore_ascii_case("identity"))
    {
        return Err(ReadError::Status(411, "send a Content-Length, not chunks"));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Status(400, "bad Content-Length"))?,
    };
    if len > MAX_BODY {
        return Err(ReadError::Status(413, "request body too large"));
    }
    req.body = vec![0; len];
    std::io::Read::read_exact(input, &mut req.body).map_err(|_| ReadError::Gone)?;
    Ok(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Writes a whole response and ends the connection's only exchange.
pub fn respond(
    out: &mut impl Write,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// A plain-text answer (errors of the transport, not of JSON-RPC).
pub fn text(out: &mut impl Write, status: u16, message: &str) -> std::io::Result<()> {
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8".to_string())];
    if status == 401 {
        headers.push(("WWW-Authenticate", "Bearer".to_string()));
    }
    respond(out, status, &headers, format!("{message}\n").as_bytes())
}

/// Starts a server-sent-event stream.
pub fn sse_head(out: &mut impl Write, headers: &[(&str, String)]) -> std::io::Result<()> {
    let mut head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n".to_string();
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.flush()
}

/// One event of a stream: its id (for `Last-Event-ID`) and one JSON-RPC message.
pub fn sse_event(out: &mut impl Write, id: &str, data: &str) -> std::io::Result<()> {
    out.write_all(format!("id: {id}\ndata: {data}\n\n").as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, ReadError> {
        read(&mut std::io::BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn requests_are_read_within_bounds() {
        let r = parse("POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 2\r\n\r\n{}")
            .expect("parses");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/mcp"));
        assert_eq!(r.header("Content-Length"), Some("2"));
        assert_eq!(r.body, b"{}");
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&huge), Err(ReadError::Status(431, _))));
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(parse(&big), Err(ReadError::Status(413, _))));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(chunked), Err(ReadError::Status(411, _))));
        assert!(matches!(
            parse("GET / SPDY/3\r\n\r\n"),
            Err(ReadError::Status(505, _))
        ));
        assert!(matches!(parse(""), Err(ReadError::Gone)));
        // A body shorter than announced: the peer went away.
        assert!(matches!(
            parse("POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n{}"),
            Err(ReadError::Gone)
        ));
    }
}
