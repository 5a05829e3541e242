#!/usr/bin/env bash
# The main job on the embedded local cluster: brings up configs/cluster/local.yaml (a
# coordinator and 4 worker daemons as local processes), submits configs/jobs/fmnist-mlp.yaml,
# watches it to the end with a live progress bar, prints its status, and tears the cluster
# down again (also on failure or Ctrl-C). Exits 0 only when the job SUCCEEDED.
#   scripts/main-job.sh [JOB.yaml] [CLUSTER.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TERN_BUILD_DIR:-build}/bin
JOB=${1:-configs/jobs/fmnist-mlp.yaml}
CLUSTER=${2:-configs/cluster/local.yaml}
"$BIN/tern" cluster up "$CLUSTER"
trap '"$BIN/tern" cluster down "$CLUSTER"' EXIT
"$BIN/tern" submit "$JOB" --cluster "$CLUSTER" --watch
