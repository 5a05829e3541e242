#!/usr/bin/env bash
# The small language model (issue 20) across the world: configs/jobs/tinylm.yaml (a 1.07M-
# parameter GPT-style char LM, examples/export_tinylm.py, on Debian's fortunes as byte tokens,
# scripts/make-tokens.sh), 4 ranks on this machine, the same tokens in every run:
#   ssgd-lan     SSGD without WAN emulation: the reference
#   dts-wan      DTS d=8 T=32 (configs/jobs/tinylm-dts-wan.yaml, lr 0.15) under
#                configs/cluster/wan-4region.yaml
#   dts-wan-lr0.25  the same with SSGD's lr 0.25 (the averaged models jump at the syncs)
#   dts-wan-avgmom  lr 0.25 with sync.average_momentum (momentum buffers averaged at each sync)
#   dts-wan-lr0.1   lr 0.1
#   ssgd-wan     SSGD under the same WAN
#   auto-wan     DTS with sync.delay and sync.period auto (issue 21), SSGD's lr 0.25, plain averaging
#   diloco-auto-wan  the same with the outer Nesterov step (sync.outer lr 0.7, momentum 0.5)
#   auto-wan-lr0.15  automatic d and T with DTS's lr 0.15 (configs/jobs/tinylm-dts-wan.yaml)
# Prints test loss (nats per token) against training tokens for each run, the final figures and
# throughput ratios to ssgd-lan; writes bench/results/tinylm.csv and tinylm-curves.csv.
#   bench/tinylm.sh
#   STEPS=80 ONLY="ssgd-lan dts-wan" bench/tinylm.sh
#   TABLE_ONLY=1 bench/tinylm.sh     # the table again from the runs' JSON in bench/results
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TERN_BUILD_DIR:-build}
ONLY=${ONLY:-ssgd-lan dts-wan dts-wan-lr0.25 dts-wan-avgmom dts-wan-lr0.1 ssgd-wan auto-wan diloco-auto-wan auto-wan-lr0.15}
STEPS=${STEPS:-}
OUT=bench/results
mkdir -p "$OUT"
[ -f examples/out/tinylm.pt ] || /usr/bin/python3 examples/export_tinylm.py >&2
[ -f data/tinylm/train.u16 ] || scripts/make-tokens.sh >&2
extra=()
[ -n "$STEPS" ] && extra+=(--set "train.steps=$STEPS")
W4=configs/cluster/wan-4region.yaml

run() {
  local name=$1; shift
  [[ " $ONLY " == *" $name "* ]] || return 0
  [ "${TABLE_ONLY:-0}" = 1 ] && return 0
  echo "running $name ..." >&2
  "$BUILD/bin/tern" run "$@" --workers 4 "${extra[@]}" --json 2>/dev/null | tail -1 > "$OUT/tinylm-$name.json"
}
run ssgd-lan configs/jobs/tinylm.yaml
run dts-wan configs/jobs/tinylm-dts-wan.yaml --cluster "$W4"
run dts-wan-lr0.25 configs/jobs/tinylm-dts-wan.yaml --cluster "$W4" --set train.lr=0.25
run dts-wan-avgmom configs/jobs/tinylm-dts-wan.yaml --cluster "$W4" --set train.lr=0.25 --set sync.average_momentum=true
run dts-wan-lr0.1 configs/jobs/tinylm-dts-wan.yaml --cluster "$W4" --set train.lr=0.1
run ssgd-wan configs/jobs/tinylm.yaml --cluster "$W4"
AUTO=(--set sync.strategy=dts --set sync.delay=auto --set sync.period=auto)
run auto-wan configs/jobs/tinylm.yaml --cluster "$W4" "${AUTO[@]}"
run diloco-auto-wan configs/jobs/tinylm.yaml --cluster "$W4" "${AUTO[@]}" --set "sync.outer={lr: 0.7, momentum: 0.5, nesterov: true}"
run auto-wan-lr0.15 configs/jobs/tinylm-dts-wan.yaml --cluster "$W4" "${AUTO[@]}"

/usr/bin/python3 - "$OUT" $ONLY <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
runs = {}
for n in names:
    try:
        runs[n] = json.load(open(f"{out}/tinylm-{n}.json"))
    except (OSError, ValueError):
        print(f"{n}: no result", file=sys.stderr)
ref = runs.get("ssgd-lan")
curves = ["config,step,tokens,train_s,test_loss,test_perplexity"]
rows = ["config,state,steps,tokens,wall_s,tokens_per_s,throughput_ratio,test_loss,loss_vs_ssgd_pct,test_perplexity,test_accuracy,bytes_sent_per_rank,delay,period"]
for n, r in runs.items():
    if r.get("state") != "SUCCEEDED":
        rows.append(f"{n},{r.get('state')},,,,,,,,,,,,")
        continue
    tok_per_step = 4 * 8 * 64  # workers x batch x block (the specs' values)
    for e in r.get("evals", []):
        curves.append(f"{n},{e['step']},{e['step'] * tok_per_step},{e.get('train_s', 0):.1f},{e['test_loss']:.4f},{e.get('test_perplexity', 0):.2f}")
    tps = r["samples_per_s"] * 64
    ratio = r["samples_per_s"] / ref["samples_per_s"] if ref and ref.get("samples_per_s") else float("nan")
    dloss = (r["test_loss"] / ref["test_loss"] - 1) * 100 if ref and ref.get("test_loss") else float("nan")
    rows.append(f"{n},SUCCEEDED,{r['steps']},{r['steps'] * tok_per_step},{r['wall_s']:.1f},{tps:.0f},{ratio:.3f},"
                f"{r['test_loss']:.4f},{dloss:+.2f},{r.get('test_perplexity', 0):.2f},{r.get('test_accuracy', 0):.4f},"
                f"{int(r.get('bytes_sent_per_rank', 0))},{r.get('delay', '')},{r.get('period', '')}")
open(f"{out}/tinylm.csv", "w").write("\n".join(rows) + "\n")
open(f"{out}/tinylm-curves.csv", "w").write("\n".join(curves) + "\n")
def table(lines):
    cells = [l.split(",") for l in lines]
    w = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    for c in cells: print("  ".join(x.ljust(w[i]) for i, x in enumerate(c)))
print("tiny LM (1.07M parameters, byte tokens of Debian's fortunes), 4 ranks; test loss in nats per token")
table(curves); print(); table(rows)
print(f"\ncsv: {out}/tinylm.csv, {out}/tinylm-curves.csv")
PY
