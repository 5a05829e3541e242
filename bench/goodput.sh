#!/usr/bin/env bash
# Goodput under repeated failures (issue 22): the Fashion-MNIST MLP on a real local cluster (the
# coordinator and 4 worker daemons as processes, 1 slot each), submitted over gRPC, while this
# script kill -9s a random trainer of the job every KILL_EVERY seconds. One run per recovery
# mode, all in this run on this machine:
#   clean      recovery.mode partial, nothing killed (the reference)
#   elastic    partial + recovery.min_workers 3: survivors go on at once at world 3, the
#              replacement starts as a standby and the group grows back when it is ready
#   partial    partial, fixed size: survivors wait for the replacement trainer to start
#   full       recovery.mode full, checkpoints every CKPT_EVERY steps: everybody rolls back
#   elastic-daemon  like elastic, but the victim is a worker daemon (its trainer dies with it;
#              the daemon is started again DAEMON_BACK seconds later, so the worker is away)
# Goodput = (samples / wall) over the clean run's (samples / wall), wall from submit to the end
# (startup included, the same for every row). Time to training again per failure comes from the
# coordinator's recovery timelines (tern status --json): from the loss (the daemon saw the
# trainer exit, or the worker's last heartbeat) to the last member's first step in the new
# group; p50 and max over the job's losses (grows are listed apart).
# Prints a table; writes bench/results/goodput.csv and goodput.png.
#   bench/goodput.sh
#   EPOCHS=2 KILL_EVERY=20 ONLY="clean elastic" bench/goodput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TERN_BUILD_DIR:-build}/bin
JOB=${JOB:-configs/jobs/fmnist-mlp.yaml}
EPOCHS=${EPOCHS:-3}
KILL_EVERY=${KILL_EVERY:-30}
CKPT_EVERY=${CKPT_EVERY:-100}
DAEMON_BACK=${DAEMON_BACK:-8}
ONLY=${ONLY:-clean elastic partial full elastic-daemon}
PORT=${PORT:-17191}
OUT=bench/results
mkdir -p "$OUT"
CSV=$OUT/goodput${SUFFIX:-}.csv
work=$(mktemp -d /tmp/tern-goodput-XXXX)
cluster=$work/cluster.yaml
cat > "$cluster" <<EOF
name: goodput
coordinator: {listen: 127.0.0.1:$PORT, heartbeat_ms: 500, lease_ms: 3000}
state_dir: $work/state
regions:
  - {name: local, workers: 4, slots: 1}
EOF
"$BIN/tern" cluster up "$cluster" >/dev/null
trap '"$BIN/tern" cluster down "$cluster" >/dev/null 2>&1 || true' EXIT

terminal() {  # job id -> 0 when the job has ended
  "$BIN/tern" status "$1" --cluster "$cluster" --json 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["state"] in ("SUCCEEDED","FAILED","CANCELLED") else 1)' 2>/dev/null
}

# pids of the job's training trainers, of this cluster only (the spec path is under this run's
# state dir: job ids repeat across clusters on one machine). A standby is left alone until it
# has joined: its rank is then in the job's `members` (an elastic job; a fixed-size job has no
# member list and no standbys).
trainers() {
  local members
  members=$("$BIN/tern" status "$1" --cluster "$cluster" --json 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; print(" ".join(str(m) for m in json.load(sys.stdin).get("members", [])))' 2>/dev/null || true)
  for p in $(pgrep -f -- "tern-trainer --spec $work/state/work/[^ ]*/$1/spec.yaml .*--job $1 " || true); do
    if grep -qa -- "--standby" "/proc/$p/cmdline" 2>/dev/null; then
      r=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | sed -n 's/.*--rank \([0-9]*\).*/\1/p')
      [ -n "$r" ] && [[ " $members " == *" $r "* ]] && echo "$p"
    else
      echo "$p"
    fi
  done
}

