/*!
`fanout mcp`: fanout itself as an MCP server over stdio, so an orchestrating agent (Claude
Code, Codex) can start runs, wait for them, look at their diffs, cancel and merge them.

Newline-delimited JSON-RPC 2.0. Protocol versions `2025-06-18` (preferred), `2025-03-26` and
`2024-11-05`; a client asking for another one gets `2025-06-18`. Batches are taken after
negotiating `2025-03-26`, the one revision that has them. JSON-RPC errors are kept for
protocol problems (malformed JSON -32700, not a request -32600, unknown method -32601, unknown
tool or arguments that do not fit the tool's schema -32602); everything else a tool can fail at
is a result with `isError: true`, so the model sees it.

Every `tools/call` runs on its own thread (`fanout_wait` blocks for minutes); runs run on
threads of their own ([`runs`]). When stdin closes — the client is gone — or a signal arrives,
every run is asked to stop at its next safe point, the server waits for them (they end
`interrupted`, resumable with `fanout resume`) and returns.
*/

mod dispatch;
mod options;
mod runs;
mod session;
mod tool_list;
mod tools;
mod wire;

use std::io::{BufRead, Write};
use std::sync::mpsc;

use serde_json::Value;

pub use runs::Registry;

/// Protocol versions this server speaks, preferred first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

/// Longest request line accepted (a task list inline can be large, not unbounded).
const MAX_LINE: usize = 16 * 1024 * 1024;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP's "resource not found".
pub const RESOURCE_NOT_FOUND: i64 = -32002;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read the client's messages")]
    Read(#[source] std::io::Error),
    #[error("cannot start the server's threads")]
    Thread(#[source] std::io::Error),
}

pub use options::ServerOptions;

pub use wire::{BadParams, Out};

enum Incoming {
    Line(Vec<u8>),
    TooLong,
    /// stdin closed (or failed), or a stop signal: shut down.
    Gone,
}

/// Serves MCP on `input`/`output` until the client goes away; then stops every run cleanly.
pub fn serve(
    input: impl BufRead + Send + 'static,
    output: impl Write + Send + 'static,
    options: ServerOptions,
) -> Result<(), ServerError> {
    let out = Out::new(output);
    let registry = Registry::new(options.clone(), out.clone());
    let ctx = dispatch::Ctx {
        session: session::Session::default(),
        registry: registry.clone(),
        out: out.clone(),
    };
    // Answers come from tool-call threads too; one writer sends them in the order they come.
    let (answers, answered) = mpsc::channel::<Value>();
    let writer = std::thread::Builder::new()
        .name("mcp-answers".into())
        .spawn({
            let out = out.clone();
            move || answered.iter().for_each(|a| out.send(&a))
        })
        .map_err(ServerError::Thread)?;
    let (tx, rx) = mpsc::channel::<Incoming>();
    std::thread::Builder::new()
        .name("mcp-stdin".into())
        .spawn({
            let tx = tx.clone();
            move || read_lines(input, tx)
        })
        .map_err(ServerError::Thread)?;
    // A signal ends the server like a closed stdin does; each run also hears it itself.
    std::thread::Builder::new()
        .name("mcp-signals".into())
        .spawn(move || wait_for_signal(tx))
        .map_err(ServerError::Thread)?;
    while let Ok(msg) = rx.recv() {
        match msg {
            Incoming::Gone => break,
            Incoming::TooLong => out.error(
                &Value::Null,
                INVALID_REQUEST,
                &format!("request line longer than {MAX_LINE} bytes"),
            ),
            Incoming::Line(bytes) => {
                dispatch::handle_text(&String::from_utf8_lossy(&bytes), &ctx, &answers);
            }
        }
    }
    registry.shutdown();
    // The client is gone: calls still waiting (on runs of other processes) are not waited for.
    drop((answers, ctx, writer));
    Ok(())
}

fn read_lines(mut input: impl BufRead, tx: mpsc::Sender<Incoming>) {
    loop {
        let mut buf = Vec::new();
        // Bounded: a client's line never takes more than MAX_LINE (+ one buffer) of memory.
        let n =
            std::io::Read::take(input.by_ref(), MAX_LINE as u64 + 1).read_until(b'\n', &mut buf);
        match n {
            Ok(0) | Err(_) => {
                let _ = tx.send(Incoming::Gone);
                return;
            }
            Ok(_) if buf.len() > MAX_LINE => {
                // Skip the rest of the oversized line.
                let mut rest = Vec::new();
                while !rest.ends_with(b"\n") {
                    rest.clear();
                    match std::io::Read::take(input.by_ref(), 1 << 20).read_until(b'\n', &mut rest)
                    {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Incoming::Gone);
                            return;
                        }
                        Ok(_) => {}
                    }
                }
                if tx.send(Incoming::TooLong).is_err() {
                    return;
                }
            }
            Ok(_) => {
                if tx.send(Incoming::Line(buf)).is_err() {
                    return;
                }
            }
        }
    }
}

fn wait_for_signal(tx: mpsc::Sender<Incoming>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    });
    let _ = tx.send(Incoming::Gone);
}
