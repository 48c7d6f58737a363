/*!
`fanout mcp --http ADDR`: the streamable HTTP transport of MCP (endpoint `/mcp`), so a client on
another machine drives fanout on a build machine.

- POST a JSON-RPC message (or a 2025-03-26 batch): answered with `application/json`, or — when
  it holds a `tools/call` and the client accepts it — with a `text/event-stream` carrying the
  call's progress notifications, then its answer. Notifications alone get 202.
- `initialize` opens a session: its answer carries `Mcp-Session-Id`, which every later request
  must send (missing: 400, unknown or ended: 404). DELETE ends the session.
- GET opens the session's stream of server messages (`notifications/resources/list_changed`).
  Every event has an id `<stream>-<n>`; a GET with `Last-Event-ID` replays what came after it
  (of the GET stream, or of a POST's stream whose connection broke) and goes on.
- Guards, in this order: a peer that is not loopback is refused (403) unless `--allow-remote`;
  an `Origin` that is not a loopback origin gets 403 (DNS rebinding); a request without the
  bearer token, or with another one, gets 401.

Plain threads and a small bounded HTTP/1.1 reader ([`message`]), one request per connection.
*/

mod message;
mod sessions;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::dispatch::{self, Ctx};
use super::options::ServerOptions;
use super::protocol::{ServerError, PROTOCOL_VERSIONS};
use super::runs::Registry;
use super::wire::Out;
use message::{ReadError, Request};
use sessions::{HttpSession, Sessions, StreamLog};

/// The environment variable a token may come from (the client side reads the same name).
pub const TOKEN_ENV: &str = "FANOUT_MCP_TOKEN";
/// Connections served at once; more get 503.
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A quiet stream gets a comment this often, so a client that left is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How `fanout mcp --http` was asked to listen.
pub struct HttpOptions {
    pub addr: String,
    pub token: String,
    pub allow_remote: bool,
}

struct Server {
    token: String,
    allow_remote: bool,
    sessions: Sessions,
    registry: Registry,
    connections: AtomicUsize,
}

/// Where `addr` listens, refusing a non-loopback one unless allowed.
pub fn resolve(addr: &str, allow_remote: bool) -> Result<SocketAddr, ServerError> {
    let bind_err = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    let found = addr
        .to_socket_addrs()
        .map_err(bind_err)?
        .next()
        .ok_or_else(|| ServerError::Refused(format!("{addr} names no address")))?;
    if !allow_remote && !found.ip().is_loopback() {
        return Err(ServerError::Refused(format!(
            "{addr} is not a loopback address: fanout mcp --http listens on loopback (e.g. \
             127.0.0.1:8931) unless --allow-remote is given (then the token is all that guards it)"
        )));
    }
    Ok(found)
}

