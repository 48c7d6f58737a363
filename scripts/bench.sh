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
#
# SCENARIO=setup: the nightly `var`→`let` codemod of a JS library with `setup: npm ci`, offline
# and deterministic: PACKAGES local tarball dependencies of 500 files each (`npm ci --offline`
# from `file:` tarballs, ~PACKAGES×500 files in node_modules), SRC source files, TASKS tasks
# (each rewrites SRC/TASKS files; verify: the test script, which loads node_modules), an
# integration gate running the tests, `--jobs JOBS`. Against a shell loop doing the same work
# in the same run (one checkout, one `npm ci`, the codemods, the tests after each, commits, the
# tests at the end). Prints both times, the target (1.5 × the loop + one gate run), and
# fanout's per-phase times from its events.jsonl (setup, agent, gates, integration gate).
# ONCE=false runs the setup in every workspace instead (the behaviour before setup layers).
# Usage: SCENARIO=setup [FANOUT=path] [ONCE=false] scripts/bench.sh [TASKS] [JOBS] [MODE] [PACKAGES] [SRC]
#
# SCENARIO=codex: one real Codex task (CODEX, default .agents/codex-0.169.0) on the scripted
# model (scripts/model_server.py: run the prompt's `CMD: …`, then answer) through `fanout run`
# (sandbox, app-server session, collect, merge) against `codex exec` of the same prompt in a
# plain checkout with the same model, REPEAT times each, alternating; the medians and
# `ratio_vs_codex_exec=<x>` (codex exec time / fanout time; above 1: fanout is faster). Then
# TASKS tasks at --jobs JOBS through fanout: the wall time and, per task, the gap between its
# agent's last event and `committed` in run-events.jsonl (the agent stopped, collection).
# Usage: SCENARIO=codex [FANOUT=path] [CODEX=path] [REPEAT=5] scripts/bench.sh [TASKS] [JOBS]
now() { date +%s%N; }

