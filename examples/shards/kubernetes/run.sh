#!/usr/bin/env bash
# Run a sharded fanout job on Kubernetes: the bundles' volume, the Indexed Job of shards, and
# once it ended (complete or failed: a failed index's tasks are reported `missing` by the
# combine) the combine Job. RUN_ID and BASE are filled in here, once for every pod.
#   RUN_ID=nightly-42 BASE=$(git rev-parse HEAD) examples/shards/kubernetes/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${RUN_ID:?set RUN_ID}"
: "${BASE:?set BASE to a full commit id}"
fill() { sed -e "s/nightly-REPLACE-ME/$RUN_ID/" -e "s/REPLACE-WITH-A-FULL-COMMIT-ID/$BASE/" "$1"; }

kubectl apply -f "$here/bundles-pvc.yaml"
kubectl delete job fanout-shards fanout-combine --ignore-not-found
fill "$here/shards-job.yaml" | kubectl create -f -
# A Job ends Complete, or Failed (for the Indexed Job: when an index used up its retries).
ended() {
  until kubectl get job "$1" -o jsonpath='{.status.conditions[*].type}' | grep -Eq 'Complete|Failed'; do
    sleep 10
  done
  kubectl get job "$1" -o jsonpath='{.status.conditions[*].type}'
}
ended fanout-shards
fill "$here/combine-job.yaml" | kubectl create -f -
state="$(ended fanout-combine)"
kubectl logs job/fanout-combine
case "$state" in *Complete*) exit 0 ;; *) exit 1 ;; esac