kill_loop() {  # job id, victim kind (trainer | daemon); logs "unix_time what" lines
  local id=$1 kind=$2
  while sleep "$KILL_EVERY"; do
    terminal "$id" && break
    if [ "$kind" = trainer ]; then
      mapfile -t pids < <(trainers "$id")
      [ ${#pids[@]} -gt 0 ] || continue
      victim=${pids[RANDOM % ${#pids[@]}]}
      kill -9 "$victim" 2>/dev/null && echo "$(date +%s.%N) trainer $victim"
    else
      n=$((RANDOM % 4))
      pidfile=$work/state/run/local-$n.pid
      [ -f "$pidfile" ] || continue
      dpid=$(cat "$pidfile")
      mapfile -d '' argv < "/proc/$dpid/cmdline" || continue
      kill -9 "$dpid" 2>/dev/null && echo "$(date +%s.%N) daemon local-$n"
      sleep "$DAEMON_BACK"
      (cd "$work" && setsid "${argv[@]}" >> "$work/state/logs/local-$n.log" 2>&1 < /dev/null &
       echo $! > "$pidfile")
    fi
  done
}

run() {  # name, victim (none | trainer | daemon), --set args...
  local name=$1 victim=$2; shift 2
  local id t0 t1 killer=
  t0=$(date +%s.%N)
  id=$("$BIN/tern" submit "$JOB" --cluster "$cluster" --json --set train.epochs="$EPOCHS" "$@" |
       /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
  if [ "$victim" != none ]; then
    kill_loop "$id" "$victim" > "$work/$name.kills" &
    killer=$!
  fi
  until terminal "$id"; do sleep 0.5; done
  t1=$(date +%s.%N)
  [ -n "$killer" ] && { kill "$killer" 2>/dev/null || true; wait "$killer" 2>/dev/null || true; }
  "$BIN/tern" status "$id" --cluster "$cluster" --json > "$work/$name.json"
  /usr/bin/python3 - "$name" "$work/$name.json" "$t0" "$t1" "$work/$name.kills" <<'PY'
import json, os, statistics, sys
name, path, t0, t1, kills = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
s = json.load(open(path))
m = s.get("summary", {})
n_kills = sum(1 for _ in open(kills)) if os.path.exists(kills) else 0
losses = [t["training_again"] - t["lost"] for t in s.get("timelines", [])
          if not t.get("grow") and t.get("lost", 0) > 0 and t.get("training_again", 0) > 0]
grows = [t["training_again"] - t["decided"] for t in s.get("timelines", [])
         if t.get("grow") and t.get("training_again", 0) > 0]
fmt = lambda v: f"{v:.2f}" if v is not None else "-"
p50 = statistics.median(losses) if losses else None
mx = max(losses) if losses else None
grow = statistics.median(grows) if grows else None
print(",".join(str(x) for x in [
    name, s.get("state", "?"), s.get("test_accuracy", 0), round(t1 - t0, 1),
    int(m.get("samples", 0)), n_kills, int(s.get("recoveries", 0)), fmt(p50), fmt(mx), fmt(grow),
    int(m.get("min_world", 0)), int(m.get("steps_rolled_back", 0))]))
PY
  echo "  $name done ($(cat "$work/$name.kills" 2>/dev/null | wc -l) kills)" >&2
}

{
  echo "config,state,test_accuracy,wall_s,samples,kills,recoveries,again_p50_s,again_max_s,grow_pause_s,min_world,steps_rolled_back"
  for mode in $ONLY; do
    case $mode in
      clean)   run clean none --set recovery.mode=partial ;;
      elastic) run elastic trainer --set recovery.mode=partial --set recovery.min_workers=3 --set recovery.max_recoveries=100 ;;
      partial) run partial trainer --set recovery.mode=partial --set recovery.max_recoveries=100 ;;
      full)    run full trainer --set recovery.mode=full --set recovery.checkpoint_every="$CKPT_EVERY" --set recovery.max_recoveries=100 ;;
      elastic-daemon) run elastic-daemon daemon --set recovery.mode=partial --set recovery.min_workers=3 --set recovery.max_recoveries=100 ;;
      *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
  done
} > "$CSV.tmp"
/usr/bin/python3 - "$CSV.tmp" "$CSV" "$OUT/goodput${SUFFIX:-}.png" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ref = next((r for r in rows if r["config"] == "clean"), None)
cols = list(rows[0].keys())
cols[4:4] = ["goodput", "acc_delta_pts"]
for r in rows:
    rate = float(r["samples"]) / float(r["wall_s"]) if float(r["wall_s"]) > 0 else 0
    if ref:
        ref_rate = float(ref["samples"]) / float(ref["wall_s"])
        r["goodput"] = f"{rate / ref_rate:.3f}"
        r["acc_delta_pts"] = f"{(float(r['test_accuracy']) - float(ref['test_accuracy'])) * 100:+.2f}"
    else:
        r["goodput"], r["acc_delta_pts"] = "-", "-"
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["config"] for r in rows]
    vals = [float(r["goodput"]) if r["goodput"] != "-" else 0 for r in rows]
    ax.bar(names, vals, color=["#888"] + ["#3a7"] * (len(rows) - 1))
    ax.axhline(0.9, ls="--", color="#c33", lw=1)
    ax.set_ylabel("goodput (vs clean)")
    ax.set_title("MLP, 4 ranks, kill -9 of a random trainer or daemon, repeatedly")
    fig.tight_layout()
    fig.savefig(sys.argv[3], dpi=110)
except ImportError:
    pass
PY
rm -f "$CSV.tmp"
echo "Goodput: $JOB, $EPOCHS epochs, 4 daemons x 1 slot, a kill -9 every ${KILL_EVERY}s, $(nproc) cores"
column -t -s, "$CSV"
echo "logs and status: $work"