# The `shards` scenario (docs/shards.md): bundle bytes per task from real shard runs on
# repositories of two sizes (proportional to the change, not the repository), then `fanout
# combine` of TASKS tasks from BUNDLES synthetic hand-overs (one one-line change per task,
# made with git fast-import; the manifests as a shard writes them): ms per task (target ≤ 2).
# Usage: SCENARIO=shards [FANOUT=path] scripts/bench.sh [TASKS] [BUNDLES] [SMALL_FILES] [LARGE_FILES]
bench_shards() {
  local tasks=${1:-10000} bundles=${2:-100} small=${3:-100} large=${4:-5000}
  work=$(mktemp -d)
  [ "${KEEP:-0}" = 1 ] && echo "bench: keeping $work" >&2 || trap 'rm -rf "$work"' EXIT
  chmod 711 "$work"
  export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_SYSTEM=/dev/null
  export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
  export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
  local files
  # Bundle bytes per task: 2 shards of 20 one-line tasks, on a small and on a large repository.
  for files in "$small" "$large"; do
    local repo=$work/r$files
    mkdir -p "$repo/src"
    awk -v d="$repo/src" -v n="$files" 'BEGIN { for (i = 0; i < n; i++) { f = sprintf("%s/f%05d.txt", d, i); for (l = 1; l <= 20; l++) printf "file %d line %d of some text\n", i, l > f; close(f) } }'
    git -C "$repo" init -q -b main && git -C "$repo" add -A && git -C "$repo" commit -qm base
    python3 - "$work/t$files.json" <<'PY'
import json, sys
tasks = [{"id": f"t{i:05d}", "prompt": "edit"} for i in range(40)]
agent = {"protocol": "exec", "command": "sh", "args": ["-c", 'n=${FANOUT_TASK_ID#t}; echo "$FANOUT_TASK_ID" >> "src/f$n.txt"']}
json.dump({"version": 1, "agents": {"ed": agent}, "defaults": {"agent": "ed"}, "tasks": tasks}, open(sys.argv[1], "w"))
PY
    local k total=0
    for k in 1 2; do
      git clone -q "$repo" "$work/c$files-$k"
      "$fanout" run --repo "$work/c$files-$k" --tasks "$work/t$files.json" --shard "$k/2" --run-id bench \
        --bundle "$work/b$files-$k.bundle" --no-readback -q > /dev/null 2>&1 || true
      total=$(( total + $(stat -c %s "$work/b$files-$k.bundle") ))
    done
    local pack
    pack=$(du -sk "$repo/.git/objects" | cut -f1)
    echo "bundle bytes per task: $(( total / 40 )) (repository of $files files, ${pack} KiB of objects; 40 tasks in 2 shards)"
  done
  # Combine: TASKS tasks in BUNDLES hand-overs.
  local repo=$work/big
  mkdir -p "$repo/src"
  # One file per task, 100 to a folder (a flat folder of 10 000 entries makes every tree write
  # of the integration cost O(tasks)).
  awk -v d="$repo/src" -v n="$tasks" 'BEGIN { for (i = 0; i < n; i++) { if (i % 100 == 0) system(sprintf("mkdir -p %s/d%03d", d, i / 100)); f = sprintf("%s/d%03d/f%05d.txt", d, int(i / 100), i); printf "file %d\n", i > f; close(f) } }'
  git -C "$repo" init -q -b main && git -C "$repo" add -A && git -C "$repo" commit -qm base
  local base
  base=$(git -C "$repo" rev-parse HEAD)
  python3 - "$repo" "$base" "$tasks" "$bundles" "$work/tasks.json" <<'PY'
import json, subprocess, sys, time
repo, base, n, shards, tasks_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
agent = {"protocol": "exec", "command": "true"}
json.dump({"version": 1, "agents": {"ed": agent}, "defaults": {"agent": "ed"},
           "tasks": [{"id": f"t{i:05d}", "prompt": "edit"} for i in range(n)]}, open(tasks_file, "w"))
out, mark = [], 0
def data(b):
    global out
    out.append(b"data %d\n" % len(b)); out.append(b)
per = {k: [] for k in range(1, shards + 1)}
for i in range(n):
    k = i % shards + 1
    mark += 1
    ref = f"refs/fanout/bench/shard-{k}/task/t{i:05d}"
    out.append(f"commit {ref}\nmark :{mark}\ncommitter bench <b@e> 1700000000 +0000\n".encode())
    data(f"fanout: t{i:05d}\n\nFanout-Task: t{i:05d}\n".encode())
    out.append(f"from {base}\n".encode())
    out.append(f"M 100644 inline src/d{i // 100:03d}/f{i:05d}.txt\n".encode())
    data(f"file {i}\nt{i:05d}\n".encode())
    per[k].append((f"t{i:05d}", mark))
now = int(time.time() * 1000)
subprocess.run(["git", "-C", repo, "fast-import", "--quiet", "--export-marks=" + repo + "/marks"], input=b"".join(out), check=True)
marks = dict(l.split() for l in open(repo + "/marks"))
# The manifests, naming the commits' ids.
out = []
for k, ts in per.items():
    manifest = {"format": 1, "run_id": "bench", "shard": {"index": k, "count": shards}, "base": base,
                "host": f"node{k}", "created_ms": now, "attempt": 0,
                "tasks": [{"id": t, "status": "merged", "commit": marks[f":{m}"]} for t, m in ts]}
    out.append(f"commit refs/fanout/bench/shard-{k}/manifest\ncommitter bench <b@e> 1700000000 +0000\n".encode())
    data(b"manifest\n")
    out.append(b"M 100644 inline manifest.json\n")
    data(json.dumps(manifest).encode())
    out.append(b"\n")
subprocess.run(["git", "-C", repo, "fast-import", "--quiet"], input=b"".join(out), check=True)
PY
  mkdir -p "$work/bundles"
  local k
  for k in $(seq 1 "$bundles"); do
    git -C "$repo" for-each-ref --format='%(refname)' "refs/fanout/bench/shard-$k/" |
      { cat; echo "^$base"; } | git -C "$repo" bundle create -q "$work/bundles/s$k.bundle" --stdin
  done
  git clone -q "$repo" "$work/comb"
  local t0 t1
  t0=$(now)
  "$fanout" combine --repo "$work/comb" --tasks "$work/tasks.json" --from "$work/bundles" -q --min-free-mb 0 > /dev/null 2> "$work/combine.err"
  local code=$?
  t1=$(now)
  local ms=$(( (t1 - t0) / 1000000 ))
  local merged
  merged=$(grep -o '"status": "merged"' "$work/comb/.git/fanout/runs/bench/report.json" | wc -l)
  echo "combine: $tasks tasks from $bundles bundles in $ms ms (exit $code, $merged merged): $(awk -v ms="$ms" -v n="$tasks" 'BEGIN { printf "%.3f", ms / n }') ms per task (target <= 2)"
}

