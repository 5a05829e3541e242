#!/usr/bin/env bash
# Real bandwidth against the WAN model (issue 28). Four worker hosts in network namespaces
# (scripts/netns-cluster.sh), each host's link shaped with tc tbf to RATE Mbit/s in both
# directions, run
#   ssgd  the MLP (784-512-256-10, 2.14 MB of fp32 gradients) on synthetic data, SSGD_STEPS
#         steps: one ring all-reduce of every gradient per step
#   dts   the same model with sync.strategy dts (delay 2, period 8), DTS_STEPS steps
# and the same jobs on a second cluster of namespaces with unshaped links and the trainers'
# in-process WAN model at the same bandwidth instead (network.emulate true, one-way latency
# LAT_MS, the veth's own RTT/2). Per rate it prints and records
#   - the all-reduce time: the smallest over ranks of (seconds blocked in the all-reduce) /
#     steps, i.e. the rank that arrived last and waited for the transfer only: measured on
#     shaped links, measured under emulation, and the model's formula
#     2 (N-1) (latency + (S/N) / (0.936 B)) with S the bytes one rank's reducer sends per step
#     divided by 2 (N-1)/N (src/comm/wan_communicator.h); ratios to the shaped measurement
#   - the DTS job's throughput (samples/s, rank 0's summary) shaped vs emulated.
# Each setting runs REPS times (default 3), shaped and emulated jobs interleaved; medians.
# Writes bench/results/netns-bandwidth${SUFFIX}.csv and .md.
#   bench/netns-bandwidth.sh                     # RATES="100"
#   RATES="50 100 200" SSGD_STEPS=30 bench/netns-bandwidth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
NC=$REPO/scripts/netns-cluster.sh
export TERN_BIN=${TERN_BIN:-$REPO/${TERN_BUILD_DIR:-build}/bin}
RATES=${RATES:-100}
SSGD_STEPS=${SSGD_STEPS:-30}
DTS_STEPS=${DTS_STEPS:-64}
REPS=${REPS:-3}
# The daemons' niceness (their trainers run 10 above it): -10 puts the trainers at 0, ahead of
# niced builds on a shared machine, whose CPU stalls otherwise idle the shaped links (a gloo
# thread not scheduled is a link not sending; the emulated wait hides such stalls).
NICE=${NICE:--10}
LAT_MS=${LAT_MS:-0.03}
OUT=bench/results
CSV=$OUT/netns-bandwidth${SUFFIX:-}.csv
MD=$OUT/netns-bandwidth${SUFFIX:-}.md
PY=/usr/bin/python3
mkdir -p "$OUT"
"$NC" check >/dev/null || { echo "netns-bandwidth: network namespaces are not available here" >&2; exit 77; }

work=$(mktemp -d /tmp/tern-netns-bench-XXXXXX)
tags=()
cleanup() {
  local t
  for t in "${tags[@]}"; do "$NC" down "$t" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

job_yaml() {  # file steps sync
  cat >"$1" <<YAML
name: netns-bandwidth
workers: 4
model: {type: mlp}
data: {source: synthetic, train_size: 4096, test_size: 256}
train: {steps: $2, batch_size: 32, lr: 0.05, momentum: 0.9, seed: 1, log_every: 1, eval_every: 0}
sync: $3
YAML
}
job_yaml "$work/ssgd.yaml" "$SSGD_STEPS" "{strategy: ssgd, timeout_s: 120}"
job_yaml "$work/dts.yaml" "$DTS_STEPS" "{strategy: dts, delay: 2, period: 8, timeout_s: 120}"

run_job() {  # tag spec out.json
  local id
  id=$("$NC" tern "$1" submit "$2" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
  for _ in $(seq 3000); do
    sleep 0.2
    "$NC" tern "$1" status "$id" --json >"$3" 2>/dev/null || continue
    case $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$3") in
      SUCCEEDED) return 0 ;;
      FAILED|CANCELLED) echo "job $id failed:" >&2; cat "$3" >&2; return 1 ;;
    esac
  done
  echo "job $id did not finish" >&2
  return 1
}

# allreduce_s, bytes S, samples/s: medians over the finished jobs' status JSONs given.
figures() {
  "$PY" - "$@" <<'PY'
import json, statistics, sys
ar, S, sps = [], [], []
for path in sys.argv[1:]:
    j = json.load(open(path))
    n = len(j["ranks"])
    waits = [r["metrics"]["wait_s"] / int(r["step"]) for r in j["ranks"]
             if int(r["step"]) > 0 and "wait_s" in r["metrics"]]
    s = j["summary"]
    ar.append(min(waits))
    per_rank = s["reducer_bytes_per_rank"] / s["steps"]  # bytes a rank's reducer sent per step
    S.append(per_rank * n / (2 * (n - 1)))               # ring: 2(N-1)/N of the payload
    sps.append(s["samples_per_s"])
m = statistics.median
print(f"{m(ar):.5f} {m(S):.0f} {m(sps):.2f} {min(ar):.5f} {max(ar):.5f}")
PY
}

