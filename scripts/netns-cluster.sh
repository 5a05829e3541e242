#!/usr/bin/env bash
# Many hosts on one machine: a tern cluster of N+1 Linux network namespaces joined by a bridge.
# Host 0 runs the coordinator, hosts 1..N one worker daemon each; every host has its own
# address from 198.18.0.0/24 (RFC 2544's benchmark range) inside its namespace only, so the
# cluster talks mTLS over non-loopback addresses exactly as separate machines would. Needs
# root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and iproute2.
#
#   scripts/netns-cluster.sh up N [--tag T] [--slots S] [--heartbeat-ms MS] [--lease-ms MS]
#                                 [--rate MBIT]      bring a cluster up; prints its state dir
#                                 [--nice N]         run the daemons (and so their trainers, 10
#                                                    nicer still) at niceness N (benchmarks on a
#                                                    shared machine: -10)
#                                 [--wan MBIT[:MS]]  (--wan: the trainers' in-process WAN model
#                                                    instead, network.emulate true, MBIT and MS
#                                                    one-way latency between every two hosts)
#   scripts/netns-cluster.sh down T                  remove everything tag T made (idempotent;
#                                                    also after a failed or interrupted up)
#   scripts/netns-cluster.sh tern T ARGS...          the tern CLI in host 0 with the cluster file
#   scripts/netns-cluster.sh exec T H CMD...         CMD inside host H's namespace
#   scripts/netns-cluster.sh link T H up|down        cut or heal host H's link to the bridge
#   scripts/netns-cluster.sh shape T MBIT|off        tc tbf on every host link, both directions
#   scripts/netns-cluster.sh check                   exit 0 if namespaces can be made here, else
#                                                    print why and exit 77 (tests skip on it)
#
# Names: tag T ([a-z0-9], 1-8 characters; default: this shell's pid) makes every name unique,
# so parallel and aborted runs never collide: namespaces tern-T-h<i>, bridge tnTb, host-side
# veths tnTv<i> (the namespace side is eth0), state in ${TERN_NETNS_ROOT:-/tmp}/tern-netns-T
# (cluster.yaml, certs/, coordinator state, worker work dirs, logs/, pids/, env).
# Binaries: $TERN_BIN (default: build/bin of this checkout).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO/build/bin}
ROOT=${TERN_NETNS_ROOT:-/tmp}
SUBNET=198.18.0
PORT=7070