# The `setup` scenario (see above).
bench_setup() {
  local tasks=${1:-30} jobs=${2:-2} mode=${3:-auto} packages=${4:-40} src=${5:-150}
  # Global: the EXIT trap runs after this function returned. KEEP=1 leaves it for a look.
  work=$(mktemp -d)
  [ "${KEEP:-0}" = 1 ] && echo "bench: keeping $work" >&2 || trap 'rm -rf "$work"' EXIT
  chmod 711 "$work"
  export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_SYSTEM=/dev/null npm_config_update_notifier=false
  local repo=$work/lib
  mkdir -p "$repo/deps" "$repo/lib" "$repo/test" "$work/pkgs"
  for p in $(seq 1 "$packages"); do
    local d=$work/pkgs/dep$p
    mkdir -p "$d/lib"
    printf '{"name":"dep%s","version":"1.0.0","main":"index.js"}\n' "$p" > "$d/package.json"
    awk -v d="$d/lib" 'BEGIN { for (i = 1; i <= 499; i++) { f = d "/m" i ".js"; printf "module.exports = %d;\n", i > f; close(f) } }'
    echo "module.exports = require('./lib/m1.js') + $p;" > "$d/index.js"
    (cd "$d" && npm pack --silent --pack-destination "$repo/deps" > /dev/null)
  done
  {
    printf '{"name":"lib","version":"1.0.0","private":true,"dependencies":{'
    for p in $(seq 1 "$packages"); do [ "$p" = 1 ] || printf ','; printf '"dep%s":"file:deps/dep%s-1.0.0.tgz"' "$p" "$p"; done
    printf '}}\n'
  } > "$repo/package.json"
  for i in $(seq 1 "$src"); do
    printf 'var dep = require("dep%s");\nvar a%s = dep + 1;\nfunction f%s(x) { var y = x * 2; for (var i = 0; i < 3; i++) { y += i; } return y + a%s; }\nmodule.exports = f%s;\n' \
      "$(( (i - 1) % packages + 1 ))" "$i" "$i" "$i" "$i" > "$repo/lib/f$i.js"
  done
  cat > "$repo/test/run.js" <<'JS'
// Loads every module (through node_modules) and checks each result: the suite of the scenario.
const fs = require("fs"), path = require("path");
let n = 0;
for (const f of fs.readdirSync(path.join(__dirname, "../lib"))) {
  const fn = require(path.join(__dirname, "../lib", f));
  if (typeof fn(1) !== "number") throw new Error(f);
  n++;
}
console.log(`${n} passing`);
JS
  printf 'node_modules/\n' > "$repo/.gitignore"
  # npm's cache starts empty for both sides (fanout's setup has a private HOME): same work.
  (cd "$repo" && npm_config_cache="$work/npm-make" npm install --offline --no-audit --no-fund --silent > /dev/null && rm -rf node_modules)
  git -C "$repo" init --quiet --initial-branch=main
  git -C "$repo" config user.name bench; git -C "$repo" config user.email bench@example.invalid
  git -C "$repo" add -A && git -C "$repo" commit --quiet -m base
  cp -a "$repo" "$work/loop"
  local per=$(( (src + tasks - 1) / tasks ))
  printf '#!/bin/sh\n# The codemod: var -> let in the files the prompt names.\nfor f in $FANOUT_PROMPT; do sed -i "s/\\bvar\\b/let/g" "$f"; done\n' > "$work/codemod.sh"
  chmod 755 "$work/codemod.sh"
  {
    printf '{"agents":{"c":{"protocol":"exec","command":"%s"}},' "$work/codemod.sh"
    printf '"defaults":{"agent":"c","verify":["node","test/run.js"],'
    printf '"setup":{"run":"npm ci --offline --no-audit --no-fund","inputs":["package.json","package-lock.json","deps/*"],"once":%s}},' "${ONCE:-true}"
    printf '"integrate":{"verify":["node","test/run.js"]},"tasks":['
    for t in $(seq 1 "$tasks"); do
      [ "$t" = 1 ] || printf ','
      local list=""
      for i in $(seq $(( (t - 1) * per + 1 )) $(( t * per ))); do [ "$i" -le "$src" ] && list="$list lib/f$i.js"; done
      printf '{"id":"t%s","prompt":"%s","paths":["lib/*.js"]}' "$t" "${list# }"
    done
    printf ']}\n'
  } > "$work/tasks.json"
  mkdir -p "$work/tmp"
  local t0 t1 t2 t3 rc=0
  t0=$(now)
  TMPDIR="$work/tmp" "$fanout" run --repo "$repo" --tasks "$work/tasks.json" --jobs "$jobs" --no-readback \
    --workspace "$mode" --report "$work/report.json" > "$work/fanout.out" 2> "$work/fanout.err" || rc=$?
  t1=$(now)
  # With ONCE=false the gate has no setup (a per-workspace setup gives it none): it fails.
  [ "$rc" = 0 ] || [ "${ONCE:-true}" = false ] || { cat "$work/fanout.out" "$work/fanout.err" >&2; echo "bench: fanout exited $rc" >&2; return 1; }
  # The shell loop: one checkout, one install, each codemod with its test and commit, the tests.
  t2=$(now)
  (
    cd "$work/loop"
    git checkout --quiet -b loop
    npm_config_cache="$work/npm-loop" npm ci --offline --no-audit --no-fund --silent > /dev/null
    for t in $(seq 1 "$tasks"); do
      for i in $(seq $(( (t - 1) * per + 1 )) $(( t * per ))); do
        [ "$i" -le "$src" ] && sed -i 's/\bvar\b/let/g' "lib/f$i.js"
      done
      node test/run.js > /dev/null
      git commit --quiet -am "t$t"
    done
    node test/run.js > /dev/null
  )
  t3=$(now)
  local f_ms=$(( (t1 - t0) / 1000000 )) l_ms=$(( (t3 - t2) / 1000000 ))
  local run_dir; run_dir=$(grep -o '"run_dir": *"[^"]*"' "$work/report.json" | sed 's/.*: *"//; s/"$//')
  local ws; ws=$(grep -m1 'workspaces:' "$work/fanout.err" | sed 's/^fanout: workspaces: //')
  echo "setup scenario: tasks=$tasks jobs=$jobs packages=$packages ($(find "$work/loop/node_modules" | wc -l) files in node_modules) src=$src workspace=$mode ($ws)"
  python3 - "$run_dir" "$f_ms" "$l_ms" <<'PY'
import json, sys, glob, os
run_dir, f_ms, l_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Task phases from the run's events: the time from one phase event of a task to its next.
phases, last, gate_ms, merged_at = {}, {}, 0, None
started_at = verified_at = ended_at = 0
for line in open(os.path.join(run_dir, "run-events.jsonl")):
    e = json.loads(line)
    t, kind = e["t_ms"], e.get("event")
    if kind == "phase":
        task, p = e["task"], e["phase"]["phase"]
        if task in last:
            q, since = last[task]
            phases[q] = phases.get(q, 0) + t - since
        last[task] = (p, t)
    elif kind == "merged":
        merged_at = t
    elif kind == "integration_verified":
        gate_ms, verified_at = t - (merged_at or t), t
    elif kind == "run_started":
        started_at = t
    elif kind == "run_ended":
        ended_at = t
for drop in ("ready", "ended", "waiting_for_dependencies"):
    phases.pop(drop, None)
made = [l for l in glob.glob(os.path.join(run_dir, "logs", "setup-*.log")) if os.path.basename(l).count(".") == 1]
took = []
for l in made:
    for line in open(l, errors="replace"):
        if line.startswith("fanout: setup layer") and " made in " in line:
            took.append(int(line.rsplit(" made in ", 1)[1].split()[0]))
copies = []
for l in glob.glob(os.path.join(run_dir, "logs", "*.setup.log")):
    for line in open(l, errors="replace"):
        if " copied into " in line:
            copies.append(int(line.rsplit(" in ", 1)[1].split()[0]))
print(f"fanout: {f_ms} ms; shell loop: {l_ms} ms")
print(f"setup layers made: {len(made)} ({', '.join(f'{x} ms' for x in took)})"
      + (f"; layer copies: {len(copies)}, median {sorted(copies)[len(copies)//2]} ms" if copies else ""))
print("task time by phase (summed over tasks, ms): " + ", ".join(f"{k} {v}" for k, v in sorted(phases.items(), key=lambda kv: -kv[1])))
print(f"integration gate (after the last merge: checkout, include, layer, verify): {gate_ms} ms")
print(f"run: {ended_at - started_at} ms from its first event to its last, of which {ended_at - verified_at} ms after the gate"
      f" (branches handed over, workspaces and the layer removed); {f_ms - (ended_at - started_at)} ms before and after (plan, probe, exit)")
target = 1.5 * l_ms + gate_ms
print(f"target 1.5 x loop + gate: {target:.0f} ms; fanout/loop = {f_ms / l_ms:.2f}; {'MET' if f_ms <= target else 'MISSED'}")
PY
}

