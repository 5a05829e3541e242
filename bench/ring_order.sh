#!/usr/bin/env bash
# Network-aware ring order (issue 24): the plain rank order (regions by name, what placement
# uses without measurements) against the measured ring order (common/ring_order.h over the
# matrix the daemons report; under WAN emulation that matrix is the cluster file's model).
#   bench/ring_order.sh              # the model rows, then SSGD training on the bad-order file
#   TRAIN=0 bench/ring_order.sh      # the model rows only (a second)
#   STEPS=60 bench/ring_order.sh     # longer training runs
#   SYNC="sync.strategy=dts sync.delay=2 sync.period=8" SUFFIX=-dts bench/ring_order.sh
#                                    # the training rows with another sync (any --set values)
# Part 1 (tern-ring-bench, no processes): per cluster file and payload, the slowest ring hop,
# the ring's total and the WAN model's ring all-reduce time (comm/wan_communicator.h) in both
# orders. Part 2: `tern run` SSGD, 4 ranks under configs/cluster/wan-4region-badorder.yaml,
# plain order vs `--ring-order`, same steps: samples/s (the machine is shared and noisy: the
# modelled WAN waits dominate the step, so the ratio is what to read).
# Output: a table, bench/results/ring-order.csv (and ring-order-train.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
OUT=bench/results
mkdir -p "$OUT"
CSV=$OUT/ring-order.csv
SUFFIX=${SUFFIX:-}
TRAIN_CSV=$OUT/ring-order-train$SUFFIX.csv
SYNC=${SYNC:-sync.strategy=ssgd}
sync_sets=()
for kv in $SYNC; do sync_sets+=(--set "$kv"); done
STEPS=${STEPS:-40}
TRAIN=${TRAIN:-1}

echo "cluster,bytes,order,slowest_hop_ms,ring_ms,allreduce_ms,search_ms" > "$CSV"
for c in wan-4region-badorder wan-4region wan-2region; do
  for b in 65536 4194304; do
    "$BUILD/bin/tern-ring-bench" --cluster "configs/cluster/$c.yaml" --bytes "$b" |
      /usr/bin/python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(','.join(str(x) for x in [r['cluster'], r['bytes'], r['order'], round(r['slowest_hop_ms'], 2),
          round(r['ring_ms'], 2), round(r['allreduce_ms'], 2), round(r['search_ms'], 3)]))" >> "$CSV"
  done
done

if [ "$TRAIN" != 0 ]; then
  echo "order,steps,samples_per_s,wait_s,train_wall_s" > "$TRAIN_CSV"
  for order in plain measured; do
    extra=()
    [ "$order" = measured ] && extra=(--ring-order)
    r=$("$BUILD/bin/tern" run configs/jobs/fmnist-mlp.yaml --workers 4 \
          --cluster configs/cluster/wan-4region-badorder.yaml --set train.steps="$STEPS" \
          --set train.eval_every=0 "${sync_sets[@]}" --json "${extra[@]}" 2>/dev/null || true)
    echo "$r" | /usr/bin/python3 -c "
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
if r.get('state') != 'SUCCEEDED':
    sys.exit('$order failed: ' + r.get('reason', '?'))
print(','.join(str(x) for x in ['$order', $STEPS, round(r['samples_per_s'], 1), round(r['wait_s'], 2),
      round(r['train_wall_s'], 1)]))" >> "$TRAIN_CSV"
    echo "  $order done" >&2
  done
fi

/usr/bin/python3 - "$CSV" "$TRAIN_CSV" "$TRAIN" "$SYNC" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("Ring order on the WAN model (modelled, deterministic)")
print(f"{'cluster':22} {'bytes':>8} {'order':9} {'slowest hop ms':>14} {'ring ms':>8} {'allreduce ms':>12} {'vs plain':>8}")
plain = {}
for r in rows:
    key = (r['cluster'], r['bytes'])
    if r['order'] == 'plain':
        plain[key] = float(r['allreduce_ms'])
    ratio = float(r['allreduce_ms']) / plain[key] if plain.get(key) else 1.0
    print(f"{r['cluster']:22} {r['bytes']:>8} {r['order']:9} {float(r['slowest_hop_ms']):14.1f} "
          f"{float(r['ring_ms']):8.1f} {float(r['allreduce_ms']):12.1f} {ratio:8.2f}")
if sys.argv[3] != '0':
    t = list(csv.DictReader(open(sys.argv[2])))
    print(f"\nfmnist-mlp ({sys.argv[4]}), 4 ranks, wan-4region-badorder (shared 2-core machine: noisy)")
    base = float(t[0]['samples_per_s'])
    for r in t:
        print(f"{r['order']:9} {r['steps']:>4} steps {float(r['samples_per_s']):8.1f} samples/s "
              f"wait {float(r['wait_s']):6.1f} s  x{float(r['samples_per_s']) / base:.2f}")
PY