die() { echo "netns-cluster: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }

check_tag() {
  [[ "$1" =~ ^[a-z0-9]{1,8}$ ]] || die "tag must be 1-8 characters of [a-z0-9], got '$1'"
}
ns_name() { echo "tern-$1-h$2"; }
veth_name() { echo "tn$1v$2"; }
bridge_name() { echo "tn$1b"; }
state_dir() { echo "$ROOT/tern-netns-$1"; }
host_addr() { echo "$SUBNET.$(($1 + 1))"; }

# Why namespaces cannot be made here ("" when they can): tried, not guessed.
netns_problem() {
  command -v ip >/dev/null || { echo "iproute2's ip is not installed (apt-get install iproute2)"; return; }
  local probe="tern-probe-$$" err
  if ! err=$(ip netns add "$probe" 2>&1); then
    echo "cannot create a network namespace ($err): run as root, or with CAP_SYS_ADMIN and CAP_NET_ADMIN"
    return
  fi
  if ! err=$(ip link add "tnprobe$$" type bridge 2>&1); then
    ip netns del "$probe" 2>/dev/null || true
    echo "cannot create a bridge ($err): needs CAP_NET_ADMIN and the bridge module"
    return
  fi
  ip link del "tnprobe$$" 2>/dev/null || true
  ip netns del "$probe" 2>/dev/null || true
}

# Kills the processes this cluster started: the recorded pids, then anything still running
# inside its namespaces (trainers the daemons spawned). TERM, then KILL after a grace.
kill_cluster_processes() {
  local tag=$1 dir pids=() p n
  dir=$(state_dir "$tag")
  if [ -d "$dir/pids" ]; then
    for f in "$dir"/pids/*; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
  fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^tern-$tag-h[0-9]*$" || true); do
    for p in $(ip netns pids "$ns" 2>/dev/null || true); do pids+=("$p"); done
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for n in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && return 0
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  # Anything a daemon started after the first sweep.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^tern-$tag-h[0-9]*$" || true); do
    for p in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$p" 2>/dev/null || true; done
  done
}

cmd_down() {
  local tag=${1:?usage: netns-cluster.sh down TAG}
  check_tag "$tag"
  kill_cluster_processes "$tag"
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^tern-$tag-h[0-9]*$" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  # Host-side veths go with their namespace's end; delete any left over, then the bridge.
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^tn${tag}v[0-9]*$" || true); do
    ip link del "$l" 2>/dev/null || true
  done
  ip link del "$(bridge_name "$tag")" 2>/dev/null || true
  rm -rf "$(state_dir "$tag")"
  echo "netns-cluster: $tag down"
}

wait_ready() {  # tag n timeout_s
  local tag=$1 n=$2 limit=$3 ready=0 i
  for i in $(seq $((limit * 5))); do
    ready=$(cmd_tern "$tag" workers --json 2>/dev/null | grep -o "\"state\":\"READY\"" | wc -l || true)
    [ "$ready" -ge "$n" ] && return 0
    sleep 0.2
  done
  echo "netns-cluster: only $ready of $n workers READY after ${limit}s; logs in $(state_dir "$tag")/logs" >&2
  return 1
}

cmd_up() {
  local n=${1:?usage: netns-cluster.sh up N [--tag T] ...}
  shift
  local tag="p$$" slots=1 heartbeat_ms=200 lease_ms=1500 rate="" wan="" niceness=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --tag) tag=$2; shift 2 ;;
      --slots) slots=$2; shift 2 ;;
      --heartbeat-ms) heartbeat_ms=$2; shift 2 ;;
      --lease-ms) lease_ms=$2; shift 2 ;;
      --rate) rate=$2; shift 2 ;;
      --wan) wan=$2; shift 2 ;;
      --nice) niceness=$2; shift 2 ;;
      *) die "up: unknown option '$1'" ;;
    esac
  done
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "up: N must be 1..200 workers, got '$n'"
  check_tag "$tag"
  [[ "$niceness" =~ ^-?[0-9]+$ ]] && [ "$niceness" -ge -20 ] && [ "$niceness" -le 19 ] ||
    die "up: --nice must be -20..19, got '$niceness'"
  local network="{emulate: false}"
  if [ -n "$wan" ]; then
    [[ "$wan" =~ ^([0-9]+(\.[0-9]+)?)(:([0-9]+(\.[0-9]+)?))?$ ]] || die "up: --wan must be MBIT[:LATENCY_MS], got '$wan'"
    local bw=${BASH_REMATCH[1]} lat=${BASH_REMATCH[4]:-0}
    network="{emulate: true, intra_region: {latency_ms: $lat, jitter_ms: 0, bandwidth_mbps: $bw}}"
  fi
  [ -x "$TERN_BIN/tern" ] && [ -x "$TERN_BIN/tern-trainer" ] ||
    die "no $TERN_BIN/tern and tern-trainer: build first (scripts/setup.sh) or set TERN_BIN"
  local why
  why=$(netns_problem)
  [ -z "$why" ] || die "$why"
  local dir
  dir=$(state_dir "$tag")
  if [ -e "$dir" ] || ip netns list | grep -q "^tern-$tag-h"; then
    die "tag $tag is in use ($dir or namespaces tern-$tag-h*): pick another --tag or run: $0 down $tag"
  fi
  if [ -n "$rate" ]; then
    [[ "$rate" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "up: --rate must be Mbit/s, got '$rate'"
  fi
  # From here on any failure, exit or ^C takes down whatever was made.
  # ($tag is expanded now: the trap may run after this function's locals are gone.)
  trap "echo 'netns-cluster: up failed; cleaning up $tag' >&2; cmd_down '$tag' >&2" EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$dir"/{logs,pids,work,state}

  local br
  br=$(bridge_name "$tag")
  ip link add "$br" type bridge
  ip link set "$br" up
  local i ns veth addrs=()
  for i in $(seq 0 "$n"); do
    ns=$(ns_name "$tag" "$i")
    veth=$(veth_name "$tag" "$i")
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$br" up
    ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    addrs+=("$(host_addr "$i")")
  done

  TERN_TOKEN_USERS="admin workers" "$REPO/scripts/make-certs.sh" "$dir/certs" "${addrs[@]}" >"$dir/logs/make-certs.log"
  local coord
  coord="$(host_addr 0):$PORT"
  cat >"$dir/cluster.yaml" <<EOF
# Written by scripts/netns-cluster.sh up $n --tag $tag: host 0 ($(ns_name "$tag" 0)) runs the
# coordinator, hosts 1..$n ($(ns_name "$tag" 1) ...) a worker daemon each.
name: netns-$tag
coordinator:
  listen: $coord
  heartbeat_ms: $heartbeat_ms
  lease_ms: $lease_ms
state_dir: $dir/state
regions:
  - {name: netns, workers: $n, slots: $slots}
network: $network
tls: {enabled: true, ca: certs/ca.crt, cert: certs/server.crt, key: certs/server.key,
      client_cert: certs/client.crt, client_key: certs/client.key}
auth:
  tokens:
    - {user: admin, token_file: certs/admin.token, role: admin}
    - {user: workers, token_file: certs/workers.token, role: worker}
  token_file: certs/admin.token
  worker_token_file: certs/workers.token
EOF
  {
    echo "TAG=$tag"
    echo "N=$n"
    echo "DIR=$dir"
    echo "CLUSTER=$dir/cluster.yaml"
    echo "COORDINATOR=$coord"
    for i in $(seq 0 "$n"); do
      echo "NS_$i=$(ns_name "$tag" "$i")"
      echo "ADDR_$i=$(host_addr "$i")"
      echo "VETH_$i=$(veth_name "$tag" "$i")"
    done
  } >"$dir/env"

  ip netns exec "$(ns_name "$tag" 0)" "$TERN_BIN/tern" coordinator --config "$dir/cluster.yaml" \
    >"$dir/logs/coordinator.log" 2>&1 &
  echo $! >"$dir/pids/coordinator"
  for i in $(seq 1 "$n"); do
    nice -n "$niceness" ip netns exec "$(ns_name "$tag" "$i")" "$TERN_BIN/tern" worker --cluster "$dir/cluster.yaml" \
      --name "h$i" --host "$(host_addr "$i")" --region netns --slots "$slots" \
      --work-dir "$dir/work/h$i" --stop-grace-ms 2000 >"$dir/logs/worker-h$i.log" 2>&1 &
    echo $! >"$dir/pids/worker-h$i"
  done
  [ -n "$rate" ] && cmd_shape "$tag" "$rate" >/dev/null
  wait_ready "$tag" "$n" 60
  trap - EXIT INT TERM
  echo "netns-cluster: $tag up: coordinator $coord, $n workers ($(host_addr 1) .. $(host_addr "$n")), state $dir"
  echo "$dir"
}

load_env() {
  check_tag "$1"
  local dir
  dir=$(state_dir "$1")
  [ -f "$dir/env" ] || die "no cluster with tag $1 ($dir/env missing): netns-cluster.sh up N --tag $1"
  # shellcheck disable=SC1091
  . "$dir/env"
}

# tern's subcommands take --cluster after the subcommand name: put it there.
cmd_tern() {
  local tag=${1:?usage: netns-cluster.sh tern TAG SUBCOMMAND ARGS...}
  shift
  load_env "$tag"
  local sub=${1:?usage: netns-cluster.sh tern TAG SUBCOMMAND ARGS...}
  shift
  ip netns exec "$NS_0" "$TERN_BIN/tern" "$sub" --cluster "$CLUSTER" "$@"
}

cmd_exec() {
  local tag=${1:?usage: netns-cluster.sh exec TAG HOST CMD...} h=${2:?usage: exec TAG HOST CMD...}
  shift 2
  load_env "$tag"
  local v="NS_$h"
  [ -n "${!v:-}" ] || die "exec: host $h is not one of 0..$N"
  ip netns exec "${!v}" "$@"
}

cmd_link() {
  local tag=${1:?usage: netns-cluster.sh link TAG HOST up|down} h=${2:?} state=${3:?}
  load_env "$tag"
  local v="VETH_$h"
  [ -n "${!v:-}" ] || die "link: host $h is not one of 0..$N"
  [ "$state" = up ] || [ "$state" = down ] || die "link: state must be up or down, got '$state'"
  # The bridge side goes down: the host keeps its address and routes, its packets are
  # dropped silently (no RST, no unreachable), as on a cut cable or a partitioned switch.
  ip link set "${!v}" "$state"
}

cmd_shape() {
  local tag=${1:?usage: netns-cluster.sh shape TAG MBIT|off} rate=${2:?}
  load_env "$tag"
  local i ns veth
  for i in $(seq 0 "$N"); do
    local nv="NS_$i" vv="VETH_$i"
    ns=${!nv}
    veth=${!vv}
    ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
    tc qdisc del dev "$veth" root 2>/dev/null || true
    [ "$rate" = off ] && continue
    [[ "$rate" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "shape: rate must be Mbit/s or off, got '$rate'"
    # Token bucket: the rate, a burst of 1 ms at that rate but at least 64 KiB (one GSO
    # segment of a veth must fit) and a 50 ms queue. Both directions: the host's egress (eth0
    # inside) and its ingress (the bridge side's egress), a full-duplex link.
    local burst
    burst=$(awk -v r="$rate" 'BEGIN { b = r * 1e6 / 8 / 1000; if (b < 65536) b = 65536; printf "%d", b }')
    ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "${rate}mbit" burst "$burst" latency 50ms
    tc qdisc add dev "$veth" root tbf rate "${rate}mbit" burst "$burst" latency 50ms
  done
  echo "netns-cluster: $tag links shaped to ${rate} Mbit/s"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  tern) shift; cmd_tern "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  link) shift; cmd_link "$@" ;;
  shape) shift; cmd_shape "$@" ;;
  check)
    why=$(netns_problem)
    if [ -n "$why" ]; then echo "netns-cluster: $why" >&2; exit 77; fi
    echo "netns-cluster: network namespaces work here" ;;
  *) usage ;;
esac
