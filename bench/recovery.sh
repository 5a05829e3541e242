#!/usr/bin/env bash
# Checkpointing and partial recovery for DLRM (issue 7; CPR, Maeng et al. MLSys 2021;
# docs/algorithms.md §5). configs/jobs/dlrm-synthetic.yaml (26 sharded embedding tables, synthetic
# Zipf CTR data; TRAIN_SIZE samples, by default half the config's epoch), 4 ranks on this machine, the
# same data and steps in every run:
#   clean        no checkpoints, no failure: the reference AUC and wall time
#   yd-full      whole-shard checkpoints at the Young/Daly interval sqrt(2 C / lambda) (full recovery's)
#   cpr-full     whole-shard checkpoints at the CPR interval 2 N PLS_target / lambda
#   cpr-mfu      CPR interval, hottest rows (row_fraction) with a whole save every full_every
#   cpr-ssu      CPR interval, a sample of the updated rows, likewise
#   fail-full    one injected failure (rank FAIL_RANK dies at step FAIL_STEP), recovery.mode full,
#                Young/Daly interval: every rank rolls back to the last checkpoint
#   fail-partial the same failure, recovery.mode partial, CPR interval: only the lost shard is
#                restored from its checkpoint, survivors keep their state
#   fail-mfu     the same with CPR-MFU saves
# lambda is the assumed failure rate 1/recovery.mtbf_s (MTBF env, default the config's 60 s: a
# short run's stand-in for hours-long MTBFs); C and the throughput are measured by each run.
# Overhead = blocking checkpoint time (the slowest rank's snapshot + commit waits) / wall time.
#   bench/recovery.sh
#   TRAIN_SIZE=262144 FAIL_STEP=300 bench/recovery.sh   # the config's full epoch (longer)
#   ONLY="clean cpr-full" bench/recovery.sh
# Output: a table, bench/results/recovery.csv and bench/results/recovery.png (gnuplot).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
WORKERS=${WORKERS:-4}
TRAIN_SIZE=${TRAIN_SIZE:-131072}
MTBF=${MTBF:-0}
FAIL_RANK=${FAIL_RANK:-1}
FAIL_STEP=${FAIL_STEP:-180}
JOB=configs/jobs/dlrm-synthetic.yaml
OUT=bench/results
mkdir -p "$OUT"
CSV=$OUT/recovery${SUFFIX:-}.csv
ONLY=${ONLY:-}
RUNS=$(mktemp -d /tmp/tern-recovery-bench.XXXXXX)
trap 'rm -rf "$RUNS"' EXIT

COMMON=()
[ "$TRAIN_SIZE" != 0 ] && COMMON+=(--set data.train_size="$TRAIN_SIZE")
[ "$MTBF" != 0 ] && COMMON+=(--set recovery.mtbf_s="$MTBF")
FAIL=(--set debug.fail_rank="$FAIL_RANK" --set debug.fail_step="$FAIL_STEP")

run() {  # name, extra args...
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local r
  r=$("$BUILD/bin/tern" run "$JOB" --workers "$WORKERS" --json --run-dir "$RUNS/$name" "${COMMON[@]}" "$@" \
      2>"$RUNS/$name.err" || true)
  echo "$r" | /usr/bin/python3 -c "
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
if r.get('state') != 'SUCCEEDED':
    sys.exit('$name failed: ' + r.get('reason', '?'))
plan = r.get('checkpoint_plan', {})
print(','.join(str(x) for x in ['$name', r['recovery_mode'], r['checkpoint_interval'], r['checkpoint_policy'],
      r['checkpoint_interval_steps'], r['checkpoints'], round(100 * r['checkpoint_overhead'], 3),
      round(r['checkpoint_s'], 3), round(r['wall_s'], 1), round(r['samples_per_s']),
      round(r['test_auc'], 5), round(r['test_logloss'], 5), r['recoveries'], r['steps_rolled_back'],
      round(r['time_lost_s'], 2), int(r['lost_samples']), round(r['shard_pls'], 4), round(r['pls'], 5),
      round(plan.get('checkpoint_cost_s', 0), 4), round(plan.get('young_daly_interval_s', 0), 2),
      plan.get('young_daly_interval_steps', 0), plan.get('cpr_interval_steps', 0),
      round(plan.get('cpr_expected_pls', 0), 4)]))"
  echo "  $name done" >&2
}

{
  echo "config,mode,interval,policy,interval_steps,checkpoints,overhead_pct,checkpoint_s,wall_s,samples_per_s,test_auc,test_logloss,recoveries,steps_rolled_back,time_lost_s,lost_samples,shard_pls,pls,cost_C_s,yd_interval_s,yd_steps,cpr_steps,cpr_expected_pls"
  run clean        --set recovery.mode=none --set recovery.interval=fixed --set recovery.checkpoint_every=0
  run yd-full      --set recovery.mode=none --set recovery.interval=young_daly --set recovery.policy=full
  run cpr-full     --set recovery.mode=none --set recovery.interval=cpr --set recovery.policy=full
  run cpr-mfu      --set recovery.mode=none --set recovery.interval=cpr --set recovery.policy=mfu
  run cpr-ssu      --set recovery.mode=none --set recovery.interval=cpr --set recovery.policy=ssu
  run fail-full    --set recovery.mode=full --set recovery.interval=young_daly --set recovery.policy=full "${FAIL[@]}"
  run fail-partial --set recovery.mode=partial --set recovery.interval=cpr --set recovery.policy=full "${FAIL[@]}"
  run fail-mfu     --set recovery.mode=partial --set recovery.interval=cpr --set recovery.policy=mfu "${FAIL[@]}"
} > "$CSV.tmp"
/usr/bin/python3 - "$CSV.tmp" "$CSV" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
clean = next((r for r in rows if r["config"] == "clean"), None)
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(list(rows[0].keys())[:11] + ["auc_delta"] + list(rows[0].keys())[11:])
    for r in rows:
        delta = f"{float(r['test_auc']) - float(clean['test_auc']):+.5f}" if clean else ""
        vals = list(r.values())
        w.writerow(vals[:11] + [delta] + vals[11:])
PY
rm -f "$CSV.tmp"
echo "Recovery benchmark: DLRM synthetic, $WORKERS ranks, $(nproc) cores, failure: rank $FAIL_RANK at step $FAIL_STEP"
column -t -s, "$CSV"
if command -v gnuplot >/dev/null; then
  gnuplot <<GP
set terminal pngcairo size 1100,480 font ",10"
set output "${CSV%.csv}.png"
set datafile separator ","
set multiplot layout 1,2 title "DLRM checkpointing and recovery (CPR), $WORKERS ranks"
set style data histograms
set style fill solid 0.8
set xtics rotate by -35
set key off
set title "checkpoint overhead (% of training time)"
set yrange [0:*]
plot "$CSV" using 7:xtic(1) skip 1 lc rgb "#d8773b"
set title "test AUC"
set yrange [0.5:*]
plot "$CSV" using 11:xtic(1) skip 1 lc rgb "#46a35e"
unset multiplot
GP
  echo "png: ${CSV%.csv}.png"
fi
echo "csv: $CSV"
