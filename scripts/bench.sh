#!/usr/bin/env bash
# Benchmark: fanout vs a plain-git baseline doing the same work in the same run.
#
# A repository of FILES files; TASKS tasks, each renaming one identifier in one file through the
# `exec` codemod agent. fanout: worktree per task, sandboxed agent, collect, in-memory merge.
# Baseline: the same with git commands (worktree add, sed, commit, worktree remove, then
# cherry-pick every branch onto an integration branch in a scratch worktree), JOBS at a time
# (git's `worktree add`/`remove` registrations serialised with flock, as they race when run in
# parallel; the checkouts themselves run in parallel).
# Prints both times and the ratio. Usage: scripts/bench.sh [FILES] [TASKS] [JOBS]
set -euo pipefail
files=${1:-5000} tasks=${2:-20} jobs=${3:-4}
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --quiet --release --bins
fanout="$root/target/release/fanout"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_SYSTEM=/dev/null
make_repo() {
  local repo=$1
  mkdir -p "$repo/src"
  git -C "$repo" init --quiet --initial-branch=main
  git -C "$repo" config user.name bench; git -C "$repo" config user.email bench@example.invalid
  for i in $(seq 1 "$files"); do
    printf 'export const v%s = fetchUser(%s);\n' "$i" "$i" > "$repo/src/f$i.js"
  done
  git -C "$repo" add -A && git -C "$repo" commit --quiet -m base
}
now() { date +%s%N; }

make_repo "$work/a"
{
  printf '{"agents":{"r":{"protocol":"exec","command":"%s"}},"defaults":{"agent":"r"},"tasks":[' "$root/examples/codemod/rename-api.sh"
  for i in $(seq 1 "$tasks"); do
    [ "$i" = 1 ] || printf ','
    printf '{"id":"t%s","prompt":"rename fetchUser to loadUser in src/f%s.js"}' "$i" "$i"
  done
  printf ']}\n'
} > "$work/tasks.json"
t0=$(now)
"$fanout" run --quiet --repo "$work/a" --tasks "$work/tasks.json" --jobs "$jobs" --no-readback > "$work/fanout.out"
t1=$(now)
grep -q "$tasks merged" "$work/fanout.out" || { cat "$work/fanout.out"; echo "bench: fanout did not merge every task" >&2; exit 1; }

make_repo "$work/b"
one_task() {
  local i=$1 repo=$work/b wt=$work/b-wt/t$1
  # git's own `worktree add` races with itself when run in parallel: register one at a time,
  # then check out in parallel (the fastest safe way with plain git).
  flock "$work/wt.lock" git -C "$repo" worktree add --quiet --no-checkout -b "base/t$i" "$wt" main
  git -C "$wt" reset --quiet --hard
  (cd "$wt" && FANOUT_PROMPT="rename fetchUser to loadUser in src/f$i.js" "$root/examples/codemod/rename-api.sh" >/dev/null)
  git -C "$wt" commit --quiet -am "t$i"
  flock "$work/wt.lock" git -C "$repo" worktree remove --force "$wt"
}
export -f one_task; export work root
t2=$(now)
seq 1 "$tasks" | xargs -P "$jobs" -I{} bash -c 'one_task {}'
git -C "$work/b" worktree add --quiet -b base/merged "$work/b-int" main
for i in $(seq 1 "$tasks"); do git -C "$work/b-int" cherry-pick --quiet "base/t$i" >/dev/null; done
git -C "$work/b" worktree remove --force "$work/b-int"
t3=$(now)

f_ms=$(( (t1 - t0) / 1000000 )) b_ms=$(( (t3 - t2) / 1000000 ))
echo "files=$files tasks=$tasks jobs=$jobs"
echo "fanout (sandboxed, collect, verify, in-memory merge): ${f_ms} ms"
echo "plain git baseline (worktree add, sed, commit, cherry-pick): ${b_ms} ms"
awk -v f="$f_ms" -v b="$b_ms" 'BEGIN { printf "ratio fanout/baseline: %.2f\n", f / b }'
