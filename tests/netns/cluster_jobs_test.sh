#!/usr/bin/env bash
# A 4-host cluster in network namespaces (scripts/netns-cluster.sh): the coordinator on host 0,
# one worker daemon on each of hosts 1-4, every host its own non-loopback address, mTLS and
# role tokens. An SSGD job and a DTS job of 4 ranks run to SUCCEEDED; `tern status` shows
# each rank on a different host at that host's own address, the rendezvous store (the job's
# master) is on rank 0's host, and every trainer socket is bound to its host's address (ss
# inside each namespace). Trainers can only reach each other this way if their
# Gloo pairs and the store bind their own host's address (127.0.0.1 is a different loopback in
# every namespace).
. "$(dirname "$0")/lib.sh"
netns_skip_unless_possible
netns_up 4
log "cluster $TAG up: coordinator $COORDINATOR"

check_hosts() {  # job
  local s="$WORK/hosts.json"
  tern_ status "$1" --json >"$s"
  "$PY" - "$s" "$ADDR_1" "$ADDR_2" "$ADDR_3" "$ADDR_4" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
workers = set(sys.argv[2:])
hosts = [r["host"] for r in j["ranks"]]
assert len(hosts) == 4 and set(hosts) == workers, f"ranks on {hosts}, workers are {sorted(workers)}"
master = j["master_addr"].rsplit(":", 1)[0]
assert master == hosts[0], f"master {j['master_addr']} is not on rank 0's host {hosts[0]}"
for r in j["ranks"]:
    assert r["worker_id"] == "h%d" % (int(r["host"].rsplit(".", 1)[1]) - 1), r
print("ranks on", hosts, "master", j["master_addr"])
PY
}

tiny_job "$WORK/ssgd.yaml" 40 "{strategy: ssgd, timeout_s: 20}"
job=$(submit "$WORK/ssgd.yaml")
log "ssgd job $job submitted"
# While it trains: every socket of a trainer (Gloo pairs, rank 0's rendezvous store, their
# listeners) is bound to its own host's address, never to every interface or to loopback.
training() {
  tern_ status "$job" --json >"$WORK/t.json" 2>/dev/null &&
    [ "$(json_get "$WORK/t.json" 'min(int(r["step"]) for r in j["ranks"])')" -ge 1 ]
}
wait_for 90 training || fail "job $job never trained"
for i in 1 2 3 4; do
  ns_var="NS_$i" addr_var="ADDR_$i"
  ip netns exec "${!ns_var}" ss -Htanp >"$WORK/ss.txt"
  grep -q tern-trainer "$WORK/ss.txt" || { cat "$WORK/ss.txt"; fail "no trainer socket on host $i"; }
  if grep tern-trainer "$WORK/ss.txt" | awk '{print $4}' | grep -v "^${!addr_var}:"; then
    cat "$WORK/ss.txt"
    fail "a trainer on host $i has a socket on an address other than ${!addr_var}"
  fi
done
log "every trainer socket (listening or connected) is on its own host's address"
wait_state "$job" SUCCEEDED 120
check_hosts "$job"
# The human table names each rank's host too.
tern_ status "$job" >"$WORK/status.txt"
grep -q "HOST" "$WORK/status.txt" || fail "tern status has no HOST column"
for a in "$ADDR_1" "$ADDR_2" "$ADDR_3" "$ADDR_4"; do
  grep -q "$a" "$WORK/status.txt" || { cat "$WORK/status.txt"; fail "tern status does not show $a"; }
done
log "ssgd job $job SUCCEEDED"

tiny_job "$WORK/dts.yaml" 40 "{strategy: dts, delay: 2, period: 4, timeout_s: 20}"
job=$(submit "$WORK/dts.yaml")
wait_state "$job" SUCCEEDED 120
check_hosts "$job"
log "dts job $job SUCCEEDED"
echo PASSED
