#!/usr/bin/env bash
# Control-plane load test: for each N, a fresh coordinator and N simulated workers (tern-loadgen)
# heartbeating at 1 Hz, plus M submitted jobs; reports heartbeat RPC latency p50/p99 and the
# coordinator's CPU and memory. Everything runs on loopback on this machine.
#   bench/control_plane.sh                   # N = 100 1000 10000, 20 s each
#   NS="100 1000" DURATION=10 bench/control_plane.sh
#   JOBS=500 CSV=/tmp/x.csv TERN_BUILD_DIR=build-old bench/control_plane.sh   # another build, another CSV
# Registrations and submits are journaled (acknowledged once on disk), so registers_per_s and
# submits_per_s measure the journal's group commit (src/coordinator/journal_writer.h).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
LOADGEN=${LOADGEN:-$BUILD/bin/tern-loadgen}
NS=${NS:-"100 1000 10000"}
DURATION=${DURATION:-20}
JOBS=${JOBS:-20}
THREADS=${THREADS:-8}
OUT=bench/results
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'kill $(cat "$TMP"/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$TMP"' EXIT
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CSV=${CSV:-$OUT/control_plane.csv}
echo "workers,heartbeats_per_s,target_per_s,p50_ms,p99_ms,max_ms,errors,late,coord_cpu_pct,coord_rss_mb,register_s,registers_per_s,jobs,submit_s,submits_per_s" > "$CSV"
HZ=$(getconf CLK_TCK)

for N in $NS; do
  rm -rf "$TMP/state"
  cat > "$TMP/cluster.yaml" <<YAML
name: load
coordinator: {listen: 127.0.0.1:$PORT, heartbeat_ms: 1000, lease_ms: 30000, max_queued_jobs: 100000,
              rate_limit: {per_s: 1000000, burst: 1000000}}
state_dir: $TMP/state
regions: [{name: region-0, workers: 1}, {name: region-1, workers: 1}, {name: region-2, workers: 1},
          {name: region-3, workers: 1}]  # counts only matter to `tern cluster up`
YAML
  "$BUILD/bin/tern" coordinator --config "$TMP/cluster.yaml" > "$TMP/coord.log" 2>&1 &
  echo $! > "$TMP/pid"
  PID=$(cat "$TMP/pid")
  for _ in $(seq 50); do "$BUILD/bin/tern" workers --coordinator 127.0.0.1:$PORT --json >/dev/null 2>&1 && break; sleep 0.2; done
  t0=$(awk '{print $14+$15}' /proc/$PID/stat); s0=$(date +%s.%N)
  R=$("$LOADGEN" --coordinator 127.0.0.1:$PORT --workers "$N" --jobs "$JOBS" --threads "$THREADS" --duration "$DURATION" || true)
  t1=$(awk '{print $14+$15}' /proc/$PID/stat); s1=$(date +%s.%N)
  RSS=$(awk '/VmRSS/ {print $2/1024}' /proc/$PID/status)
  CPU=$(awk -v a="$t0" -v b="$t1" -v s="$s0" -v e="$s1" -v hz="$HZ" 'BEGIN {printf "%.0f", (b-a)/hz/(e-s)*100}')
  kill "$PID"; wait "$PID" 2>/dev/null || true
  echo "$R" | /usr/bin/python3 -c "
import json,sys
r=json.loads(sys.stdin.read())
print(','.join(str(x) for x in [r['workers'], round(r['heartbeats_per_s'],1), r['target_per_s'], round(r['p50_ms'],2), round(r['p99_ms'],2), round(r['max_ms'],1), r['errors'], r['late'], '$CPU', round($RSS,1), round(r['register_s'],2), round(r['registered']/max(r['register_s'],1e-9)), r['jobs_submitted'], round(r['submit_s'],2), round(r['jobs_submitted']/max(r['submit_s'],1e-9))]))" >> "$CSV"
  echo "N=$N done" >&2
done
echo "control plane load: heartbeats at 1 Hz per worker, $JOBS jobs, $THREADS client threads, ${DURATION}s, $(nproc) cores (client and coordinator share them)"
column -t -s, "$CSV"
echo "csv: $CSV"
