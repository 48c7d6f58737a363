#!/usr/bin/env bash
# The whole test suite: installs the pinned real agents (Codex, Claude Code) into .agents/,
# then runs every unit and integration test. Tests that need an agent binary fail with a
# hint to run scripts/install-agents.sh when it is missing; none is skipped silently.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install-agents.sh
# `test-hooks` compiles in the test-only delays some interrupt tests need.
cargo test --all-targets --features test-hooks -- --test-threads="${FANOUT_TEST_THREADS:-4}"
