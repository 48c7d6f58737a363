#!/usr/bin/env python3
"""A scripted stand-in for the OpenAI Responses API, for benchmarks with the real Codex CLI.

The same script as the tests' default (tests/support/model_server.rs, `run_prompt_command`):
every `POST .../responses` asks Codex to run the shell command after `CMD: ` in the latest user
message through its `exec_command` tool, and once that command's output came back answers with
a final message. Answers are server-sent events: `response.created`, one
`response.output_item.done`, `response.completed` with token usage.

Usage: scripts/model_server.py PORT_FILE
Listens on a free loopback port, writes the port to PORT_FILE, serves until killed.
Codex's config.toml then names it (see `codex_config_for_url` in the tests' model server):
a provider with base_url = "http://127.0.0.1:PORT/v1" and wire_api = "responses".
"""

import itertools
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTER = itertools.count()
LOCK = threading.Lock()


def text_of(item):
    return "\n".join(p.get("text", "") for p in item.get("content") or [] if isinstance(p, dict))


def is_context(item):
    t = text_of(item)
    return t.startswith(("<environment_context>", "<user_instructions>", "# AGENTS.md"))


def reply(body):
    """The next output item: run the prompt's command, or finish once it ran."""
    items = body.get("input") or []
    user = next((text_of(i) for i in reversed(items)
                 if i.get("role") == "user" and not is_context(i)), "")
    cmd = None
    if "CMD: " in user:
        rest = user.split("CMD: ", 1)[1]
        cmd = (rest.splitlines() or [""])[0].strip()
    with LOCK:
        n = next(COUNTER)
    after_tool = bool(items) and items[-1].get("type") == "function_call_output"
    if after_tool or cmd is None:
        text = f"done: {cmd or ''}" if after_tool else "nothing to do"
        item = {"type": "message", "role": "assistant", "id": f"msg_{n}", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}
    else:
        item = {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}",
                "name": "exec_command", "status": "completed",
                "arguments": json.dumps({"cmd": cmd, "login": False, "yield_time_ms": 30000})}
    usage = {"input_tokens": 1000 + 10 * n, "input_tokens_details": {"cached_tokens": 200},
             "output_tokens": 50 + n, "output_tokens_details": {"reasoning_tokens": 10},
             "total_tokens": 1050 + 11 * n}
    events = [
        {"type": "response.created", "response": {"id": f"resp_{n}"}},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": {"id": f"resp_{n}", "usage": usage}},
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, status, kind, body):
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self):
        raw = self.read_body()
        if not self.path.endswith("/responses"):
            return self.send(404, "application/json", b'{"error":"not found"}')
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        self.send(200, "text/event-stream", reply(body))

    def do_GET(self):
        self.send(404, "application/json", b'{"error":"not found"}')


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: model_server.py PORT_FILE")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Written whole, then renamed: a reader never sees half a port.
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
