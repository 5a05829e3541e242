#!/usr/bin/env bash
# Gradient compression benchmark (issue 6): Fashion-MNIST MLP and CNN, 4 ranks, the same
# samples for every method, one run each: dense SSGD, DGC (0.1 % final density), PowerSGD
# r = 1, 2, 4, fp16, int8, int4 (64-value blocks), topk (2 %, global), GradiVeQ (64-value
# slices, k = 2 coefficients each: about PowerSGD r = 2's bytes on the CNN). Writes bench/results/compression-<model>[-<net>].{csv,md,png}.
#
#   bench/compression.sh                 # bounded default (~15 min on 2 cores): MLP 300 steps, CNN 120 steps
#   bench/compression.sh --full          # 2 epochs each (MLP 938 steps, CNN 468 steps; about an hour on 2 cores)
#   bench/compression.sh --models cnn --methods dense,dgc,powersgd2 --steps 234
#   (powersgdRw: PowerSGD rank R after dense all-reduce for the first 10 % of steps, as
#    PyTorch's PowerSGD hook recommends with start_powerSGD_iter; gradiveqK: GradiVeQ with K
#    coefficients per slice of at most 64 values cut along each tensor's kernels, feature maps
#    or rows (compress.slicing shaped), each step's basis from its own covariance, error feedback
#    (its defaults); gradiveqKp: the paper's basis refreshed every 20 steps, no error feedback;
#    gradiveqKf: the same on consecutive 64-value slices of the flat gradient (slicing flat);
#    gradiveqKe: error feedback forced on; gradiveqKm: slicing matrix, each weight matrix cut
#    along its shorter side with a basis of its own)
#   bench/compression.sh --wan           # also under configs/cluster/wan-4region.yaml (if it exists)
#   bench/compression.sh --set train.lr_schedule=cosine   # a job-spec override for every method (repeatable)
#   SUFFIX=-2epochs bench/compression.sh --full --models cnn --methods dense,dgc,powersgd2
#                                        # results in compression-cnn-2epochs.{csv,md,png}
#
# Columns: compression_ratio is the reducer's: dense fp32 ring all-reduce bytes of the same
# gradients / bytes this rank's reducer actually put on the wire (measured by a byte-counting
# Communicator; warm-up, indices and scales included). total_bytes_vs_dense is the whole-run
# bytes_sent_per_rank of the dense run / this run's (initial broadcast and evaluation included).
set -euo pipefail
cd "$(dirname "$0")/.."

full=0; wan=0; models="mlp cnn"; methods="dense dgc powersgd1 powersgd2 powersgd4 fp16 int8 int4 topk gradiveq2"
steps_override=""; extra=(); build_dir="${TERN_BUILD_DIR:-build-compress}"; workers=4
while [[ $# -gt 0 ]]; do
  case "$1" in
    --full) full=1 ;;
    --wan) wan=1 ;;
    --models) models="${2//,/ }"; shift ;;
    --methods) methods="${2//,/ }"; shift ;;
    --steps) steps_override="$2"; shift ;;
    --set) extra+=(--set "$2"); shift ;;
    --build-dir) build_dir="$2"; shift ;;
    -h|--help) sed -n 2,25p "$0"; exit 0 ;;
    *) echo "unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

