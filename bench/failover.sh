#!/usr/bin/env bash
# A trainer killed mid-job on a real local cluster (issue 7): the coordinator and 4 worker
# daemons as processes, the Fashion-MNIST MLP job submitted over gRPC, in one run:
#   clean    recovery.mode partial, nothing killed (the reference)
#   partial  the same job; rank KILL_RANK gets SIGKILL at step KILL_STEP (debug.kill: a real
#            kill -9), the coordinator regroups, the survivors keep their state
# Prints a table and writes bench/results/failover.csv: test accuracy and its delta to the clean
# run, wall time, recoveries, generation, the survivors' steps rolled back (rank 0's summary)
# and the time the regroup took, plus rank 0's regroup log line.
#   bench/failover.sh
#   KILL_RANK=1 KILL_STEP=200 EPOCHS=1 bench/failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TERN_BUILD_DIR:-build}/bin
JOB=${JOB:-configs/jobs/fmnist-mlp.yaml}
KILL_RANK=${KILL_RANK:-2}
KILL_STEP=${KILL_STEP:-300}
EPOCHS=${EPOCHS:-}
PORT=${PORT:-17171}
OUT=bench/results
mkdir -p "$OUT"
CSV=$OUT/failover${SUFFIX:-}.csv
work=$(mktemp -d /tmp/tern-failover-XXXX)
cluster=$work/cluster.yaml
cat > "$cluster" <<EOF
name: failover
coordinator: {listen: 127.0.0.1:$PORT, heartbeat_ms: 500, lease_ms: 3000}
state_dir: $work/state
regions:
  - {name: local, workers: 4, slots: 1}
EOF
"$BIN/tern" cluster up "$cluster" >/dev/null
trap '"$BIN/tern" cluster down "$cluster" >/dev/null 2>&1 || true' EXIT
extra=()
[ -n "$EPOCHS" ] && extra=(--set train.epochs="$EPOCHS")

run() {  # name, extra --set args...
  local name=$1; shift
  local id
  id=$("$BIN/tern" submit "$JOB" --cluster "$cluster" --json --set recovery.mode=partial "${extra[@]}" "$@" |
       /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
  "$BIN/tern" status "$id" --cluster "$cluster" --watch --interval 2 >/dev/null 2>&1 || true
  "$BIN/tern" status "$id" --cluster "$cluster" --json > "$work/$name.json"
  "$BIN/tern" logs "$id" --rank 0 --cluster "$cluster" > "$work/$name.rank0.log" 2>/dev/null || true
  /usr/bin/python3 - "$name" "$work/$name.json" "$work/$name.rank0.log" <<'PY'
import json, sys
name, path, log = sys.argv[1:4]
s = json.load(open(path))
if s.get("state") != "SUCCEEDED":
    sys.exit(f"{name}: job ended {s.get('state')}: {s.get('reason', '')}")
m = s.get("summary", {})
regroup = next((l.strip() for l in open(log) if "regrouped at generation" in l), "")
regroup = regroup.split("] ")[-1].replace(",", ";")
print(",".join(str(x) for x in [name, s["test_accuracy"], round(m.get("wall_s", 0), 1), int(s.get("recoveries", 0)),
      int(s.get("generation", 0)), int(m.get("steps_rolled_back", 0)), round(m.get("recovery_s", 0), 2),
      int(m.get("steps", 0)), regroup]))
PY
  echo "  $name done" >&2
}

{
  echo "config,test_accuracy,wall_s,recoveries,generation,steps_rolled_back,recovery_s,steps,rank0_regroup_log"
  run clean
  run partial --set debug.kill.rank="$KILL_RANK" --set debug.kill.at_step="$KILL_STEP"
} > "$CSV.tmp"
/usr/bin/python3 - "$CSV.tmp" "$CSV" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ref = float(rows[0]["test_accuracy"])
cols = list(rows[0].keys())
cols.insert(2, "acc_delta_pts")
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    for r in rows:
        r["acc_delta_pts"] = f"{(float(r['test_accuracy']) - ref) * 100:+.2f}"
        w.writerow(r)
PY
rm -f "$CSV.tmp"
echo "Failover: $JOB on a local cluster of 4 daemons (1 rank each), recovery.mode partial;"
echo "the partial run's rank $KILL_RANK gets SIGKILL at step $KILL_STEP (debug.kill), $(nproc) cores"
cut -d, -f1-9 "$CSV" | column -t -s,
echo "rank 0 (a survivor) on the regroup:"
cut -d, -f10- "$CSV" | tail -n +2 | grep -v '^$' || true
echo "logs and status: $work"
