#!/bin/sh
# A deterministic codemod agent for fanout's `exec` protocol.
# The prompt (on stdin, and in $FANOUT_PROMPT) names one file and two identifiers:
#   rename OLD to NEW in PATH
# It renames the identifier OLD to NEW everywhere in that file (calls and imports), inside
# the task's worktree.
set -eu
prompt=${FANOUT_PROMPT:-$(cat)}
set -- $prompt
[ "$1" = rename ] && [ "$3" = to ] && [ "$5" = in ] || {
  echo "rename-api: expected 'rename OLD to NEW in PATH', got: $prompt" >&2
  exit 2
}
old=$2 new=$4 file=$6
[ -f "$file" ] || { echo "rename-api: no such file: $file" >&2; exit 1; }
sed -i "s/\b$old\b/$new/g" "$file"
echo "renamed $old to $new in $file"