/// Serves MCP over HTTP until a stop signal; then stops every run cleanly.
pub fn serve(http: HttpOptions, options: ServerOptions) -> Result<(), ServerError> {
    if http.token.trim().is_empty() {
        return Err(ServerError::Refused(format!(
            "fanout mcp --http needs a bearer token: --token-file FILE or {TOKEN_ENV}"
        )));
    }
    let addr = resolve(&http.addr, http.allow_remote)?;
    let listener = TcpListener::bind(addr).map_err(|source| ServerError::Bind {
        addr: http.addr.clone(),
        source,
    })?;
    let local = listener.local_addr().map_err(ServerError::Read)?;
    let sessions = Sessions::default();
    let broadcast = {
        let sessions = sessions.clone();
        Out::lines(move |line| sessions.broadcast(&line))
    };
    let server = Arc::new(Server {
        token: http.token.trim().to_string(),
        allow_remote: http.allow_remote,
        sessions,
        registry: Registry::new(options, broadcast),
        connections: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("mcp-http".into())
        .spawn({
            let server = server.clone();
            move || accept(listener, server)
        })
        .map_err(ServerError::Thread)?;
    eprintln!("fanout mcp: listening on http://{local}/mcp");
    super::signals::wait();
    server.registry.shutdown();
    Ok(())
}

fn accept(listener: TcpListener, server: Arc<Server>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        if server.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            server.connections.fetch_sub(1, Ordering::SeqCst);
            let _ = message::text(&mut conn, 503, "too many connections");
            continue;
        }
        let server = server.clone();
        let spawned = std::thread::Builder::new()
            .name("mcp-http-conn".into())
            .spawn(move || {
                connection(&server, conn);
                server.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            eprintln!("fanout mcp: cannot start a thread for a connection");
        }
    }
}

fn connection(server: &Server, mut conn: TcpStream) {
    let Ok(peer) = conn.peer_addr() else { return };
    let _ = conn.set_read_timeout(Some(REQUEST_TIMEOUT));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let req = match message::read(&mut BufReader::new(read_half)) {
        Ok(r) => r,
        Err(ReadError::Gone) => return,
        Err(ReadError::Status(code, why)) => {
            let _ = message::text(&mut conn, code, why);
            return;
        }
    };
    let _ = conn.set_read_timeout(None);
    if let Err((code, why)) = admit(server, &req, peer) {
        let _ = message::text(&mut conn, code, &why);
        return;
    }
    let _ = match req.method.as_str() {
        "POST" => post(server, &req, &mut conn),
        "GET" => get(server, &req, &mut conn),
        "DELETE" => delete(server, &req, &mut conn),
        _ => message::respond(
            &mut conn,
            405,
            &[("Allow", "GET, POST, DELETE".to_string())],
            b"",
        ),
    };
}

/// The guards every request passes: peer, Origin, endpoint, token, protocol version.
fn admit(server: &Server, req: &Request, peer: SocketAddr) -> Result<(), (u16, String)> {
    if !server.allow_remote && !peer.ip().is_loopback() {
        return Err((403, "only loopback clients are served".into()));
    }
    if let Some(origin) = req.header("origin") {
        if !loopback_origin(origin) {
            return Err((403, format!("Origin {origin} is not allowed")));
        }
    }
    if req.path != "/mcp" {
        return Err((404, "the MCP endpoint is /mcp".into()));
    }
    let given = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim);
    if !given.is_some_and(|t| same(t.as_bytes(), server.token.as_bytes())) {
        return Err((401, "a valid bearer token is required".into()));
    }
    if let Some(v) = req.header("mcp-protocol-version") {
        if !PROTOCOL_VERSIONS.contains(&v) {
            return Err((400, format!("unsupported MCP-Protocol-Version {v}")));
        }
    }
    Ok(())
}

/// `http(s)://localhost|127.x.y.z|[::1][:port]`: pages served from this machine.
fn loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        rest.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compares without telling how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The session a request names: (400, 404) when it names none or an unknown one.
fn session_of(
    server: &Server,
    req: &Request,
) -> Result<(String, Arc<HttpSession>), (u16, &'static str)> {
    let id = req
        .header("mcp-session-id")
        .ok_or((400, "Mcp-Session-Id is required (initialize first)"))?;
    let s = server
        .sessions
        .get(id)
        .ok_or((404, "no such session (it ended): initialize again"))?;
    Ok((id.to_string(), s))
}

fn is_call(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().any(is_call),
        v => v.get("method").and_then(Value::as_str) == Some("tools/call"),
    }
}

