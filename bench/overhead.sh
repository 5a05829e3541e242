#!/usr/bin/env bash
# Framework overhead and scaling (Foundation issue): a plain LibTorch loop vs
# `tern run --workers 1` on the same model, data, batch order and steps, and (MLP) the same
# MLP as a TorchScript module (examples/export_mlp.py), interleaved REPS times (median
# reported, ratios in the same run); then tern with 2 and 4 workers.
#
#   bench/overhead.sh                    # MLP, 300 steps, 3 reps
#   MODEL=cnn STEPS=100 REPS=3 bench/overhead.sh
# Output: a table on stdout and bench/results/overhead.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
MODEL=${MODEL:-mlp}
STEPS=${STEPS:-300}
REPS=${REPS:-3}
JOB=configs/jobs/fmnist-${MODEL}.yaml
OUT=bench/results
mkdir -p "$OUT"
[ -x "$BUILD/bin/tern-plain-loop" ] || { echo "build first: scripts/setup.sh" >&2; exit 1; }

json_field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The same model as TorchScript (issue 20: a user's model costs no more than a built-in one):
# examples/export_mlp.py writes it (Debian's python3-torch).
TS=""
if [ "$MODEL" = mlp ]; then
  TS_MODEL=${TS_MODEL:-examples/out/mlp.pt}
  if [ ! -f "$TS_MODEL" ]; then
    if /usr/bin/python3 -c "import torch" 2>/dev/null; then
      /usr/bin/python3 examples/export_mlp.py --out "$TS_MODEL" >&2
    else
      echo "no $TS_MODEL and no python3-torch (apt-get install python3-torch): skipping the TorchScript row" >&2
    fi
  fi
  [ -f "$TS_MODEL" ] && TS="--set model.type=torchscript --set model.path=$TS_MODEL"
fi

plain=(); tern1=(); ts1=()
for rep in $(seq "$REPS"); do
  p=$("$BUILD/bin/tern-plain-loop" "$JOB" --set train.steps="$STEPS" | json_field samples_per_s)
  t=$("$BUILD/bin/tern" run "$JOB" --workers 1 --set train.steps="$STEPS" --json 2>/dev/null | json_field samples_per_s)
  plain+=("$p"); tern1+=("$t")
  if [ -n "$TS" ]; then
    # shellcheck disable=SC2086
    s=$("$BUILD/bin/tern" run "$JOB" --workers 1 --set train.steps="$STEPS" $TS --json 2>/dev/null | json_field samples_per_s)
    ts1+=("$s")
  fi
  echo "rep $rep: plain $p samples/s, tern(1) $t samples/s${TS:+, tern(1) torchscript $s samples/s}" >&2
done
P=$(median "${plain[@]}"); T1=$(median "${tern1[@]}")
[ -n "$TS" ] && S1=$(median "${ts1[@]}")

declare -A TW
for w in 2 4; do
  TW[$w]=$("$BUILD/bin/tern" run "$JOB" --workers "$w" --set train.steps="$STEPS" --json 2>/dev/null | json_field samples_per_s)
done

{
  echo "config,workers,samples_per_s,ratio_to_plain"
  echo "plain-libtorch,1,$P,1.000"
  awk -v t="$T1" -v p="$P" 'BEGIN {printf "tern,1,%s,%.3f\n", t, t/p}'
  [ -n "$TS" ] && awk -v s="$S1" -v p="$P" 'BEGIN {printf "tern-torchscript,1,%s,%.3f\n", s, s/p}'
  for w in 2 4; do awk -v t="${TW[$w]}" -v p="$P" -v w="$w" 'BEGIN {printf "tern,%d,%s,%.3f\n", w, t, t/p}'; done
} > "$OUT/overhead-$MODEL.csv"

echo
echo "overhead: $MODEL, $STEPS steps, batch from $JOB, median of $REPS interleaved reps ($(nproc) cores)"
column -t -s, "$OUT/overhead-$MODEL.csv"
awk -v t="$T1" -v p="$P" 'BEGIN {printf "\ntern --workers 1 overhead vs plain loop: %.1f %%\n", (1 - t/p) * 100}'
[ -n "$TS" ] && awk -v s="$S1" -v t="$T1" 'BEGIN {printf "TorchScript MLP vs built-in MLP (tern, 1 worker): %.3f of the samples/s (%.1f %% slower)\n", s/t, (1 - s/t) * 100}'
echo "csv: $OUT/overhead-$MODEL.csv"