# The `codex` scenario (see above).
bench_codex() {
  local tasks=${1:-6} jobs=${2:-2} repeat=${REPEAT:-5}
  local codex=${CODEX:-$root/.agents/codex-0.169.0/node_modules/.bin/codex}
  [ -x "$codex" ] || { echo "bench: no Codex at $codex (scripts/install-agents.sh)" >&2; return 1; }
  work=$(mktemp -d)
  chmod 711 "$work"
  python3 "$root/scripts/model_server.py" "$work/port" &
  local server=$!
  [ "${KEEP:-0}" = 1 ] && echo "bench: keeping $work" >&2
  trap 'kill '"$server"' 2>/dev/null; [ "${KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
  export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_SYSTEM=/dev/null
  export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
  export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
  while [ ! -s "$work/port" ]; do sleep 0.05; done
  mkdir -p "$work/home" "$work/repo" "$work/tmp"
  # The tests' provider (tests/support/model_server.rs, codex_config_for_url).
  printf 'model = "scripted-model"\nmodel_provider = "scripted"\n\n[model_providers.scripted]\nname = "scripted"\nbase_url = "http://127.0.0.1:%s/v1"\nwire_api = "responses"\nrequest_max_retries = 0\nstream_max_retries = 0\n' \
    "$(cat "$work/port")" > "$work/home/config.toml"
  echo hello > "$work/repo/README.md"
  git -C "$work/repo" init -q -b main && git -C "$work/repo" add -A && git -C "$work/repo" commit -qm base
  local prompt
  prompt=$(printf "Write the marker file.\nCMD: printf 'edited by task 1\\\\n' > file1.txt")
  python3 - "$work/one.json" "$work/many.json" "$tasks" <<'PY'
import json, sys
def task(i):
    return {"id": f"t{i}", "prompt": f"Write the marker file.\nCMD: printf 'edited by task {i}\\n' > file{i}.txt",
            "paths": [f"file{i}.txt"]}
json.dump({"version": 1, "tasks": [task(1)]}, open(sys.argv[1], "w"))
json.dump({"version": 1, "tasks": [task(i) for i in range(1, int(sys.argv[3]) + 1)]}, open(sys.argv[2], "w"))
PY
  run_fanout() { # tasks-file jobs report
    TMPDIR="$work/tmp" FANOUT_CODEX_BIN="$codex" CODEX_HOME="$work/home" "$fanout" run --repo "$work/repo" \
      --tasks "$1" --jobs "$2" --no-readback --quiet --report "$3" > "$work/fanout.out" 2> "$work/fanout.err" ||
      { cat "$work/fanout.out" "$work/fanout.err" >&2; echo "bench: fanout failed" >&2; return 1; }
  }
  local i t0 t1
  : > "$work/f.ms"; : > "$work/c.ms"
  for i in $(seq 1 "$repeat"); do
    t0=$(now); run_fanout "$work/one.json" 1 "$work/one-report.json"; t1=$(now)
    echo $(( (t1 - t0) / 1000000 )) >> "$work/f.ms"
    grep -q '"status": *"merged"' "$work/one-report.json" || { echo "bench: the fanout task did not merge" >&2; return 1; }
    rm -rf "$work/plain"; git clone -q "$work/repo" "$work/plain"
    t0=$(now)
    CODEX_HOME="$work/home" "$codex" exec -s workspace-write -C "$work/plain" "$prompt" > "$work/exec.out" 2>&1 ||
      { cat "$work/exec.out" >&2; echo "bench: codex exec failed" >&2; return 1; }
    # What fanout does besides: the change committed.
    git -C "$work/plain" add -A && git -C "$work/plain" commit -qm t1
    t1=$(now)
    echo $(( (t1 - t0) / 1000000 )) >> "$work/c.ms"
    [ -f "$work/plain/file1.txt" ] || { echo "bench: codex exec did not edit" >&2; return 1; }
  done
  local f_ms c_ms
  f_ms=$(sort -n "$work/f.ms" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  c_ms=$(sort -n "$work/c.ms" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  echo "codex scenario: $("$codex" --version 2>/dev/null | head -1), scripted model, median of $repeat"
  echo "one task through fanout run (sandbox, app-server, collect, merge): $f_ms ms; codex exec + git commit: $c_ms ms"
  awk -v f="$f_ms" -v c="$c_ms" 'BEGIN { printf "ratio fanout/codex exec: %.2f\nratio_vs_codex_exec=%.2f\n", f / c, c / f }'
  t0=$(now); run_fanout "$work/many.json" "$jobs" "$work/many-report.json"; t1=$(now)
  python3 - "$work/many-report.json" "$tasks" "$jobs" $(( (t1 - t0) / 1000000 )) <<'PY'
import json, os, sys
report, tasks, jobs, ms = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], int(sys.argv[4])
last, gaps = {}, []
for line in open(os.path.join(report["run_dir"], "run-events.jsonl")):
    e = json.loads(line)
    if e.get("event") == "agent_event":
        last[e["task"]] = e["t_ms"]
    elif e.get("event") == "committed" and e["task"] in last:
        gaps.append(e["t_ms"] - last[e["task"]])
gaps.sort()
merged = sum(t["status"] == "merged" for t in report["tasks"])
print(f"{tasks} tasks at --jobs {jobs}: {ms} ms, {merged} merged; agent's last event -> committed per task:"
      f" median {gaps[len(gaps) // 2] if gaps else 0} ms, max {gaps[-1] if gaps else 0} ms")
PY
}

set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -z "${FANOUT:-}" ]; then
  cargo build --quiet --release --bins
