#!/bin/bash
# A fake tern-trainer for control-plane tests: takes trainer_protocol.h's command line, prints
# its JSON-lines events on stdout and logs on stderr, and obeys {"cmd": "stop"} on stdin.
# Behaviour comes from the job spec's name (specs reject unknown keys):
#   name contains "hang"   -> runs until stopped (exits 6) or killed
#   name contains "crash"  -> rank 1 (or rank 0 in a 1-rank job) fails with exit code 4 at step 2
#   name contains "regroup"-> elastic regroup (recovery.mode partial): at generation 1 rank 1
#                             fails with exit code 4 at step 2; the others then emit peer_lost
#                             and wait for {"cmd": "regroup", ...} on stdin (echoed to stderr),
#                             switch to its generation, emit regrouped and train on
#   otherwise              -> FAKE_STEPS steps (default 6), FAKE_STEP_S seconds each (default 0.05)
set -u
spec="" rank=0 world=1 job="" gen=0 master="" workdir="" cluster="" regions="" bind=""
while [ $# -gt 0 ]; do
  case "$1" in
    --spec) spec="$2"; shift 2 ;;
    --rank) rank="$2"; shift 2 ;;
    --world) world="$2"; shift 2 ;;
    --job) job="$2"; shift 2 ;;
    --generation) gen="$2"; shift 2 ;;
    --master) master="$2"; shift 2 ;;
    --work-dir) workdir="$2"; shift 2 ;;
    --cluster) cluster="$2"; shift 2 ;;
    --regions) regions="$2"; shift 2 ;;
    --bind) bind="$2"; shift 2 ;;
    *) echo "fake trainer: unknown flag $1" >&2; exit 2 ;;
  esac
done
[ -r "$spec" ] || { echo "fake trainer: no spec at '$spec'" >&2; exit 2; }
name=$(sed -n 's/^name: *//p' "$spec" | head -1)
steps=${FAKE_STEPS:-6}
step_s=${FAKE_STEP_S:-0.05}
crash_rank=1; [ "$world" -lt 2 ] && crash_rank=0
now() { date +%s.%N; }
emit() { echo "{\"event\": \"$1\", \"job\": \"$job\", \"rank\": $rank, \"generation\": $gen, \"time\": $(now)$2}"; }
# A regroup command ($1): later events carry its generation.
regroup() {
  echo "fake trainer: regroup command: $1" >&2
  gen=$(echo "$1" | sed -n 's/.*"generation": *\([0-9]*\).*/\1/p')
  emit regrouped ", \"step\": $step, \"world\": $world"
}

nice_value=$(awk '{print $19}' /proc/self/stat 2>/dev/null)
echo "fake trainer: job=$job rank=$rank/$world gen=$gen master=$master name=$name cluster=$cluster regions=$regions nice=$nice_value" >&2
emit started ", \"world\": $world, \"pid\": $$"
case "$name" in *hang*) steps=1000000 ;; esac
step=0
while [ "$step" -lt "$steps" ]; do
  # Wait one step for a command on stdin (a stop request ends the trainer with code 6).
  if read -r -t "$step_s" line; then
    case "$line" in
      *stop*) echo "fake trainer: stop requested" >&2; emit error ", \"message\": \"stopped by parent\", \"code\": 6"; exit 6 ;;
      *regroup*) regroup "$line" ;;
    esac
  elif [ $? -le 128 ]; then
    sleep "$step_s"  # stdin is closed: just pace the loop
  fi
  step=$((step + 1))
  if [ "$step" -eq 2 ] && [ "$rank" -eq "$crash_rank" ] && case "$name" in *crash*) true ;; *) false ;; esac; then
    echo "fake trainer: simulated peer loss at step $step" >&2
    emit error ", \"message\": \"collective timed out at step $step\", \"code\": 4"
    exit 4
  fi
  if [ "$step" -eq 2 ] && [ "$gen" -eq 1 ] && case "$name" in *regroup*) true ;; *) false ;; esac; then
    if [ "$rank" -eq "$crash_rank" ]; then
      echo "fake trainer: simulated crash at step $step" >&2
      exit 4
    fi
    emit peer_lost ", \"step\": $step, \"message\": \"peer $crash_rank closed the connection\""
    if ! read -r -t 30 line; then echo "fake trainer: no regroup command" >&2; exit 4; fi
    case "$line" in
      *regroup*) regroup "$line" ;;
      *) echo "fake trainer: stopped while waiting for a regroup" >&2; exit 6 ;;
    esac
  fi
  loss=$(awk "BEGIN { printf \"%.4f\", 2.0 / ($step + 1) }")
  epoch=$(awk "BEGIN { printf \"%.4f\", $step / $steps }")
  emit progress ", \"step\": $step, \"total_steps\": $steps, \"epoch\": $epoch, \"loss\": $loss, \"samples_per_s\": 1000.0, \"bytes_sent\": $((step * 4096)), \"compute_s\": 0.01, \"wait_s\": 0.002, \"staleness\": 1.5"
  echo "fake trainer: step $step loss $loss" >&2
done
emit eval ", \"step\": $step, \"test_accuracy\": 0.875, \"test_loss\": 0.3, \"test_auc\": 0.8125"
emit finished ", \"summary\": {\"steps\": $step, \"epochs\": 1, \"samples\": $((step * 32)), \"samples_per_s\": 1000.0, \"final_loss\": $loss, \"test_accuracy\": 0.875, \"wall_s\": 0.5}"
echo "fake trainer: done" >&2
exit 0
