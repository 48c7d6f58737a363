//! The stdio transport: newline-delimited JSON-RPC on stdin/stdout, one client, until stdin
//! closes or a signal arrives.

use std::io::{BufRead, Write};
use std::sync::mpsc;

use serde_json::Value;

use super::dispatch;
use super::options::ServerOptions;
use super::protocol::{ServerError, INVALID_REQUEST};
use super::runs::Registry;
use super::session;
use super::wire::Out;

/// Longest request line accepted (a task list inline can be large, not unbounded).
const MAX_LINE: usize = 16 * 1024 * 1024;

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
    super::signals::wait();
    let _ = tx.send(Incoming::Gone);
}
