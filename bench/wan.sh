#!/usr/bin/env bash
# Training across the world (issue: WAN emulation, DSSGD, TSU, DTS, hierarchical).
# 4 ranks on this machine, the same number of samples in every run: SSGD without WAN (the
# reference), then under the emulated 4-region WAN of configs/cluster/wan-4region.yaml (one-way
# 70-210 ms, 1 Gbit/s): SSGD, DSSGD, TSU, DTS with a few (d, T), and hierarchical sync over
# 2 regions x 2 ranks (configs/cluster/wan-2region.yaml, 210 ms between the regions).
#   bench/wan.sh                     # MLP, 150 steps per rank
#   MODEL=cnn STEPS=40 bench/wan.sh  # the CNN, fewer steps
#   STEPS=0 bench/wan.sh             # the job's 2 epochs (about 20 min on 2 cores; SSGD under WAN is most of it)
#   STEPS=0 ONLY="ssgd-lan dts-d8-T32" bench/wan.sh                    # some configs
#   STEPS=0 EPOCHS=4 SUFFIX=-4epochs bench/wan.sh                      # 4 epochs of every config
#   EVAL_EVERY=0 bench/wan.sh        # no evaluations during the run (no accuracy-vs-time curve)
#   STEPS=0 PLOT_ONLY=1 bench/wan.sh # redraw the PNG from the CSVs of an earlier run
# Output: a table, bench/results/wan-<model>.csv, the accuracy curves in wan-<model>-curves.csv
# and bench/results/wan-<model>.png (gnuplot: throughput, final accuracy, accuracy vs time).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
MODEL=${MODEL:-mlp}
STEPS=${STEPS:-150}
EPOCHS=${EPOCHS:-}
if [ "$STEPS" != 0 ]; then RUN_LENGTH="$STEPS steps"; elif [ -n "$EPOCHS" ]; then RUN_LENGTH="$EPOCHS epochs"; else RUN_LENGTH="the job's epochs"; fi
JOB=configs/jobs/fmnist-${MODEL}.yaml
W4=configs/cluster/wan-4region.yaml
W2=configs/cluster/wan-2region.yaml
OUT=bench/results
mkdir -p "$OUT"
CSV=$OUT/wan-$MODEL${SUFFIX:-}.csv

CURVES=$OUT/wan-$MODEL${SUFFIX:-}-curves.csv
EVAL_EVERY=${EVAL_EVERY:-}
if [ -z "$EVAL_EVERY" ]; then  # about 10 evaluations per run
  if [ "$STEPS" != 0 ]; then EVAL_EVERY=$(( STEPS / 10 > 0 ? STEPS / 10 : 1 )); else EVAL_EVERY=94; fi
