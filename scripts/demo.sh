#!/usr/bin/env bash
# Builds fanout, creates a demo repository (demo/repo, git-ignored) with 50 source files,
# writes a 20-task codemod task file for the `exec` agent, and runs it. Needs no API key.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --quiet --bins
demo="$root/demo"
repo="$demo/repo"
rm -rf "$demo"
mkdir -p "$repo/src"
cd "$repo"
git init --quiet --initial-branch=main
git config user.name "fanout demo"
git config user.email "demo@example.invalid"
for i in $(seq -w 1 50); do
  cat > "src/module_$i.js" <<JS
// module $i
import { fetchUser } from "./api.js";

export async function load$i(id) {
  const user = await fetchUser(id);
  return fetchUser(user.managerId);
}
JS
done
cat > src/api.js <<'JS'
export async function loadUser(id) { return { id, managerId: id + 1 }; }
/** @deprecated use loadUser */
export const fetchUser = loadUser;
JS
git add -A && git commit --quiet -m "demo: initial"

# 20 tasks: each renames the deprecated fetchUser to loadUser in one module; the verify
# command checks that no use is left, the path scope that nothing else was touched.
{
  printf '{\n  "version": 1,\n  "defaults": { "agent": "rename", "timeout_secs": 60 },\n'
  printf '  "agents": { "rename": { "protocol": "exec", "command": "%s" } },\n' "$root/examples/codemod/rename-api.sh"
  printf '  "tasks": [\n'
  for i in $(seq -w 1 20); do
    sep=","; [ "$i" = 20 ] && sep=""
    printf '    { "id": "module-%s", "prompt": "rename fetchUser to loadUser in src/module_%s.js", "paths": ["src/module_%s.js"],\n      "verify": "! grep -n fetchUser src/module_%s.js" }%s\n' "$i" "$i" "$i" "$i" "$sep"
  done
  printf '  ]\n}\n'
} > "$demo/tasks.json"

echo "demo: repository $repo, task file $demo/tasks.json" >&2
"$root/target/debug/fanout" run --repo "$repo" --tasks "$demo/tasks.json" --jobs 4 --report "$demo/report.json" --no-readback
status=$?
echo
echo "demo: integration branch:" >&2
git -C "$repo" branch --list 'fanout/*/merged'
git -C "$repo" log --oneline -3 "$(git -C "$repo" branch --list 'fanout/*/merged' --format='%(refname:short)' | tail -1)"
exit $status
