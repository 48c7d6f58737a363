//! One message of the client → its answer: requests are answered on a channel (a tool call
//! from a thread of its own, as `fanout_wait` blocks), notifications are taken in at once.
//! JSON-RPC batches (revision 2025-03-26 only) are answered with one array.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Sender};

use serde_json::{json, Value};

use super::protocol::{
    INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
    PROTOCOL_VERSIONS, RESOURCE_NOT_FOUND,
};
use super::runs::Registry;
use super::session::Session;
use super::wire::{error_message, result_message, BadParams, Out};
use super::{tool_list, tools};

/// What a message is handled with.
#[derive(Clone)]
pub struct Ctx {
    pub session: Session,
    pub registry: Registry,
    /// Notifications (progress, list changes) go straight to the client.
    pub out: Out,
}

/// Handles one line (or HTTP body) of the client; answers go to `answers`.
pub fn handle_text(text: &str, ctx: &Ctx, answers: &Sender<Value>) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let msg: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let _ = answers.send(error_message(
                &Value::Null,
                PARSE_ERROR,
                &format!("parse error: {e}"),
            ));
            return;
        }
    };
    match msg {
        Value::Array(items) => batch(items, ctx, answers),
        msg => handle(&msg, ctx, answers, false),
    }
}

/// A batch: every answer in one array, once the last one is there (on a thread of its own).
fn batch(items: Vec<Value>, ctx: &Ctx, answers: &Sender<Value>) {
    if !ctx.session.batches_allowed() {
        let _ = answers.send(error_message(
            &Value::Null,
            INVALID_REQUEST,
            "invalid request: JSON-RPC batches are only part of protocol revision 2025-03-26; send one message at a time",
        ));
        return;
    }
    if items.is_empty() {
        let _ = answers.send(error_message(
            &Value::Null,
            INVALID_REQUEST,
            "invalid request: empty batch",
        ));
        return;
    }
    let (tx, rx) = channel();
    for item in &items {
        handle(item, ctx, &tx, true);
    }
    // The array is complete when every sender (the tool-call threads' too) is gone.
    drop(tx);
    let answers = answers.clone();
    let spawned = std::thread::Builder::new()
        .name("mcp-batch".into())
        .spawn(move || {
            let all: Vec<Value> = rx.iter().collect();
            if !all.is_empty() {
                let _ = answers.send(Value::Array(all));
            }
        });
    if let Err(e) = spawned {
        eprintln!("fanout mcp: cannot answer a batch: {e}");
    }
}

fn handle(msg: &Value, ctx: &Ctx, answers: &Sender<Value>, in_batch: bool) {
    let reply = |v: Value| {
        let _ = answers.send(v);
    };
    let Some(obj) = msg.as_object() else {
        return reply(error_message(
            &Value::Null,
            INVALID_REQUEST,
            "invalid request: expected a JSON-RPC object",
        ));
    };
    let id = obj.get("id").cloned();
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        // A response to a request of ours (we send none) or garbage.
        if let Some(id) = id {
            if !obj.contains_key("result") && !obj.contains_key("error") {
                reply(error_message(
                    &id,
                    INVALID_REQUEST,
                    "invalid request: no method",
                ));
            }
        }
        return;
    };
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    let Some(id) = id else {
        return notification(method, &params, ctx);
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return reply(error_message(
            &Value::Null,
            INVALID_REQUEST,
            "invalid request: id must be a string or an integer",
        ));
    }
    if !params.is_null() && !params.is_object() {
        return reply(error_message(
            &id,
            INVALID_PARAMS,
            "params must be an object",
        ));
    }
    if in_batch && method == "initialize" {
        return reply(error_message(
            &id,
            INVALID_REQUEST,
            "invalid request: initialize must not be part of a batch",
        ));
    }
    if method == "tools/call" {
        return tool_call(id, params, ctx, answers);
    }
    reply(request(&id, method, &params, ctx));
}

/// Notifications need no answer; `notifications/cancelled` stops the request it names.
fn notification(method: &str, params: &Value, ctx: &Ctx) {
    if method == "notifications/cancelled" {
        if let Some(id) = params.get("requestId") {
            ctx.session.cancel(id);
        }
    }
}

/// `tools/call` on a thread of its own; a call the client cancelled is not answered.
fn tool_call(id: Value, params: Value, ctx: &Ctx, answers: &Sender<Value>) {
    let cancelled = ctx.session.begin(&id);
    let spawned = std::thread::Builder::new().name("mcp-call".into()).spawn({
        let (id, ctx, answers) = (id.clone(), ctx.clone(), answers.clone());
        move || {
            let answer = match tools::call(&params, &ctx.registry, &ctx.out, &cancelled) {
                Ok(result) => result_message(&id, result),
                Err(BadParams(m)) => error_message(&id, INVALID_PARAMS, &m),
            };
            ctx.session.end(&id);
            if !cancelled.load(Ordering::SeqCst) {
                let _ = answers.send(answer);
            }
        }
    });
    if let Err(e) = spawned {
        ctx.session.end(&id);
        let _ = answers.send(error_message(
            &id,
            INTERNAL_ERROR,
            &format!("cannot start a thread for the call: {e}"),
        ));
    }
}

/// Every request but `tools/call`, answered at once.
fn request(id: &Value, method: &str, params: &Value, ctx: &Ctx) -> Value {
    match method {
        "initialize" => {
            let result = initialize(params);
            if let Some(v) = result["protocolVersion"].as_str() {
                ctx.session.set_protocol(v);
            }
            result_message(id, result)
        }
        "ping" => result_message(id, json!({})),
        "tools/list" => result_message(id, json!({"tools": tool_list::list()})),
        "resources/list" => result_message(id, json!({"resources": ctx.registry.resources()})),
        "resources/templates/list" => result_message(
            id,
            json!({"resourceTemplates": [{
                "uriTemplate": "fanout://runs/{run_id}/report",
                "name": "run report",
                "description": "A run's report: report.json once it ended, the state as it stands before",
                "mimeType": "application/json",
            }]}),
        ),
        "resources/read" => match params.get("uri").and_then(Value::as_str) {
            None => error_message(id, INVALID_PARAMS, "resources/read needs a string `uri`"),
            Some(uri) => match ctx.registry.read_resource(uri) {
                Some(text) => result_message(
                    id,
                    json!({"contents": [{"uri": uri, "mimeType": "application/json", "text": text}]}),
                ),
                None => error_message(
                    id,
                    RESOURCE_NOT_FOUND,
                    &format!("resource not found: {uri}"),
                ),
            },
        },
        other => error_message(id, METHOD_NOT_FOUND, &format!("method not found: {other}")),
    }
}

fn initialize(params: &Value) -> Value {
    let asked = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| **v == asked)
        .copied()
        .unwrap_or(PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": {"listChanged": false},
            // Each run this server starts is a resource: the list changes when runs start and end.
            "resources": {"listChanged": true, "subscribe": false},
        },
        "serverInfo": {"name": "fanout", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "fanout runs many coding agents in parallel, each in its own git worktree, \
            verifies and merges their changes onto fanout/<run>/merged. Start a run with fanout_start \
            (it returns at once), then call fanout_wait until `ended` is true; fanout_diff shows one \
            task's change, fanout_merge brings the merged branch into yours.",
    })
}
