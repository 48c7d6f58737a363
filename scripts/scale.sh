#!/usr/bin/env bash
# Scale run: TASKS trivial tasks (each writes its own new file through the `exec` agent) on a
# repository of FILES files, JOBS at a time. Prints the total time, tasks/s, fanout's peak RSS
# (VmHWM of the fanout process, and /usr/bin/time's figure when it is installed) and the peak
# number of task worktrees on disk, sampled every 0.2 s.
# Not part of the test suite. Usage: scripts/scale.sh [TASKS] [JOBS] [FILES]
# (the issue's figure: scripts/scale.sh 10000 8 100)
set -euo pipefail
tasks=${1:-10000} jobs=${2:-8} files=${3:-100}
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# FANOUT_BIN=path measures another build (e.g. an older one) instead of building this one.
fanout=${FANOUT_BIN:-}
if [ -z "$fanout" ]; then
  cargo build --quiet --release --bins
  fanout="$root/target/release/fanout"
fi
work=$(mktemp -d)
outer=""
trap '[ -z "$outer" ] || kill "$outer" 2>/dev/null || true; rm -rf "$work"' EXIT
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_SYSTEM=/dev/null
repo="$work/repo"
mkdir -p "$repo/src"
git -C "$repo" init --quiet --initial-branch=main
git -C "$repo" config user.name scale; git -C "$repo" config user.email scale@example.invalid
for i in $(seq 1 "$files"); do printf 'file %s\n' "$i" > "$repo/src/f$i.txt"; done
git -C "$repo" add -A && git -C "$repo" commit --quiet -m base

# All new files land in the root folder, whose tree then grows with every merged task (each
# integration commit writes it whole); SCALE_NESTED=1 spreads them over 100 folders instead.
write='echo x > f_$FANOUT_TASK_ID.txt'
[ -z "${SCALE_NESTED:-}" ] || write='d=d$((${FANOUT_TASK_ID#t} % 100)); mkdir -p $d; echo x > $d/f_$FANOUT_TASK_ID.txt'
{
  printf '{"agents":{"w":{"protocol":"exec","command":"sh","args":["-c","%s"]}},' "$write"
  printf '"defaults":{"agent":"w"},"tasks":['
  for i in $(seq 1 "$tasks"); do
    [ "$i" = 1 ] || printf ','
    printf '{"id":"t%s","prompt":"x"}' "$i"
  done
  printf ']}\n'
} > "$work/tasks.json"

timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -v -o "$work/time.txt")
t0=$(date +%s%N)
"${timer[@]}" "$fanout" run --repo "$repo" --tasks "$work/tasks.json" --jobs "$jobs" \
  --no-readback ${SCALE_ARGS:-} --report "$work/report.json" > "$work/out.txt" 2> "$work/err.txt" &
outer=$!
peak_wt=0 peak_hwm=0 pid=""
while kill -0 "$outer" 2>/dev/null; do
  if [ -z "$pid" ]; then
    if [ ${#timer[@]} -gt 0 ]; then pid=$(pgrep -P "$outer" | head -n 1 || true); else pid=$outer; fi
  fi
  if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak_hwm" ] && peak_hwm=$hwm
  fi
  n=0
  for d in "$repo"/.git/fanout/runs/*/worktrees; do
    [ -d "$d" ] && n=$( (ls -A "$d" 2>/dev/null || true) | wc -l)
  done
  [ "$n" -gt "$peak_wt" ] && peak_wt=$n
  sleep 0.2
done
wait "$outer" || true
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
tail -n 3 "$work/out.txt"
grep -q "$tasks merged" "$work/out.txt" || { tail -n 20 "$work/err.txt"; echo "scale: not every task merged" >&2; }
echo "tasks=$tasks jobs=$jobs files=$files"
echo "total: ${ms} ms"
awk -v n="$tasks" -v ms="$ms" 'BEGIN { printf "tasks/s: %.1f\n", n * 1000 / ms }'
echo "peak RSS (VmHWM sampled): $((peak_hwm / 1024)) MB"
if [ -f "$work/time.txt" ]; then
  awk -F': ' '/Maximum resident set size/ { printf "peak RSS (/usr/bin/time): %d MB\n", $2 / 1024 }
    /User time/ { u = $2 } /System time/ { s = $2 }
    END { printf "CPU time, fanout and its agents: %.1f s user + %.1f s system\n", u, s }' "$work/time.txt"
fi
# The integration's cost per commit, from the run's events: its start to the last merge.
for ev in "$repo"/.git/fanout/runs/*/run-events.jsonl; do
  [ -f "$ev" ] || continue
  python3 - "$ev" <<'PY'
import json, sys
start = last = None
merged = 0
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("event") == "integration_started":
        start = e["t_ms"]
    elif e.get("event") == "merged" and start is not None:
        last, merged = e["t_ms"], merged + 1
if start is not None and merged:
    print(f"integration: {merged} commits in {last - start} ms, {(last - start) / merged:.3f} ms per commit")
PY
done
# Baseline for the integration: git's own fastest way to write the same commits (each adding
# its task's file to the tip), `git fast-import` into a copy of the base, in the same run.
base=$(git -C "$repo" rev-parse main)
git clone --quiet --bare --no-local "$repo" "$work/fi.git" 2>/dev/null
python3 - "$tasks" "$base" "${SCALE_NESTED:-}" > "$work/fi.stream" <<'PY'
import sys
n, base, nested = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = sys.stdout
for i in range(1, n + 1):
    path = f"d{i % 100}/f_t{i}.txt" if nested else f"f_t{i}.txt"
    msg = f"t{i}"
    out.write(f"commit refs/heads/fi\ncommitter scale <scale@example.invalid> 0 +0000\n")
    out.write(f"data {len(msg)}\n{msg}\n")
    if i == 1:
        out.write(f"from {base}\n")
    out.write(f"M 100644 inline {path}\ndata 2\nx\n\n")
PY
f0=$(date +%s%N)
git -C "$work/fi.git" fast-import --quiet < "$work/fi.stream"
f1=$(date +%s%N)
awk -v ms="$(( (f1 - f0) / 1000000 ))" -v n="$tasks" \
  'BEGIN { printf "git fast-import of the same %d commits: %d ms, %.3f ms per commit\n", n, ms, ms / n }'
echo "peak worktrees on disk: $peak_wt"
echo "worktrees left: $(git -C "$repo" worktree list | tail -n +2 | wc -l)"
