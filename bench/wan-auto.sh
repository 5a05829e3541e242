#!/usr/bin/env bash
# Automatic d and T against the hand-picked DiLoCo row, repeated (issue 21: auto within 0.02 of
# the best hand-picked throughput ratio and within 0.3 points of its accuracy, on wan-4region and
# wan-2region). One run of bench/wan.sh per repeat, each with SSGD without WAN (the reference),
# the hand-picked chunked-top-k DiLoCo row (d 12, T 48) and the same with `delay: auto`,
# `period: auto`, on both WAN models. On a shared machine a single run's ratio moves by 0.1 or
# more between runs of the same config, so this reports each repeat's auto-minus-hand difference
# (same run, same reference) and their mean and standard deviation.
#   bench/wan-auto.sh                # 3 repeats of the job's 2 epochs (about 5 min each on 2 cores)
#   REPEATS=5 TAG=-b bench/wan-auto.sh
#   SUMMARY_ONLY=1 bench/wan-auto.sh # summarise the CSVs of an earlier run
# Output: a table, bench/results/wan-auto<TAG>.csv (one row per repeat and WAN model) and the
# runs' own CSVs bench/results/wan-mlp-auto<TAG>-r<i>.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-3}
TAG=${TAG:-}
OUT=bench/results
ROWS="ssgd-lan diloco-ctopk4-d12-T48 diloco-ctopk4-auto w2-diloco-ctopk4-d12-T48 w2-diloco-ctopk4-auto"
if [ "${SUMMARY_ONLY:-0}" != 1 ]; then
  for i in $(seq 1 "$REPEATS"); do
    echo "repeat $i of $REPEATS" >&2
    STEPS=0 EVAL_EVERY=${EVAL_EVERY:-0} SUFFIX="-auto$TAG-r$i" ONLY="$ROWS" bench/wan.sh > /dev/null
  done
fi
/usr/bin/python3 - "$OUT" "$TAG" "$REPEATS" <<'PY'
import csv, statistics, sys
out, tag, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = []
for i in range(1, repeats + 1):
    by = {r["config"]: r for r in csv.DictReader(open(f"{out}/wan-mlp-auto{tag}-r{i}.csv"))}
    for wan, prefix in (("wan-4region", ""), ("wan-2region", "w2-")):
        hand, auto = by[prefix + "diloco-ctopk4-d12-T48"], by[prefix + "diloco-ctopk4-auto"]
        rows.append({
            "repeat": i, "wan": wan,
            "hand_ratio": float(hand["ratio_to_ref"]), "auto_ratio": float(auto["ratio_to_ref"]),
            "ratio_diff": round(float(auto["ratio_to_ref"]) - float(hand["ratio_to_ref"]), 3),
            "hand_acc": float(hand["test_accuracy"]), "auto_acc": float(auto["test_accuracy"]),
            "acc_diff_pts": round(100 * (float(auto["test_accuracy"]) - float(hand["test_accuracy"])), 2),
            "auto_delay": int(float(auto["delay"])), "auto_period": int(float(auto["period"])),
            "hand_fewer_bytes_x": float(hand["fewer_bytes_x"]),
            "auto_fewer_bytes_x": float(auto["fewer_bytes_x"])})
with open(f"{out}/wan-auto{tag}.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
print("repeat  wan          hand ratio  auto ratio  diff    hand acc  auto acc  diff pts  auto d/T  bytes x hand/auto")
for r in rows:
    print(f"{r['repeat']:<7} {r['wan']:<12} {r['hand_ratio']:<11.3f} {r['auto_ratio']:<11.3f} "
          f"{r['ratio_diff']:+.3f}  {r['hand_acc']:<9.4f} {r['auto_acc']:<9.4f} {r['acc_diff_pts']:+.2f}     "
          f"{r['auto_delay']}/{r['auto_period']:<6} {r['hand_fewer_bytes_x']:.0f}/{r['auto_fewer_bytes_x']:.0f}")
for wan in ("wan-4region", "wan-2region"):
    d = [r["ratio_diff"] for r in rows if r["wan"] == wan]
    a = [r["acc_diff_pts"] for r in rows if r["wan"] == wan]
    sd = statistics.stdev(d) if len(d) > 1 else float("nan")
    print(f"{wan}: auto - hand throughput ratio mean {statistics.mean(d):+.3f} (sd {sd:.3f}, "
          f"{len(d)} repeats); accuracy mean {statistics.mean(a):+.2f} pts")
print(f"csv: {out}/wan-auto{tag}.csv")
PY