fn post(server: &Server, req: &Request, conn: &mut TcpStream) -> std::io::Result<()> {
    if !req
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
    {
        return message::text(conn, 415, "Content-Type must be application/json");
    }
    let text = String::from_utf8_lossy(&req.body);
    let parsed: Option<Value> = serde_json::from_str(&text).ok();
    let is_init = parsed
        .as_ref()
        .is_some_and(|v| v.get("method").and_then(Value::as_str) == Some("initialize"));
    let (sid, session) = if is_init {
        server.sessions.create()
    } else {
        match session_of(server, req) {
            Ok(s) => s,
            Err((code, why)) => return message::text(conn, code, why),
        }
    };
    let accept = req.header("accept").unwrap_or("").to_ascii_lowercase();
    let stream = accept.contains("text/event-stream") && parsed.as_ref().is_some_and(is_call);
    let (answers, answered) = channel::<Value>();
    let (notes, noted) = channel::<String>();
    let ctx = Ctx {
        session: session.mcp.clone(),
        registry: server.registry.clone(),
        out: Out::lines(move |line| {
            let _ = notes.send(line);
        }),
    };
    dispatch::handle_text(&text, &ctx, &answers);
    drop((ctx, answers));
    let sid_header = [("Mcp-Session-Id", sid)];
    if !stream {
        // Progress needs a stream; a plain JSON answer comes alone.
        drop(noted);
        return match answered.recv() {
            Ok(v) => {
                let body = crate::redact::redact(&v.to_string()).into_owned();
                let mut headers = sid_header.to_vec();
                headers.push(("Content-Type", "application/json".into()));
                message::respond(conn, 200, &headers, body.as_bytes())
            }
            // Notifications only, or a call the client cancelled.
            Err(_) => message::respond(conn, 202, &sid_header, b""),
        };
    }
    let (n, log) = session.new_stream();
    let mut alive = message::sse_head(conn, &sid_header).is_ok();
    let mut sent = 0;
    loop {
        while let Ok(note) = noted.try_recv() {
            log.push(note);
        }
        let done = match answered.recv_timeout(Duration::from_millis(100)) {
            Ok(v) => {
                while let Ok(note) = noted.try_recv() {
                    log.push(note);
                }
                log.push(crate::redact::redact(&v.to_string()).into_owned());
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        // A broken connection does not stop the call: its events stay for a resumption.
        if alive {
            alive = write_new(conn, n, &log, &mut sent).is_ok();
        }
        if done {
            break;
        }
    }
    log.close();
    Ok(())
}

/// Writes the events of stream `n` after `sent`; `sent` follows.
fn write_new(conn: &mut TcpStream, n: u64, log: &StreamLog, sent: &mut u64) -> std::io::Result<()> {
    let (events, _) = log.after(*sent, Duration::ZERO);
    for (seq, data) in events {
        message::sse_event(conn, &format!("{n}-{seq}"), &data)?;
        *sent = seq;
    }
    Ok(())
}

fn get(server: &Server, req: &Request, conn: &mut TcpStream) -> std::io::Result<()> {
    let (sid, session) = match session_of(server, req) {
        Ok(s) => s,
        Err((code, why)) => return message::text(conn, code, why),
    };
    if !req
        .header("accept")
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream"))
    {
        return message::text(conn, 406, "GET /mcp is a text/event-stream");
    }
    let (n, after) = match req.header("last-event-id") {
        None => (0, session.standalone.last()),
        Some(id) => match id
            .split_once('-')
            .and_then(|(s, q)| Some((s.parse::<u64>().ok()?, q.parse::<u64>().ok()?)))
        {
            Some(p) => p,
            None => return message::text(conn, 400, "malformed Last-Event-ID"),
        },
    };
    let Some(log) = session.stream(n) else {
        return message::text(conn, 404, "that stream is no longer kept");
    };
    message::sse_head(conn, &[("Mcp-Session-Id", sid)])?;
    let mut sent = after;
    loop {
        let (events, closed) = log.after(sent, KEEP_ALIVE);
        if events.is_empty() {
            if closed {
                return Ok(());
            }
            conn.write_all(b": keep-alive\n\n")?;
            conn.flush()?;
            continue;
        }
        for (seq, data) in events {
            message::sse_event(conn, &format!("{n}-{seq}"), &data)?;
            sent = seq;
        }
    }
}

fn delete(server: &Server, req: &Request, conn: &mut TcpStream) -> std::io::Result<()> {
    match session_of(server, req) {
        Ok((sid, _)) => {
            server.sessions.remove(&sid);
            message::respond(conn, 204, &[], b"")
        }
        Err((code, why)) => message::text(conn, code, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_origins_and_the_exact_token_pass() {
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8080",
            "http://LOCALHOST",
        ] {
            assert!(loopback_origin(ok), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://localhost.evil.example",
            "null",
            "file://",
            "http://10.0.0.1:80",
        ] {
            assert!(!loopback_origin(bad), "{bad}");
        }
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT") && !same(b"secret", b"secret2"));
        assert!(resolve("127.0.0.1:0", false).is_ok());
        assert!(matches!(
            resolve("0.0.0.0:0", false),
            Err(ServerError::Refused(_))
        ));
        assert!(resolve("0.0.0.0:0", true).is_ok());
    }
}
