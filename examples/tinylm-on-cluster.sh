#!/usr/bin/env bash
# The tiny language model through the coordinator (tern submit), on a local cluster of 4 worker
# daemons. A submitted spec's files must be absolute paths inside the cluster's data_dirs (the
# workers read them; the job directory is theirs), so this writes a cluster file whose data_dirs
# hold this checkout's data/ and examples/out/, brings it up, submits configs/jobs/tinylm.yaml
# with absolute paths, watches it to the end and brings the cluster down.
#   /usr/bin/python3 examples/export_tinylm.py && scripts/make-tokens.sh
#   examples/tinylm-on-cluster.sh                      # extra --set flags are passed to submit
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
ROOT=$PWD
for f in examples/out/tinylm.pt data/tinylm/train.u16 data/tinylm/test.u16; do
  [ -f "$f" ] || { echo "missing $f: run examples/export_tinylm.py and scripts/make-tokens.sh first" >&2; exit 2; }
done
mkdir -p .tern
CLUSTER=.tern/tinylm-cluster.yaml
cat > "$CLUSTER" <<YAML
name: tinylm-local
coordinator:
  listen: 127.0.0.1:${TINYLM_PORT:-7171}
  heartbeat_ms: 500
  lease_ms: 3000
state_dir: .tern/tinylm-local
regions:
  - name: local
    workers: 4
    slots: 1
network:
  emulate: false
data_dirs: [/usr/share/datasets, $ROOT/data, $ROOT/examples/out]
YAML
"$BUILD/bin/tern" cluster up "$CLUSTER"
trap '"$BUILD/bin/tern" cluster down "$CLUSTER"' EXIT
"$BUILD/bin/tern" submit configs/jobs/tinylm.yaml --cluster "$CLUSTER" \
  --set model.path="$ROOT/examples/out/tinylm.pt" \
  --set data.path="$ROOT/data/tinylm/train.u16" --set data.test_path="$ROOT/data/tinylm/test.u16" \
  "$@" --watch