fi
fanout="${FANOUT:-$root/target/release/fanout}"
if [ "${SCENARIO:-}" = setup ]; then
  bench_setup "$@"
  exit $?
fi
if [ "${SCENARIO:-}" = shards ]; then
  bench_shards "$@"
  exit $?
fi
if [ "${SCENARIO:-}" = codex ]; then
  bench_codex "$@"
  exit $?
fi
# SCENARIO=reset: the worktree pool's reset (docs/workspaces.md) at each size of FILES_LIST
# (default 5 000 and 50 000 files): TASKS tasks, --jobs JOBS, in worktree mode, once with every
# reset the full one (FANOUT_WORKTREE_RESET=full: the sandboxed git reset and the check of
# every file) and once as fanout does it (the fast reset, O(change)) with the plain-git
# baseline in the same run and the ratio. Each prints ms per task and the setup phase (the
# reset) per task.
# Usage: SCENARIO=reset [FANOUT=path] [FILES_LIST="5000 50000"] scripts/bench.sh [TASKS] [JOBS]
if [ "${SCENARIO:-}" = reset ]; then
  for n in ${FILES_LIST:-5000 50000}; do
    echo "== $n files: every reset the full one"
    SCENARIO='' FANOUT="$fanout" BASELINE=0 NETNS=0 PROXY=0 FANOUT_WORKTREE_RESET=full \
      "$0" "$n" "${1:-20}" "${2:-2}" worktree
    echo "== $n files: the fast reset, and the plain-git baseline"
    SCENARIO='' FANOUT="$fanout" NETNS=0 PROXY=0 "$0" "$n" "${1:-20}" "${2:-2}" worktree
  done
  exit 0
