#!/usr/bin/env bash
# Queue a sharded fanout run on Slurm: the shards as an array job, the combine as a job that
# starts after every array task ended (`--dependency=afterany`). Prints both job ids.
#   REPO=/shared/checkout BUNDLES=/shared/bundles/$RUN_ID RUN_ID=nightly-42 \
#     examples/shards/slurm/submit.sh [--shards N] [--wait]
# BASE defaults to the checkout's HEAD, resolved once here so every shard starts from it.
# --wait blocks until the combine ended and exits with its exit code.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shards=8
wait=()
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards="$2"; shift 2 ;;
    --wait) wait=(--wait); shift ;;
    *) echo "submit.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
: "${REPO:?set REPO to the checkout (a path every node can reach)}"
: "${RUN_ID:?set RUN_ID}"
: "${BUNDLES:?set BUNDLES}"
BASE="${BASE:-$(git -C "$REPO" rev-parse --verify HEAD^{commit})}"
export REPO RUN_ID BUNDLES BASE
mkdir -p "$BUNDLES"

array=$(sbatch --parsable --export=ALL --array="0-$((shards - 1))" \
  --chdir="$BUNDLES" "$here/shards.sbatch")
array="${array%%;*}"
echo "shards: job $array (array 0-$((shards - 1)))"
set +e
combine=$(sbatch --parsable --export=ALL --dependency="afterany:$array" \
  --chdir="$BUNDLES" "${wait[@]}" "$here/combine.sbatch")
code=$?
set -e
echo "combine: job ${combine%%;*}"
exit "$code"
