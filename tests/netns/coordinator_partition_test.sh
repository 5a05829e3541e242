#!/usr/bin/env bash
# The coordinator cut off from every worker (host 0's link down) while a 4-rank SSGD job with
# recovery.mode partial trains on hosts 1-4; the workers still reach each other.
#   - Shorter than a lease (0.5 s against 2 s): nothing is lost. The trainers never needed
#     the coordinator, the daemons' heartbeats resume, the job keeps generation 1 with no
#     recovery and finishes SUCCEEDED.
#   - Longer than a lease (4 s): the coordinator sees every worker's lease expire and writes
#     off all four ranks. With nowhere to place them the job waits RUNNING ("waiting for a
#     worker"). The trainers meanwhile train on among themselves. When the link is back each
#     daemon's heartbeat is refused (its session went with its lease): it stops its trainer
#     and registers again; the coordinator then starts all four ranks at a new generation on
#     the returning workers, counted as ONE recovery (the losses of one expiry sweep are one
#     regroup), and with no survivor left the new group starts from step 0 (no checkpoint:
#     recovery.checkpoint_every 0) and finishes SUCCEEDED. The work done during the partition
#     is lost. (Trainers that finish during the partition fare no better: their exits are
#     dropped with their daemon's session and the job runs again.)
. "$(dirname "$0")/lib.sh"
netns_skip_unless_possible
netns_up 4 --lease-ms 2000 --heartbeat-ms 200
log "cluster $TAG up"

# The long partition's job must outlast the partition even on an idle machine (~14 steps/s
# here without load): its trainers are still running when the link comes back.
for steps in 60 150; do
  tiny_job "$WORK/job-$steps.yaml" "$steps" "{strategy: ssgd, timeout_s: 15}"
  echo "recovery: {mode: partial, max_recoveries: 2}" >>"$WORK/job-$steps.yaml"
done
step_of() {  # job: rank 0's step
  tern_ status "$1" --json >"$WORK/s.json" 2>/dev/null && json_get "$WORK/s.json" "j['ranks'][0]['step']"
}
at_step() { local s; s=$(step_of "$1") && [ "${s:-0}" -ge "$2" ]; }

# --- shorter than a lease
job=$(submit "$WORK/job-60.yaml")
wait_state "$job" RUNNING 60
wait_for 90 at_step "$job" 5 || fail "job $job never reached step 5"
s0=$(step_of "$job")
"$NC" link "$TAG" 0 down
log "coordinator cut off at step $s0 for 0.5 s"
sleep 0.5
"$NC" link "$TAG" 0 up
wait_state "$job" SUCCEEDED 180
tern_ status "$job" --json >"$WORK/short.json"
"$PY" - "$WORK/short.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert int(j["generation"]) == 1 and int(j["recoveries"]) == 0, (j["generation"], j["recoveries"], j["reason"])
print("short partition: generation", j["generation"], "recoveries", j["recoveries"], "-", j["reason"])
PY
if grep -q "lost: no heartbeat" "$DIR/logs/coordinator.log"; then fail "a worker was written off by a partition shorter than its lease"; fi

# --- longer than a lease
job=$(submit "$WORK/job-150.yaml")
wait_state "$job" RUNNING 60
wait_for 90 at_step "$job" 5 || fail "job $job never reached step 5"
s0=$(step_of "$job")
# (`if`, not `[ ] && echo`: under set -e a loop whose last process is not a trainer, as after
# a pid wrap-around puts the daemon last, would end the script with no message.)
pids=$(for i in 1 2 3 4; do v="NS_$i"; for p in $(ip netns pids "${!v}"); do
         if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = tern-trainer ]; then echo "$p"; fi; done; done)
[ "$(echo "$pids" | wc -w)" -eq 4 ] || fail "expected 4 trainers, found: $pids"
"$NC" link "$TAG" 0 down
log "coordinator cut off at step $s0 for 4 s (lease 2 s)"
sleep 4
for p in $pids; do kill -0 "$p" 2>/dev/null || fail "trainer $p died while only the coordinator was cut off"; done
"$NC" link "$TAG" 0 up
log "coordinator back"
all_gone() { for p in $pids; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }
wait_for 30 all_gone || fail "the old trainers are still running after the daemons learned they were written off"
[ "$(grep -c "lost: no heartbeat" "$DIR/logs/coordinator.log")" -ge 4 ] || fail "the coordinator did not write off all 4 workers"
wait_state "$job" SUCCEEDED 180
tern_ status "$job" --json >"$WORK/long.json"
"$PY" - "$WORK/long.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert int(j["generation"]) >= 2, j["generation"]
assert int(j["recoveries"]) == 1, (j["recoveries"], j["reason"])
assert all(r["state"] == "SUCCEEDED" for r in j["ranks"]), j["ranks"]
print("long partition: generation", j["generation"], "recoveries", j["recoveries"], "-", j["reason"])
PY
log "what the coordinator saw of the long partition:"
grep -E "lost|regroup|registered|SUCCEEDED|placed" "$DIR/logs/coordinator.log" | grep -v "^.*job j-1" | cut -c12-220 || true
echo PASSED
