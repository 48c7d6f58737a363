// The official MCP TypeScript SDK client driving `fanout mcp` (stdio or --http), for
// tests/it/mcp_sdk.rs. Settings come from the environment; a JSON summary goes to stdout.
//
// SDK_DIR      the installed @modelcontextprotocol/sdk package folder (.agents/mcp-sdk-*)
// MODE         stdio | http
// FANOUT_BIN, REPO   (stdio) the fanout binary and the repository it serves
// URL, TOKEN   (http) the endpoint and the bearer token
// TASKS        fanout_start's arguments (JSON)
// TIMEOUT_MS   the client's request timeout; WAIT_SECS a fanout_wait longer than it
import { pathToFileURL } from "node:url";

const env = process.env;
const sdk = (p) => import(pathToFileURL(`${env.SDK_DIR}/dist/esm/${p}`).href);
const { Client } = await sdk("client/index.js");
const { StdioClientTransport } = await sdk("client/stdio.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");

const transport =
  env.MODE === "http"
    ? new StreamableHTTPClientTransport(new URL(env.URL), {
        requestInit: { headers: { Authorization: `Bearer ${env.TOKEN}` } },
      })
    : new StdioClientTransport({ command: env.FANOUT_BIN, args: ["mcp"], cwd: env.REPO, stderr: "inherit" });
const client = new Client({ name: "fanout-test", version: "1.0.0" });
await client.connect(transport);
const summary = { protocol: transport.protocolVersion ?? null };
// listTools lets the client check every structuredContent against the tool's outputSchema.
const tools = await client.listTools();
summary.tools = tools.tools.map((t) => ({ name: t.name, readOnly: t.annotations?.readOnlyHint }));
const timeout = Number(env.TIMEOUT_MS);
const waitSecs = Number(env.WAIT_SECS);

const start = await client.callTool({ name: "fanout_start", arguments: JSON.parse(env.TASKS) });
const runId = start.structuredContent.run_id;
summary.run_id = runId;

// A wait longer than the request timeout, without progress resets: the client gives up
// (and sends notifications/cancelled).
let t0 = Date.now();
try {
  await client.callTool({ name: "fanout_wait", arguments: { run_id: runId, timeout_secs: waitSecs } }, undefined, { timeout });
  summary.plain = { ok: true };
} catch (e) {
  summary.plain = { ok: false, code: e.code ?? null, ms: Date.now() - t0 };
}

// The same wait with resetTimeoutOnProgress: fanout's beats keep it alive to the end.
let beats = 0;
t0 = Date.now();
const long = await client.callTool(
  { name: "fanout_wait", arguments: { run_id: runId, timeout_secs: waitSecs } },
  undefined,
  { timeout, resetTimeoutOnProgress: true, onprogress: () => beats++ },
);
summary.long = { ms: Date.now() - t0, beats, ended: long.structuredContent.ended };

// Then until the run ended, the default wait each time.
let view = long.structuredContent;
for (let i = 0; i < 20 && !view.ended; i++) {
  const w = await client.callTool({ name: "fanout_wait", arguments: { run_id: runId } }, undefined, {
    resetTimeoutOnProgress: true,
    onprogress: () => {},
  });
  view = w.structuredContent;
}
summary.final = { ended: view.ended, counts: view.counts, status: view.status };
const status = await client.callTool({ name: "fanout_status", arguments: {} });
summary.status_runs = status.structuredContent.runs.length;
const resources = await client.listResources();
summary.resources = resources.resources.map((r) => r.uri);
await client.close();
console.log(JSON.stringify(summary));