echo "rate_mbps,latency_ms,ranks,reps,payload_bytes,allreduce_shaped_s,allreduce_emulated_s,allreduce_model_s,model_over_shaped,emulated_over_shaped,allreduce_payload_rate_model_s,payload_rate_model_over_shaped,allreduce_shaped_min_s,allreduce_shaped_max_s,dts_samples_per_s_shaped,dts_samples_per_s_emulated,ssgd_samples_per_s_shaped,ssgd_samples_per_s_emulated,load_avg_1m" >"$CSV"
for rate in $RATES; do
  # Both clusters at once (the same addresses in separate namespaces never meet) and their jobs
  # interleaved, so a change in the machine's load hits both alike.
  shaped="b$(printf '%x' $$ | tail -c 5)s"
  emul="b$(printf '%x' $$ | tail -c 5)e"
  tags+=("$shaped" "$emul")
  "$NC" up 4 --tag "$shaped" --rate "$rate" --lease-ms 10000 --heartbeat-ms 500 --nice "$NICE" >/dev/null
  "$NC" up 4 --tag "$emul" --wan "$rate:$LAT_MS" --lease-ms 10000 --heartbeat-ms 500 --nice "$NICE" >/dev/null
  load=$(cut -d' ' -f1 /proc/loadavg)
  for rep in $(seq "$REPS"); do
    for kind in ssgd dts; do
      run_job "$shaped" "$work/$kind.yaml" "$work/$kind-shaped-$rep.json"
      run_job "$emul" "$work/$kind.yaml" "$work/$kind-emulated-$rep.json"
    done
  done
  "$NC" down "$shaped" >/dev/null
  "$NC" down "$emul" >/dev/null
  read -r ar_shaped S ssgd_shaped ar_min ar_max < <(figures "$work"/ssgd-shaped-*.json)
  read -r ar_emul _ ssgd_emul _ _ < <(figures "$work"/ssgd-emulated-*.json)
  read -r _ _ dts_shaped _ _ < <(figures "$work"/dts-shaped-*.json)
  read -r _ _ dts_emul _ _ < <(figures "$work"/dts-emulated-*.json)
  rm -f "$work"/*-shaped-*.json "$work"/*-emulated-*.json
  # src/comm/wan_communicator.h: payload moves at kWirePayloadShare = 1448/1547 of the rate.
  model=$("$PY" -c "import sys; n=4; S=float(sys.argv[1]); B=float(sys.argv[2])*1e6/8*1448/1547; L=float(sys.argv[3])/1e3; print(f'{2*(n-1)*(L + S/n/B):.5f}')" "$S" "$rate" "$LAT_MS")
  # The model before issue 28 (payload at the full line rate), for comparison.
  model0=$("$PY" -c "import sys; n=4; S=float(sys.argv[1]); B=float(sys.argv[2])*1e6/8; L=float(sys.argv[3])/1e3; print(f'{2*(n-1)*(L + S/n/B):.5f}')" "$S" "$rate" "$LAT_MS")
  ratio() { "$PY" -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.3f}')" "$1" "$2"; }
  echo "$rate,$LAT_MS,4,$REPS,$S,$ar_shaped,$ar_emul,$model,$(ratio "$model" "$ar_shaped"),$(ratio "$ar_emul" "$ar_shaped"),$model0,$(ratio "$model0" "$ar_shaped"),$ar_min,$ar_max,$dts_shaped,$dts_emul,$ssgd_shaped,$ssgd_emul,$load" >>"$CSV"
done

{
  echo "# netns-bandwidth: 4 hosts in network namespaces, tc tbf links vs the WAN model"
  echo
  echo "$(date -u +%F), $(nproc) cores (shared; daemons at nice $NICE, trainers 10 above); MLP 784-512-256-10; SSGD $SSGD_STEPS steps, DTS (d 2, T 8) $DTS_STEPS steps, batch 32 per rank; medians of $REPS interleaved runs."
  echo "All-reduce: seconds per step blocked in the all-reduce (the strategy's wait_s, bucket copies and averaging included), smallest over ranks."
  echo "Model: 2 (N-1) (latency + (S/N) / (0.936 B)) (src/comm/wan_communicator.h, kWirePayloadShare); payload-rate model: the same with B (before issue 28)."
  echo
  echo "| Mbit/s | payload MB | all-reduce shaped (s) [min-max] | emulated (s) | model (s) | emulated / shaped | model / shaped | payload-rate model / shaped | DTS samples/s shaped | DTS emulated | SSGD samples/s shaped | SSGD emulated | load |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  tail -n +2 "$CSV" | while IFS=, read -r rate lat n reps S ars are arm ratio eratio arm0 ratio0 armin armax ds de ss se load; do
    printf "| %s | %.2f | %s [%s-%s] | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$rate" "$("$PY" -c "print($S / 1e6)")" "$ars" "$armin" "$armax" "$are" "$arm" "$eratio" "$ratio" "$ratio0" "$ds" "$de" "$ss" "$se" "$load"
  done
} >"$MD"
cat "$MD"
echo "wrote $CSV and $MD"