fi
files=${1:-5000} tasks=${2:-20} jobs=${3:-4} mode=${4:-auto}
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
( set +eo pipefail; peak=0; mpeak=0; while [ -d "$work" ] && [ ! -e "$work/done" ]; do
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
# Worktree mode: each task's setup phase (no setup command here: the reset of a reused worktree,
# or recording a fresh one) and workspace phase (the checkout or taking a parked one), from the
# run's events: median and max per task.
if [ "$mode" = worktree ]; then
  run_dir=$(grep -o '"run_dir": *"[^"]*"' "$work/report.json" | sed 's/.*: *"//; s/"$//')
  reset_line=$(python3 - "$run_dir" <<'PY'
import json, os, sys
last, took = {}, {}
for line in open(os.path.join(sys.argv[1], "run-events.jsonl")):
    e = json.loads(line)
    if e.get("event") != "phase":
        continue
    task, p, t = e["task"], e["phase"]["phase"], e["t_ms"]
    if task in last:
        q, since = last[task]
        took.setdefault(q, []).append(t - since)
    last[task] = (p, t)
out = []
for q in ("workspace", "setup"):
    v = sorted(took.get(q, [0]))
    out.append(f"{q} phase median {v[len(v) // 2]} ms, max {v[-1]} ms")
print("per task: " + "; ".join(out))
PY
  ) || reset_line="per task: phases not read"
fi

# Where fanout's time went, from the run's events: its start and its first workspace (plan,
# base, the shared lower checkout: once per run, grows with the repository), the tasks after it
# per task (the per-task overhead at --jobs JOBS, agent included), the integration per commit
# and the reports.
split_line=$(python3 - "$work/report.json" <<'PY'
import json, os, sys
report = json.load(open(sys.argv[1]))
t = {}
for line in open(os.path.join(report["run_dir"], "run-events.jsonl")):
    e = json.loads(line)
    k, ms = e.get("event"), e["t_ms"]
    t.setdefault(k + ":first", ms)
    t[k + ":last"] = ms
n = max(1, len(report["tasks"]))
start = t["task_started:first"] - t["run_started:first"]
lower = t["workspace_ready:first"] - t["task_started:first"]
phase = t["task_ended:last"] - t["workspace_ready:first"]
merged = t.get("merged:last", t["integration_started:first"]) - t["integration_started:first"]
end = t["run_ended:last"] - t.get("merged:last", t["integration_started:first"])
print(f"split: run start {start} ms and the first workspace {lower} ms (once per run); "
      f"then the tasks {phase} ms, {phase / n:.1f} ms per task; integration {merged} ms, "
      f"{merged / n:.2f} ms per commit; reports {end} ms")
PY
) || split_line="split: events not read"

[ "${NETNS:-1}" = 0 ] || netns_cost
# The egress proxy's added latency per new connection (CONNECT through the forwarder in the
# namespace and the proxy, one line echoed) against a direct connection: median and p99.
# PROXY=0 skips (it builds the integration tests in release mode).
if [ "${PROXY:-1}" != 0 ]; then
  cargo test --quiet --release --features test-hooks --test it egress::proxy_latency -- --ignored --nocapture 2>/dev/null |
    grep '^egress proxy' || echo "egress proxy latency: not measured (the test failed)"
  # The model route, per request, to a plain and to a TLS upstream (a test CA).
  cargo test --quiet --release --features test-hooks --test it egress::model_route_latency -- --ignored --nocapture 2>/dev/null |
    grep '^egress model route' || echo "egress model route latency: not measured (the test failed)"
fi

# BASELINE=0 measures fanout alone (the plain-git side of a 50 000-file run takes ~50 s a task
# here); no ratio is printed then.
if [ "${BASELINE:-1}" = 0 ]; then
  f_ms=$(( (t1 - t0) / 1000000 ))
  echo "files=$files tasks=$tasks jobs=$jobs workspace=$mode ($ws)"
  [ -z "${reset_line:-}" ] || echo "$reset_line"
  echo "$split_line"
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
[ -z "${reset_line:-}" ] || echo "$reset_line"
echo "$split_line"
awk -v f="$f_ms" -v t="$tasks" -v rss="$(cat "$work/rss")" -v disk="$(cat "$work/disk.peak" 2>/dev/null || echo 0)" \
  -v mem="$(cat "$work/mem.peak" 2>/dev/null || echo 0)" \
  'BEGIN { printf "fanout (sandboxed, collect, verify, in-memory merge): %d ms, %.1f ms/task, peak RSS %.0f MB, run folder peak disk %.0f MB, lowers in memory peak %.0f MB\n", f, f / t, rss / 1024, disk / 1024, mem / 1024 }'
awk -v b="$b_ms" -v t="$tasks" 'BEGIN { printf "plain git baseline (worktree add, sed, commit, cherry-pick): %d ms, %.1f ms/task\n", b, b / t }'
awk -v f="$f_ms" -v b="$b_ms" 'BEGIN { printf "ratio fanout/baseline: %.3f\nratio_vs_git=%.2f\n", f / b, b / f }'
