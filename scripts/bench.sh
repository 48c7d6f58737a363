#!/usr/bin/env bash
# Benchmark: fanout vs a plain-git baseline doing the same work in the same run.
#
# A repository of FILES files; TASKS tasks, each renaming one identifier in one file through the
# `exec` codemod agent. fanout: a workspace per task (an overlay, or a worktree reused from an
# earlier task once --jobs exist), sandboxed agent, collect, in-memory merge.
# Baseline: the same with git commands (worktree add, sed, commit, worktree remove, then
# cherry-pick every branch onto an integration branch in a scratch worktree), JOBS at a time
# (git's `worktree add`/`remove` registrations serialised with flock, as they race when run in
# parallel; the checkouts themselves run in parallel).
# MODE is fanout's --workspace (auto, overlay, worktree; default auto); in worktree mode the
# first line also says how many tasks ran in a reused worktree.
# Prints fanout's and the baseline's ms per task, their ratio, fanout's peak RSS and the run
# folder's peak disk use (sampled), then one line `ratio_vs_git=<x>`: baseline time / fanout
# time (above 1: fanout is faster).
# Usage: [BASELINE=0] [NETNS=0] [PROXY=0] scripts/bench.sh [FILES] [TASKS] [JOBS] [MODE]
set -euo pipefail
files=${1:-5000} tasks=${2:-20} jobs=${3:-4} mode=${4:-auto}
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --quiet --release --bins
fanout="$root/target/release/fanout"
work=$(mktemp -d)
trap 'touch "$work/done"; rm -rf "$work"' EXIT
# As root, agents run as another uid and must reach their workspaces in $work/tmp.
chmod 711 "$work"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_SYSTEM=/dev/null

# The network namespace's cost per task (`--net isolated`, docs/sandbox.md): the median and p99
# of SAMPLES sandboxed starts of `true` with and without it, and their difference. NETNS=0 skips.
netns_cost() {
  local n=${SAMPLES:-60} kind t0 t1
  for kind in default isolated; do
    for _ in $(seq 1 "$n"); do
      t0=$(now); "$fanout" sandbox -w "$work" --net "$kind" -- true 2>/dev/null; t1=$(now)
      echo $(( (t1 - t0) / 1000 ))
    done | sort -n > "$work/netns.$kind"
  done
  awk -v n="$n" 'FNR == 1 { f++ } { v[f, FNR] = $1 }
    END { m = int((n + 1) / 2); p = int(n * 0.99); if (p < 1) p = 1
          printf "sandboxed start (us): --net default median %d p99 %d; --net isolated median %d p99 %d; namespace cost per task %.2f ms (median)\n",
            v[1, m], v[1, p], v[2, m], v[2, p], (v[2, m] - v[1, m]) / 1000 }' \
    "$work/netns.default" "$work/netns.isolated"
}
make_repo() {
  local repo=$1
  mkdir -p "$repo/src"
  git -C "$repo" init --quiet --initial-branch=main
  git -C "$repo" config user.name bench; git -C "$repo" config user.email bench@example.invalid
  # 1 000 files per folder, as a real tree would spread them.
  awk -v n="$files" -v dir="$repo/src" 'BEGIN { for (i = 1; i <= n; i++) {
      d = dir "/d" int(i / 1000); if (i % 1000 == 0 || i == 1) system("mkdir -p " d)
      printf "export const v%d = fetchUser(%d);\n", i, i > (d "/f" i ".js"); close(d "/f" i ".js") } }'
  git -C "$repo" add -A && git -C "$repo" commit --quiet -m base
}
path_of() { echo "src/d$(( $1 / 1000 ))/f$1.js"; }
now() { date +%s%N; }