fi
ONLY=${ONLY:-}
run() {  # name, extra args...
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local r
  local epochs=()
  [ -n "$EPOCHS" ] && epochs=(--set train.epochs="$EPOCHS")
  r=$("$BUILD/bin/tern" run "$JOB" --workers 4 --set train.steps="$STEPS" "${epochs[@]}" \
        --set train.eval_every="$EVAL_EVERY" --json "$@" 2>/dev/null || true)
  echo "$r" | /usr/bin/python3 -c "
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
if r.get('state') != 'SUCCEEDED':
    sys.exit('$name failed: ' + r.get('reason', '?'))
with open('$CURVES.tmp', 'a') as c:
    for e in r.get('evals', []):
        c.write(f\"$name,{e['step']},{e['train_s']:.2f},{e['test_accuracy']}\\n\")
print(','.join(str(x) for x in ['$name', round(r['samples_per_s'], 1), r['test_accuracy'], int(r['bytes_sent_per_rank']),
      int(r.get('peak_sync_bytes', 0)), int(r.get('delay', 0)), int(r.get('period', 1)),
      round(r['wait_s'], 2), round(r['compute_s'], 2), round(r.get('staleness', 0), 2), round(r['train_wall_s'], 1)]))"
  echo "  $name done" >&2
}

if [ "${PLOT_ONLY:-0}" != 1 ]; then  # PLOT_ONLY=1: redraw the PNG from the existing CSVs
echo "config,step,train_s,test_accuracy" > "$CURVES.tmp"
# The delay d costs accuracy far more than the period T does (staleness, not drift): at
# 2 epochs d = 8 with T = 32 hides the 1.3 s ring all-reduce as well as d = 20 with T = 8 and
# keeps accuracy (see the README's WAN section). The DiLoCo rows add the outer Nesterov step
# (sync.outer lr 0.7, momentum 0.5: DiLoCo's 0.9 overshoots at T = 48), streaming fragments,
# compressed pseudo-gradients (int4 and topk travel by all-gather: N - 1 hops, half the ring's
# latency, so d = 12 hides them) and the automatic d and T (with int4, on both WAN models).
# The chunked rows (SparseLoCo's layout) send the top CHUNK_DENSITY of every chunk of 256 values
# with 4-bit values and 1-byte offsets: 52 bytes per 256 values at 1/8, the bytes of 2 % global
# top-k for 6x the entries.
#   DILOCO_DELAY=12 DILOCO_PERIOD=48 OUTER_LR=0.7 OUTER_MOMENTUM=0.5 TOPK_DENSITY=0.02 CHUNK_DENSITY=0.125 (defaults)
DILOCO=(--set "sync.outer={lr: ${OUTER_LR:-0.7}, momentum: ${OUTER_MOMENTUM:-0.5}, nesterov: true}")
CTOPK=(--set compress.method=topk --set compress.chunk_size=256 --set compress.value_bits=4
       --set compress.density="${CHUNK_DENSITY:-0.125}")
{
  echo "config,samples_per_s,test_accuracy,bytes_per_rank,peak_sync_bytes,delay,period,wait_s,compute_s,staleness,train_wall_s"
  run ssgd-lan         --set sync.strategy=ssgd
  run ssgd-wan         --cluster $W4 --set sync.strategy=ssgd
  run dssgd-d20        --cluster $W4 --set sync.strategy=dssgd --set sync.delay=20
  run tsu-T32          --cluster $W4 --set sync.strategy=tsu --set sync.period=32
  run dts-d20-T8       --cluster $W4 --set sync.strategy=dts --set sync.delay=20 --set sync.period=8
  run dts-d12-T24      --cluster $W4 --set sync.strategy=dts --set sync.delay=12 --set sync.period=24
  run dts-d8-T32       --cluster $W4 --set sync.strategy=dts --set sync.delay=8 --set sync.period=32
  run hier-2x2-d20-T8  --cluster $W2 --set sync.strategy=hierarchical --set sync.inter_delay=20 --set sync.inter_period=8
  run hier-2x2-d8-T32  --cluster $W2 --set sync.strategy=hierarchical --set sync.inter_delay=8 --set sync.inter_period=32
  D=${DILOCO_DELAY:-12} T=${DILOCO_PERIOD:-48}
  run diloco-d$D-T$T             --cluster $W4 --set sync.strategy=dts --set sync.delay=$D --set sync.period=$T "${DILOCO[@]}"
  run diloco-F4-d$D-T$T          --cluster $W4 --set sync.strategy=dts --set sync.delay=$D --set sync.period=$T "${DILOCO[@]}" --set sync.fragments=4
  run diloco-int4-d$D-T$T        --cluster $W4 --set sync.strategy=dts --set sync.delay=$D --set sync.period=$T "${DILOCO[@]}" --set compress.method=int4
  run diloco-topk-d$D-T$T        --cluster $W4 --set sync.strategy=dts --set sync.delay=$D --set sync.period=$T "${DILOCO[@]}" --set compress.method=topk --set compress.density=${TOPK_DENSITY:-0.02}
  run diloco-int4-auto           --cluster $W4 --set sync.strategy=dts --set sync.delay=auto --set sync.period=auto "${DILOCO[@]}" --set compress.method=int4
  run w2-diloco-int4-d$D-T$T     --cluster $W2 --set sync.strategy=dts --set sync.delay=$D --set sync.period=$T "${DILOCO[@]}" --set compress.method=int4
  run w2-diloco-int4-auto        --cluster $W2 --set sync.strategy=dts --set sync.delay=auto --set sync.period=auto "${DILOCO[@]}" --set compress.method=int4
  run diloco-ctopk4-d$D-T$T      --cluster $W4 --set sync.strategy=dts --set sync.delay=$D --set sync.period=$T "${DILOCO[@]}" "${CTOPK[@]}"
  run diloco-ctopk4-auto         --cluster $W4 --set sync.strategy=dts --set sync.delay=auto --set sync.period=auto "${DILOCO[@]}" "${CTOPK[@]}"
  run w2-diloco-ctopk4-d$D-T$T   --cluster $W2 --set sync.strategy=dts --set sync.delay=$D --set sync.period=$T "${DILOCO[@]}" "${CTOPK[@]}"
  run w2-diloco-ctopk4-auto      --cluster $W2 --set sync.strategy=dts --set sync.delay=auto --set sync.period=auto "${DILOCO[@]}" "${CTOPK[@]}"
} > "$CSV.tmp"
/usr/bin/python3 - "$CSV.tmp" "$CSV" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ref = float(rows[0]["samples_per_s"])
ref_acc = float(rows[0]["test_accuracy"])
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["config", "samples_per_s", "ratio_to_ref", "test_accuracy", "acc_delta_pts", "bytes_per_rank",
                "fewer_bytes_x", "peak_sync_bytes", "delay", "period", "wait_s", "compute_s", "staleness",
                "train_wall_s"])
    ref_bytes = float(rows[0]["bytes_per_rank"])
    for r in rows:
        w.writerow([r["config"], r["samples_per_s"], f"{float(r['samples_per_s'])/ref:.3f}", r["test_accuracy"],
                    f"{(float(r['test_accuracy'])-ref_acc)*100:+.2f}", r["bytes_per_rank"],
                    f"{ref_bytes/max(1.0, float(r['bytes_per_rank'])):.1f}", r["peak_sync_bytes"], r["delay"],
                    r["period"], r["wait_s"], r["compute_s"], r["staleness"], r["train_wall_s"]])
