#!/usr/bin/env bash
# The whole test suite: installs the pinned real agents (Codex, Claude Code) into .agents/,
# then runs every unit and integration test. Tests that need an agent binary fail with a
# hint to run scripts/install-agents.sh when it is missing; none is skipped silently.
# The integration tests run twice: first with the workspaces `auto` picks here (overlays where
# the machine allows them), then with every run forced to git worktrees (FANOUT_WORKSPACE), so
# each run, verify, sandbox, escape, fault and interrupt test passes in both modes. Tests that
# pick a mode themselves (--workspace) keep it in both passes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install-agents.sh
# The examples' checkers and, as root, a one-node Slurm for the sharding tests.
bash scripts/install-engines.sh
threads="${FANOUT_TEST_THREADS:-4}"
# `test-hooks` compiles in the test-only delays some interrupt tests need.
cargo test --all-targets --features test-hooks -- --test-threads="$threads"
echo "== integration tests again, every run in git worktrees =="
FANOUT_WORKSPACE=worktree cargo test --features test-hooks --test it -- --test-threads="$threads"