make_repo "$work/a"
{
  printf '{"agents":{"r":{"protocol":"exec","command":"%s"}},"defaults":{"agent":"r"},"tasks":[' "$root/examples/codemod/rename-api.sh"
  for i in $(seq 1 "$tasks"); do
    [ "$i" = 1 ] || printf ','
    printf '{"id":"t%s","prompt":"rename fetchUser to loadUser in %s"}' "$i" "$(path_of "$i")"
  done
  printf ']}\n'
} > "$work/tasks.json"
# fanout's temp folder (its workspaces as root) in $work, so the disk sampler sees all of it.
mkdir -p "$work/tmp"
# Lowers kept in memory (/dev/shm, see docs/workspaces.md) are sampled apart: RAM, not disk.
( set +eo pipefail; peak=0; mpeak=0; while [ ! -e "$work/done" ]; do
    kb=$(du -skx "$work/a/.git/fanout" "$work/tmp" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    [ "$kb" -gt "$peak" ] && peak=$kb && echo "$peak" > "$work/disk.peak"
    mkb=$(du -skx /dev/shm/fanout-lower-* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    [ "$mkb" -gt "$mpeak" ] && mpeak=$mkb && echo "$mpeak" > "$work/mem.peak"
    sleep 0.2
  done ) &
t0=$(now)
rc=0
TMPDIR="$work/tmp" /usr/bin/time -f %M -o "$work/rss" \
  "$fanout" run --repo "$work/a" --tasks "$work/tasks.json" --jobs "$jobs" --no-readback \
  --workspace "$mode" --report "$work/report.json" > "$work/fanout.out" 2> "$work/fanout.err" || rc=$?
t1=$(now)
[ "$rc" = 0 ] || { cat "$work/fanout.out" "$work/fanout.err" >&2; echo "bench: fanout exited $rc" >&2; exit 1; }
touch "$work/done"; wait
grep -q "$tasks merged" "$work/fanout.out" || { cat "$work/fanout.out" "$work/fanout.err"; echo "bench: fanout did not merge every task" >&2; exit 1; }
ws=$(grep -m1 'workspaces:' "$work/fanout.err" | sed 's/^fanout: workspaces: //')
# Worktree mode: how many tasks ran in a reused worktree (the report's workspace.reused).
reused=$(grep -o '"reused": *[0-9]*' "$work/report.json" | grep -o '[0-9]*$' || true)
[ -z "$reused" ] || ws="$ws; reused worktrees: $reused"

[ "${NETNS:-1}" = 0 ] || netns_cost
# The egress proxy's added latency per new connection (CONNECT through the forwarder in the
# namespace and the proxy, one line echoed) against a direct connection: median and p99.
# PROXY=0 skips (it builds the integration tests in release mode).
if [ "${PROXY:-1}" != 0 ]; then
  cargo test --quiet --release --features test-hooks --test it egress::proxy_latency -- --ignored --nocapture 2>/dev/null |
    grep '^egress proxy' || echo "egress proxy latency: not measured (the test failed)"
fi

# BASELINE=0 measures fanout alone (the plain-git side of a 50 000-file run takes ~50 s a task
# here); no ratio is printed then.
if [ "${BASELINE:-1}" = 0 ]; then
  f_ms=$(( (t1 - t0) / 1000000 ))
  echo "files=$files tasks=$tasks jobs=$jobs workspace=$mode ($ws)"
  awk -v f="$f_ms" -v t="$tasks" -v rss="$(cat "$work/rss")" -v disk="$(cat "$work/disk.peak" 2>/dev/null || echo 0)" \
    -v mem="$(cat "$work/mem.peak" 2>/dev/null || echo 0)" \
    'BEGIN { printf "fanout alone (BASELINE=0): %d ms, %.1f ms/task, peak RSS %.0f MB, run folder peak disk %.0f MB, lowers in memory peak %.0f MB\n", f, f / t, rss / 1024, disk / 1024, mem / 1024 }'
  exit 0
fi
make_repo "$work/b"
one_task() {
  local i=$1 repo=$work/b wt=$work/b-wt/t$1
  # git's own `worktree add` races with itself when run in parallel: register one at a time,
  # then check out in parallel (the fastest safe way with plain git).
  flock "$work/wt.lock" git -C "$repo" worktree add --quiet --no-checkout -b "base/t$i" "$wt" main
  git -C "$wt" reset --quiet --hard
  (cd "$wt" && FANOUT_PROMPT="rename fetchUser to loadUser in $(path_of "$i")" "$root/examples/codemod/rename-api.sh" >/dev/null)
  git -C "$wt" commit --quiet -am "t$i"
  flock "$work/wt.lock" git -C "$repo" worktree remove --force "$wt"
}
export -f one_task path_of; export work root
t2=$(now)
seq 1 "$tasks" | xargs -P "$jobs" -I{} bash -c 'one_task {}'
git -C "$work/b" worktree add --quiet -b base/merged "$work/b-int" main
for i in $(seq 1 "$tasks"); do git -C "$work/b-int" cherry-pick --quiet "base/t$i" >/dev/null; done
git -C "$work/b" worktree remove --force "$work/b-int"
t3=$(now)

f_ms=$(( (t1 - t0) / 1000000 )) b_ms=$(( (t3 - t2) / 1000000 ))
echo "files=$files tasks=$tasks jobs=$jobs workspace=$mode ($ws)"
awk -v f="$f_ms" -v t="$tasks" -v rss="$(cat "$work/rss")" -v disk="$(cat "$work/disk.peak" 2>/dev/null || echo 0)" \
  -v mem="$(cat "$work/mem.peak" 2>/dev/null || echo 0)" \
  'BEGIN { printf "fanout (sandboxed, collect, verify, in-memory merge): %d ms, %.1f ms/task, peak RSS %.0f MB, run folder peak disk %.0f MB, lowers in memory peak %.0f MB\n", f, f / t, rss / 1024, disk / 1024, mem / 1024 }'
awk -v b="$b_ms" -v t="$tasks" 'BEGIN { printf "plain git baseline (worktree add, sed, commit, cherry-pick): %d ms, %.1f ms/task\n", b, b / t }'
awk -v f="$f_ms" -v b="$b_ms" 'BEGIN { printf "ratio fanout/baseline: %.3f\nratio_vs_git=%.2f\n", f / b, b / f }'
