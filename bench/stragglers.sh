#!/usr/bin/env bash
# Coded straggler mitigation (issue 8). Fashion-MNIST MLP, 4 ranks on this machine, the same
# global batch (4 x 32) and the same steps in every run. The reference has no stragglers; every
# other run has rank 2 running 4x slower (debug.slowdown) plus random transient delays on every
# rank (debug.transient_prob/transient_ms), injected inside the trainer's compute:
#   wait-all SSGD, backup workers (b = 1, Chen et al. 2016), gradient coding (s = 1, fractional
#   repetition; s = 2, cyclic repetition since 3 does not divide 4), random linear codes
#   (straggler.mode random_code, fresh coefficients every step, s = 1 and 2),
#   speed-proportional work (S2C2-style), and coding + proportional.
# Columns beyond time and accuracy: bytes_per_rank (everything a rank sent, mean over ranks), decode_ms (rank 0's
# mean time per step to solve for the decoding weights and sum the contributions) and
# decode_failures (steps whose first n - s contributions did not decode, random_code only).
#   bench/stragglers.sh                 # the job's 2 epochs
#   STEPS=150 bench/stragglers.sh       # quicker, fewer steps
#   ONLY="ref coding-s1 cyclic-s2 random-s1 random-s2" bench/stragglers.sh   # the codes only
#   WORKERS=8 SLOWDOWN=[1,1,4,1,1,1,1,1] bench/stragglers.sh
#   RUNNER=trainer bench/stragglers.sh  # tern-trainer ranks via bench/compression_run.py (no CLI build)
# Output: a table, bench/results/stragglers.csv and bench/results/stragglers.png (gnuplot).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
STEPS=${STEPS:-0}
WORKERS=${WORKERS:-4}
SLOWDOWN=${SLOWDOWN:-[1,1,4,1]}
SLOW_RANK=${SLOW_RANK:-2}
TRANSIENT_PROB=${TRANSIENT_PROB:-0.05}
TRANSIENT_MS=${TRANSIENT_MS:-20}
JOB=configs/jobs/fmnist-mlp-stragglers.yaml
OUT=bench/results
mkdir -p "$OUT"
CSV=$OUT/stragglers${SUFFIX:-}.csv
ONLY=${ONLY:-}

STEP_ARGS=()
[ "$STEPS" != 0 ] && STEP_ARGS=(--set train.steps="$STEPS")
STRAGGLE=(--set "debug.slowdown=$SLOWDOWN" --set debug.transient_prob="$TRANSIENT_PROB"
          --set debug.transient_ms="$TRANSIENT_MS")

run() {  # name, extra args...
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local r
  if [ "${RUNNER:-tern}" = trainer ]; then
    r=$(/usr/bin/python3 bench/compression_run.py --trainer "$BUILD/bin/tern-trainer" --spec "$JOB" --workers "$WORKERS" \
        --all-ranks "${STEP_ARGS[@]}" "$@" 2>/dev/null || echo '{"state": "FAILED"}')
  else
    r=$("$BUILD/bin/tern" run "$JOB" --workers "$WORKERS" --json "${STEP_ARGS[@]}" "$@" 2>/dev/null || true)
  fi
  echo "$r" | /usr/bin/python3 -c "
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
if r.get('state') != 'SUCCEEDED':
    sys.exit('$name failed: ' + r.get('reason', '?'))
slow = r['ranks'][$SLOW_RANK]
fast = r['ranks'][0]
print(','.join(str(x) for x in ['$name', round(1000 * r['train_wall_s'] / r['steps'], 2), r['test_accuracy'],
      r['steps'], round(slow.get('straggler_drop_share', 0), 3), round(fast.get('straggler_drop_share', 0), 3),
      round(slow.get('straggler_share', 1 / $WORKERS), 3), int(slow['computed_samples']), int(fast['computed_samples']),
      round(r['train_wall_s'], 1), int(r.get('bytes_sent_per_rank', 0)), round(fast.get('straggler_decode_ms', 0), 3),
      int(fast.get('straggler_decode_failures', 0))]))"
  echo "  $name done" >&2
}

{
  echo "config,step_ms,test_accuracy,steps,slow_drop_share,fast_drop_share,slow_share,slow_computed,fast_computed,train_wall_s,bytes_per_rank,decode_ms,decode_failures"
  run ref          --set straggler.mode=none --set debug.slowdown=[] --set debug.transient_prob=0
  run wait-all     --set straggler.mode=none "${STRAGGLE[@]}"
  run backup-b1    --set straggler.mode=backup --set straggler.backup=1 "${STRAGGLE[@]}"
  run coding-s1    --set straggler.mode=gradient_coding --set straggler.s=1 "${STRAGGLE[@]}"
  run cyclic-s2    --set straggler.mode=gradient_coding --set straggler.s=2 "${STRAGGLE[@]}"
  run random-s1    --set straggler.mode=random_code --set straggler.s=1 "${STRAGGLE[@]}"
  run random-s2    --set straggler.mode=random_code --set straggler.s=2 "${STRAGGLE[@]}"
  run proportional --set straggler.mode=proportional "${STRAGGLE[@]}"
  run coded-prop   --set straggler.mode=coded_proportional --set straggler.s=1 "${STRAGGLE[@]}"
} > "$CSV.tmp"
/usr/bin/python3 - "$CSV.tmp" "$CSV" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ref = next(r for r in rows if r["config"] == "ref") if any(r["config"] == "ref" for r in rows) else rows[0]
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["config", "step_ms", "step_time_ratio", "test_accuracy", "acc_delta_pts", "steps", "slow_drop_share",
                "fast_drop_share", "slow_share", "slow_computed", "fast_computed", "train_wall_s", "bytes_per_rank",
                "decode_ms", "decode_failures"])
    for r in rows:
        w.writerow([r["config"], r["step_ms"], f"{float(r['step_ms'])/float(ref['step_ms']):.3f}", r["test_accuracy"],
                    f"{(float(r['test_accuracy'])-float(ref['test_accuracy']))*100:+.2f}", r["steps"],
                    r["slow_drop_share"], r["fast_drop_share"], r["slow_share"], r["slow_computed"],
                    r["fast_computed"], r["train_wall_s"], r["bytes_per_rank"], r["decode_ms"],
                    r["decode_failures"]])
PY
rm -f "$CSV.tmp"
echo "Straggler benchmark: MLP, $WORKERS ranks, slowdown $SLOWDOWN, transient delays p=$TRANSIENT_PROB mean ${TRANSIENT_MS} ms, $([ "$STEPS" = 0 ] && echo "the job's epochs" || echo "$STEPS steps"), $(nproc) cores"
column -t -s, "$CSV"
if command -v gnuplot >/dev/null; then
  gnuplot <<GP
set terminal pngcairo size 1000,480 font ",10"
set output "${CSV%.csv}.png"
set datafile separator ","
set multiplot layout 1,2 title "tern with a 4x straggler (MLP, $WORKERS ranks)"
set style data histograms
set style fill solid 0.8
set xtics rotate by -35
set key off
set title "time per step / no-straggler run"
set yrange [0:*]
plot "$CSV" using 3:xtic(1) skip 1 lc rgb "#d8773b"
set title "test accuracy"
set yrange [0.5:1]
plot "$CSV" using 4:xtic(1) skip 1 lc rgb "#46a35e"
unset multiplot
GP
  echo "png: ${CSV%.csv}.png"
fi
echo "csv: $CSV"
