#!/usr/bin/env bash
# Private training (issue 25): DP-SGD and LazyDP, all rows in one run on this machine (shared
# and noisy: compare within the run, as ratios).
#   DLRM, WORKERS ranks, TABLES tables of TABLE_ROWS rows (dim 16; configs/jobs/dlrm-synthetic.yaml
#   otherwise), the same data and DLRM_STEPS steps of batch 128 per rank in every row:
#     dlrm-nodp     no train.dp
#     dlrm-eager    train.dp, embedding_noise eager: every row of every table noised every step
#     dlrm-lazy     train.dp, embedding_noise lazy (LazyDP): a row's noise deferred to its next
#                   read, one draw of the summed variance (and every row at the end)
#   MLP on Fashion-MNIST, WORKERS ranks, MLP_STEPS steps of batch 64 per rank:
#     mlp-nodp, mlp-dp (vectorised per-sample gradients), mlp-dp-micro (micro-batches of one)
# DP rows: clip CLIP, noise multiplier SIGMA, delta 1e-5; epsilon from the RDP accountant.
# Figures: samples/s (the job's, training time only), test AUC / accuracy, epsilon; ratios to
# the row's baseline (lazy / eager, and each row / its no-DP row).
#   bench/privacy.sh
#   TABLE_ROWS=200000 DLRM_STEPS=10 bench/privacy.sh
#   ONLY="dlrm-eager dlrm-lazy" bench/privacy.sh
# Output: a table, bench/results/privacy${SUFFIX}.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
WORKERS=${WORKERS:-4}
TABLES=${TABLES:-26}
TABLE_ROWS=${TABLE_ROWS:-1000000}
DLRM_STEPS=${DLRM_STEPS:-12}
MLP_STEPS=${MLP_STEPS:-200}
CLIP=${CLIP:-1.0}
SIGMA=${SIGMA:-1.0}
ONLY=${ONLY:-}
OUT=bench/results
mkdir -p "$OUT"
CSV=$OUT/privacy${SUFFIX:-}.csv
RUNS=$(mktemp -d /tmp/tern-privacy-bench.XXXXXX)
trap 'rm -rf "$RUNS"' EXIT

DLRM=(configs/jobs/dlrm-synthetic.yaml --set data.num_tables="$TABLES" --set data.table_size="$TABLE_ROWS"
      --set data.train_size=131072 --set data.test_size=8192 --set train.steps="$DLRM_STEPS"
      --set train.batch_size=128 --set recovery.mode=none --set recovery.interval=fixed --set train.log_every=1000)
MLP=(configs/jobs/fmnist-mlp.yaml --set train.steps="$MLP_STEPS" --set train.batch_size=64 --set train.log_every=1000)
DP=(--set train.dp.clip="$CLIP" --set train.dp.noise_multiplier="$SIGMA" --set train.dp.delta=1e-5)

echo "name,workers,steps,samples_per_s,wall_s,test_auc,test_accuracy,epsilon,dp_noised_rows" > "$CSV"
run() {  # name, job args...
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local r
  r=$("$BUILD/bin/tern" run "$@" --workers "$WORKERS" --json --run-dir "$RUNS/$name" 2>"$RUNS/$name.err" || true)
  echo "$r" | /usr/bin/python3 -c "
import json, sys
lines = sys.stdin.read().strip().splitlines()
r = json.loads(lines[-1]) if lines else {}
if r.get('state') != 'SUCCEEDED':
    sys.exit('$name failed: ' + r.get('reason', open('$RUNS/$name.err').read()[-2000:]))
print(','.join(str(x) for x in ['$name', r['workers'], r['steps'], round(r['samples_per_s'], 1),
      round(r['train_wall_s'], 2), round(r.get('test_auc', float('nan')), 5), round(r['test_accuracy'], 5),
      round(r['epsilon'], 4) if 'epsilon' in r else '', int(r.get('dp_noised_rows', 0)) if 'dp_noised_rows' in r else '']))
" >> "$CSV"
  tail -1 "$CSV" >&2
}

run dlrm-nodp "${DLRM[@]}"
run dlrm-lazy "${DLRM[@]}" "${DP[@]}" --set train.dp.embedding_noise=lazy
run dlrm-eager "${DLRM[@]}" "${DP[@]}" --set train.dp.embedding_noise=eager
run mlp-nodp "${MLP[@]}"
run mlp-dp "${MLP[@]}" "${DP[@]}" --set train.dp.per_sample=vectorized
run mlp-dp-micro "${MLP[@]}" "${DP[@]}" --set train.dp.per_sample=microbatch

/usr/bin/python3 - "$CSV" "$TABLES" "$TABLE_ROWS" <<'PY'
import csv, sys
rows = {r['name']: r for r in csv.DictReader(open(sys.argv[1]))}
print(f"DLRM: {sys.argv[2]} tables x {sys.argv[3]} rows (dim 16); MLP: Fashion-MNIST")
print(f"{'run':<14}{'samples/s':>11}{'vs base':>9}{'AUC':>9}{'accuracy':>10}{'epsilon':>9}{'noised rows':>13}")
for name, r in rows.items():
    base = rows.get('dlrm-nodp' if name.startswith('dlrm') else 'mlp-nodp')
    ratio = float(r['samples_per_s']) / float(base['samples_per_s']) if base else float('nan')
    print(f"{name:<14}{float(r['samples_per_s']):>11.1f}{ratio:>9.3f}{r['test_auc']:>9}{r['test_accuracy']:>10}"
          f"{r['epsilon'] or '-':>9}{r['dp_noised_rows'] or '-':>13}")
if 'dlrm-lazy' in rows and 'dlrm-eager' in rows:
    print(f"LazyDP / eager DP-SGD throughput: "
          f"{float(rows['dlrm-lazy']['samples_per_s']) / float(rows['dlrm-eager']['samples_per_s']):.1f}x")
if 'mlp-dp' in rows and 'mlp-dp-micro' in rows:
    print(f"MLP vectorised / micro-batched per-sample gradients: "
          f"{float(rows['mlp-dp']['samples_per_s']) / float(rows['mlp-dp-micro']['samples_per_s']):.1f}x")
PY