trainer="$build_dir/bin/tern-trainer"
if [[ ! -x "$trainer" ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DTERN_BUILD_CONTROL=OFF >/dev/null
  ninja -C "$build_dir" -j2 tern-trainer
fi

networks=("local")
wan_file=configs/cluster/wan-4region.yaml
if [[ $wan == 1 ]]; then
  if [[ -f $wan_file ]]; then networks+=("wan"); else echo "note: $wan_file does not exist yet; local only" >&2; fi
fi

mkdir -p bench/results
raw=$(mktemp -d /tmp/tern-compression-XXXX)

for model in $models; do
  if [[ $model == mlp ]]; then spec=configs/jobs/fmnist-mlp.yaml; default_steps=300; full_steps=938
  else spec=configs/jobs/fmnist-cnn.yaml; default_steps=120; full_steps=468; fi
  steps=$([[ $full == 1 ]] && echo $full_steps || echo $default_steps)
  [[ -n $steps_override ]] && steps=$steps_override
  # DGC warm-up: one stage at 0.39 % for the first 1/12 of the run (see the note in the results).
  warm=$(( steps / 12 > 0 ? steps / 12 : 1 ))
  for net in "${networks[@]}"; do
    for method in $methods; do
      args=(--set train.steps=$steps --set train.log_every=20 "${extra[@]}")
      case $method in
        dense) ;;
        dgc) args+=(--set compress.method=dgc --set compress.density=0.001 --set compress.value_bits=16
                    --set "compress.warmup_densities=[0.00390625]" --set compress.warmup_steps=$warm) ;;
        powersgd*w) r=${method#powersgd}; r=${r%w}  # dense for the first 10 % of steps (start_iter)
                    args+=(--set compress.method=powersgd --set compress.rank=$r --set compress.start_iter=$(( steps / 10 ))) ;;
        powersgd*) args+=(--set compress.method=powersgd --set compress.rank=${method#powersgd}) ;;
        gradiveq*e) k=${method#gradiveq}; k=${k%e}  # error feedback on, whatever the refresh
                    args+=(--set compress.method=gradiveq --set compress.basis_size=$k --set compress.error_feedback=true) ;;
        gradiveq*p) k=${method#gradiveq}; k=${k%p}  # the paper's periodic basis, no error feedback
                    args+=(--set compress.method=gradiveq --set compress.basis_size=$k --set compress.refresh_every=20) ;;
        gradiveq*f) k=${method#gradiveq}; k=${k%f}  # consecutive slices of 64, periodic basis
                    args+=(--set compress.method=gradiveq --set compress.basis_size=$k --set compress.slicing=flat
                           --set compress.refresh_every=20) ;;
        gradiveq*m) k=${method#gradiveq}; k=${k%m}  # each matrix by its shorter side, own basis
                    args+=(--set compress.method=gradiveq --set compress.basis_size=$k --set compress.slicing=matrix) ;;
        gradiveq*) args+=(--set compress.method=gradiveq --set compress.basis_size=${method#gradiveq}) ;;
        fp16|int8|int4|topk) args+=(--set compress.method=$method) ;;
        *) echo "unknown method $method" >&2; exit 2 ;;
      esac
      cluster=()
      [[ $net == wan ]] && cluster=(--cluster "$wan_file")
      echo "== $model $net $method ($steps steps, $workers ranks)" >&2
      python3 bench/compression_run.py --trainer "$trainer" --spec "$spec" --workers $workers \
        "${cluster[@]}" "${args[@]}" --log-dir "$raw/$model-$net-$method" > "$raw/$model-$net-$method.json"
    done
    EXTRA="${extra[*]}" python3 - "$raw" "$model" "$net" "$methods" <<'EOF'
import json, os, sys
raw, model, net, methods = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
rows = []
for m in methods:
    with open(f"{raw}/{model}-{net}-{m}.json") as f:
        rows.append((m, json.load(f)))
dense = dict(rows).get("dense")
suffix = ("" if net == "local" else "-" + net) + os.environ.get("SUFFIX", "")
cols = ["model", "network", "method", "steps", "samples", "test_accuracy", "acc_vs_dense_pts",
        "compression_ratio", "reducer_bytes_per_rank", "bytes_sent_per_rank", "total_bytes_vs_dense",
        "samples_per_s", "compress_s", "wall_s"]
out = []
for m, s in rows:
    out.append({
        "model": model, "network": net, "method": m, "steps": s["steps"], "samples": s["samples"],
        "test_accuracy": s["test_accuracy"],
        "acc_vs_dense_pts": 100 * (s["test_accuracy"] - dense["test_accuracy"]) if dense else float("nan"),
        "compression_ratio": s["compression_ratio"], "reducer_bytes_per_rank": s["reducer_bytes_per_rank"],
        "bytes_sent_per_rank": s["bytes_sent_per_rank"],
        "total_bytes_vs_dense": dense["bytes_sent_per_rank"] / s["bytes_sent_per_rank"] if dense else float("nan"),
        "samples_per_s": s["samples_per_s"], "compress_s": s["compress_s"], "wall_s": s["wall_s"]})
base = f"bench/results/compression-{model}{suffix}"
with open(base + ".csv", "w") as f:
    f.write(",".join(cols) + "\n")
    for r in out:
        f.write(",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n")
fmt = {"test_accuracy": "{:.4f}", "acc_vs_dense_pts": "{:+.2f}", "compression_ratio": "{:.1f}x",
       "total_bytes_vs_dense": "{:.1f}x", "samples_per_s": "{:.0f}", "compress_s": "{:.2f}", "wall_s": "{:.1f}"}
show = ["method", "steps", "samples", "test_accuracy", "acc_vs_dense_pts", "compression_ratio",
        "reducer_bytes_per_rank", "total_bytes_vs_dense", "samples_per_s", "compress_s", "wall_s"]
extra = os.environ.get("EXTRA", "").replace("--set ", "")
lines = [f"Fashion-MNIST {model.upper()}, 4 ranks, network: {net}" + (f", every method with {extra}" if extra else ""),
         "", "| " + " | ".join(show) + " |", "|" + "---|" * len(show)]
for r in out:
    lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in show) + " |")
text = "\n".join(lines) + "\n"
with open(base + ".md", "w") as f:
    f.write(text)
print(text)
EOF
    csv="bench/results/compression-$model$([[ $net == local ]] || echo "-$net")${SUFFIX:-}.csv"
    if command -v gnuplot >/dev/null; then
      gnuplot <<EOF
set datafile separator ","
set terminal pngcairo size 1500,450 font ",10"
set output "${csv%.csv}.png"
set multiplot layout 1,3 title "Fashion-MNIST ${model^^}, 4 ranks, ${net}"
set style fill solid 0.7
set boxwidth 0.6
set xtics rotate by -30
set key off
set grid ytics
set logscale y
set title "compression ratio (vs dense fp32, log)"
plot "$csv" every ::1 using 0:8:xtic(3) with boxes lc rgb "#4477aa"
unset logscale y
set title "samples/s"
plot "$csv" every ::1 using 0:12:xtic(3) with boxes lc rgb "#228833"
set title "final test accuracy"
set yrange [*:*]
plot "$csv" every ::1 using 0:6:xtic(3) with boxes lc rgb "#cc6677"
unset multiplot
EOF
      echo "plot: ${csv%.csv}.png" >&2
    fi
  done
done
echo "raw summaries and logs: $raw" >&2
