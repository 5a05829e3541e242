#!/usr/bin/env bash
# Partitions and fencing on a 4-host cluster in network namespaces. A 3-rank SSGD job with
# recovery.mode partial runs on hosts 1-4 (one spare). Rank 2's host loses its link mid-job:
#   - its lease expires and the coordinator restarts rank 2 on the spare host at generation 2;
#     the survivors keep their state and the job finishes SUCCEEDED;
#   - when the link comes back, the old daemon's heartbeat is refused (its session was written
#     off with its lease): it stops its trainer (the old generation's) and registers again,
#     idle; nothing the old trainer wrote after the cut reaches the coordinator's copy of rank
#     2's log, and the coordinator's rank 2 stays the new one (host, generation, steps).
. "$(dirname "$0")/lib.sh"
netns_skip_unless_possible
netns_up 4 --lease-ms 1500 --heartbeat-ms 200
log "cluster $TAG up"

tiny_job "$WORK/job.yaml" 150 "{strategy: ssgd, timeout_s: 15}"
cat >>"$WORK/job.yaml" <<'YAML'
recovery: {mode: partial, max_recoveries: 2}
YAML
job=$(submit "$WORK/job.yaml" --set workers=3)
wait_state "$job" RUNNING 60
rank_field() {  # rank python-expression-over-r
  tern_ status "$job" --json >"$WORK/s.json" 2>/dev/null && json_get "$WORK/s.json" "[r for r in j['ranks'] if r['rank'] == $1][0]$2"
}
at_step() { local s; s=$(rank_field 2 "['step']") && [ "${s:-0}" -ge "$1" ]; }
wait_for 90 at_step 20 || fail "rank 2 never reached step 20"
victim_host=$(rank_field 2 "['host']")
victim=${victim_host##*.}
victim=$((victim - 1))  # host index: address 198.18.0.(i+1)
[ "$victim" -ge 1 ] && [ "$victim" -le 4 ] || fail "rank 2 on unexpected host $victim_host"
vns_var="NS_$victim"
old_pid=$(for p in $(ip netns pids "${!vns_var}"); do
            if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = tern-trainer ]; then echo "$p"; fi; done | head -1)
[ -n "$old_pid" ] || fail "no trainer in host $victim's namespace"
old_log="$DIR/work/h$victim/$job/rank-2.log"
[ -f "$old_log" ] || fail "no $old_log"
gen_before=$(json_get "$WORK/s.json" 'j["generation"]')

log "cutting host $victim ($victim_host, rank 2, trainer pid $old_pid) off at step $(rank_field 2 "['step']")"
"$NC" link "$TAG" "$victim" down
cut_size=$(stat -c %s "$old_log")

moved() {
  local w; w=$(rank_field 2 "['worker_id']") && [ -n "$w" ] && [ "$w" != "h$victim" ] &&
    [ "$(json_get "$WORK/s.json" 'j["generation"]')" -gt "$gen_before" ]
}
wait_for 30 moved || { tern_ status "$job" >&2; fail "rank 2 was not moved off host $victim"; }
log "rank 2 moved to $(rank_field 2 "['worker_id']") at generation $(json_get "$WORK/s.json" 'j["generation"]')"
kill -0 "$old_pid" 2>/dev/null || fail "the old trainer died while its host was cut off (it should only learn on reconnect)"
sleep 2  # the old trainer is still running, cut off, while the new generation trains

"$NC" link "$TAG" "$victim" up
log "host $victim back"
gone() { ! kill -0 "$old_pid" 2>/dev/null; }
wait_for 30 gone || fail "the old trainer $old_pid is still running 30 s after its host came back"
grep -q "heartbeat refused" "$DIR/logs/worker-h$victim.log" ||
  fail "the old daemon did not learn its session was written off"
log "old trainer stopped by its daemon: $(grep -m1 'heartbeat refused' "$DIR/logs/worker-h$victim.log" | cut -c1-160)"

wait_state "$job" SUCCEEDED 180
tern_ status "$job" --json >"$WORK/final.json"
"$PY" - "$WORK/final.json" "h$victim" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
victim = sys.argv[2]
r2 = [r for r in j["ranks"] if r["rank"] == 2][0]
assert r2["worker_id"] != victim, r2
assert r2["state"] == "SUCCEEDED", r2
assert int(j["recoveries"]) == 1, j["recoveries"]
assert int(j["generation"]) >= 2, j["generation"]
print("final: rank 2 on", r2["worker_id"], "generation", j["generation"], "recoveries", j["recoveries"])
PY
# The old trainer's bytes after the cut are not in the coordinator's copy of rank 2's log.
tail -c +"$((cut_size + 1))" "$old_log" >"$WORK/after_cut.log"
tern_ logs "$job" --rank 2 >"$WORK/coordinator_rank2.log"
after_lines=0
while IFS= read -r line; do
  [ ${#line} -lt 20 ] && continue
  after_lines=$((after_lines + 1))
  if grep -qF -- "$line" "$WORK/coordinator_rank2.log"; then
    fail "a line the old trainer wrote after the cut reached the coordinator: $line"
  fi
done <"$WORK/after_cut.log"
log "old trainer wrote $after_lines lines after the cut; none reached the coordinator:"
cut -c1-200 "$WORK/after_cut.log" | head -5
[ "$after_lines" -gt 0 ] || fail "the old trainer wrote nothing after the cut (nothing to check the fence with)"
# The host that came back is READY and idle.
tern_ workers --json >"$WORK/workers.json"
json_get "$WORK/workers.json" "[w for w in j['workers'] if w['worker_id'] == 'h$victim'][0]['state']" | grep -q READY ||
  fail "host $victim did not register again"
grep "lost\|fenced" "$DIR/logs/coordinator.log" | cut -c1-200 || true
echo PASSED
