# Shared by the network-namespace tests (tests/netns/*_test.sh): a cluster of real hosts made
# with scripts/netns-cluster.sh under a tag of this test's own, taken down on every exit
# (success, failure, ^C), and checked to leave nothing behind. Source it, then call
# netns_up N [options for netns-cluster.sh up].
#
# Exit codes: 0 passed, 1 failed, 77 skipped (ctest's SKIP_RETURN_CODE: namespaces cannot be
# made here; the reason is printed).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NC="$REPO/scripts/netns-cluster.sh"
export TERN_BIN=${TERN_BIN:-$REPO/build/bin}
PY=/usr/bin/python3
TAG=""
WATCHDOG=""
WORK=$(mktemp -d "/tmp/tern-netns-test-XXXXXX")

log() { echo "[$(date +%T.%3N)] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

netns_skip_unless_possible() {
  local why
  if ! why=$("$NC" check 2>&1); then
    echo "SKIPPED: $why"
    exit 77
  fi
}

netns_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$TAG" ]; then
    if [ $rc -ne 0 ] && [ -d "/tmp/tern-netns-$TAG/logs" ]; then
      echo "---- logs of $TAG (test failed: rc $rc) ----" >&2
      for f in /tmp/tern-netns-"$TAG"/logs/*.log; do
        echo "== $f" >&2
        tail -n 25 "$f" >&2 || true
      done
    fi
    "$NC" down "$TAG" >/dev/null 2>&1 || true
    # Nothing may be left behind: namespaces, links, processes, state.
    local left
    left=$( (ip netns list | grep "^tern-$TAG-"; ip -o link show | grep -o "tn${TAG}[bv][0-9]*";
             [ -e "/tmp/tern-netns-$TAG" ] && echo "/tmp/tern-netns-$TAG") || true)
    if [ -n "$left" ]; then
      echo "FAIL: left behind after down: $left" >&2
      rc=1
    fi
  fi
  if [ -n "$WATCHDOG" ]; then pkill -P "$WATCHDOG" 2>/dev/null || true; kill "$WATCHDOG" 2>/dev/null || true; fi
  rm -rf "$WORK"
  exit $rc
}
trap netns_cleanup EXIT
trap 'exit 130' INT TERM
# ctest kills a test past its TIMEOUT with SIGKILL, which no trap sees: stop first, with TERM
# (the trap cleans up), a little before ctest would.
exec 3>&2
{ sleep "${TERN_NETNS_TEST_LIMIT:-270}"; echo "FAIL: over the test's time limit" >&3; kill -TERM $$; } 2>/dev/null &
WATCHDOG=$!
disown "$WATCHDOG"

netns_up() {  # N [up options]
  TAG="t$(printf '%x' $$)$(printf '%02x' $((RANDOM % 256)))"
  TAG=${TAG:0:8}
  "$NC" up "$@" --tag "$TAG" >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; fail "netns-cluster.sh up $*"; }
  # shellcheck disable=SC1090
  . "/tmp/tern-netns-$TAG/env"
}

tern_() { "$NC" tern "$TAG" "$@"; }

# jq-like: json_get FILE 'python expression over j'
json_get() { "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

submit() {  # spec file [--set ...]: prints the job id
  local out="$WORK/submit.$$.json"
  tern_ submit "$@" --json >"$out" || { cat "$out" >&2; fail "submit $*"; }
  json_get "$out" 'j["job_id"]'
}

status_json() { tern_ status "$1" --json >"$WORK/status.json" && cat "$WORK/status.json"; }

# wait_state JOB STATE TIMEOUT_S: until the job is in STATE (SUCCEEDED, FAILED, RUNNING, ...).
wait_state() {
  local job=$1 want=$2 limit=$3 state="" i
  for i in $(seq $((limit * 5))); do
    if tern_ status "$job" --json >"$WORK/w.json" 2>/dev/null; then
      state=$(json_get "$WORK/w.json" 'j["state"]')
      [ "$state" = "$want" ] && return 0
      case "$state" in SUCCEEDED|FAILED|CANCELLED)
        echo "job $job ended $state, not $want: $(json_get "$WORK/w.json" 'j["reason"]')" >&2
        return 1 ;;
      esac
    fi
    sleep 0.2
  done
  echo "job $job not $want after ${limit}s (state $state)" >&2
  tern_ status "$job" >&2 || true
  return 1
}

# wait_for TIMEOUT_S CMD...: until CMD succeeds.
wait_for() {
  local limit=$1 i
  shift
  for i in $(seq $((limit * 10))); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# A tiny job: the MLP on synthetic data, STEPS steps of 4 ranks (or --set workers=K).
tiny_job() {  # file steps strategy-yaml
  cat >"$1" <<YAML
name: netns-tiny
workers: 4
model: {type: mlp}
data: {source: synthetic, train_size: 2048, test_size: 256}
train: {steps: $2, batch_size: 16, lr: 0.05, momentum: 0.9, seed: 1, log_every: 5, eval_every: 0}
sync: $3
YAML
}