PY
rm -f "$CSV.tmp"
mv "$CURVES.tmp" "$CURVES"
fi
echo "WAN benchmark: $MODEL, 4 ranks, $RUN_LENGTH per rank (same samples in every run), $(nproc) cores"
echo "WAN model: $W4 (ohio/oregon/london/tokyo, one-way 70-210 ms, 1 Gbit/s, 2 ms jitter); hierarchical: $W2"
column -t -s, "$CSV"
if command -v gnuplot >/dev/null; then
  gnuplot <<GP
set terminal pngcairo size 2000,520 font ",10"
set output "${CSV%.csv}.png"
set datafile separator ","
set multiplot layout 1,4 title "tern across 4 emulated regions ($MODEL, 4 ranks, $RUN_LENGTH)"
set style data histograms
set style fill solid 0.8
set xtics rotate by -35
set key off
set title "throughput / SSGD without WAN"
set yrange [0:*]
plot "$CSV" using 3:xtic(1) skip 1 lc rgb "#3b7dd8"
set title "test accuracy"
set yrange [0:1]
plot "$CSV" using 4:xtic(1) skip 1 lc rgb "#46a35e"
set title "bytes per rank: SSGD / config (log scale)"
set logscale y
set yrange [1:*]
plot "$CSV" using 7:xtic(1) skip 1 lc rgb "#d8843b"
unset logscale y
set title "test accuracy vs time (rank 0, every $EVAL_EVERY steps)"
set style data linespoints
set xtics norotate
set xlabel "training seconds (evaluations excluded, log scale)"
set logscale x
set yrange [*:*]
set key bottom right
configs = system("cut -d, -f1 '$CURVES' | tail -n +2 | uniq | tr '\\n' ' '")
plot for [c in configs] "< grep '^".c.",' '$CURVES'" using 3:4 title c
unset multiplot
GP
  echo "png: ${CSV%.csv}.png"
fi
echo "csv: $CSV, $CURVES"
