#!/usr/bin/env bash
# Installs the pinned real agent binaries the tests drive (Codex before and after the
# mcp-server removal, and the newest Codex; Claude Code for read-back) into .agents/ inside the project, plus
# what the HTML report test drives: playwright-core (npm) and Debian's Chromium (apt, as root);
# and the official MCP TypeScript SDK, whose client the `fanout mcp` tests drive.
# Idempotent: a version already installed is left alone. Prints the folders to stdout.
# Supported Codex: `mcp-server` up to 0.153.x, `app-server` 0.154.x to 0.171.x (`fanout doctor`
# says the same; a newer Codex is refused until fanout knows its protocol).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.agents"
pkgs=(
  "codex-0.153.4 @openai/codex@0.153.4"
  "codex-0.169.0 @openai/codex@0.169.0"
  "codex-0.171.0 @openai/codex@0.171.0"
  "claude-code-2.1.332 @anthropic-ai/claude-code@2.1.332"
  "playwright-core-1.64.1 playwright-core@1.64.1"
  "mcp-sdk-1.32.2 @modelcontextprotocol/sdk@1.32.2"
)
command -v npm >/dev/null || { echo "install-agents: npm is required (install Node.js 20+)" >&2; exit 1; }
mkdir -p "$dest"
for entry in "${pkgs[@]}"; do
  dir="${entry%% *}" spec="${entry#* }"
  name="${spec%@*}"
  if [ -f "$dest/$dir/.installed" ]; then
    continue
  fi
  echo "install-agents: installing $spec into .agents/$dir" >&2
  rm -rf "$dest/$dir"
  mkdir -p "$dest/$dir"
  npm install --prefix "$dest/$dir" --no-audit --no-fund --loglevel=error "$spec" >&2
  touch "$dest/$dir/.installed"
done

# The HTML report is opened in a real headless Chromium by the tests.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-agents: installing Debian's chromium" >&2
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  else
    echo "install-agents: chromium is missing: install Debian's package 'chromium' (apt-get install chromium) for the HTML report test" >&2
  fi
fi
