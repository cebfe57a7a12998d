#!/usr/bin/env bash
# Test topology: two fresh network namespaces joined by a veth pair.
#
#   netns.sh up [--queues N] [--no-tx-csum] [--owner PID]
#       creates them; prints shell assignments:
#       XR_ID, XR_NS_SRV, XR_NS_CLI, XR_IF_SRV, XR_IF_CLI, XR_IP_SRV, XR_IP_CLI, XR_IP6_SRV, XR_IP6_CLI
#   netns.sh down ID                   deletes the namespaces of topology ID
#   netns.sh down --all [--dry-run]    deletes the topologies whose owner has exited
#   netns.sh down --all --force        deletes every xrudp test namespace
#
# Both veth ends live in namespaces created here, never on the host. Addresses come
# from the benchmarking range 198.18.0.0/15 (RFC 2544) and the documentation prefix
# 2001:db8::/32, and exist only inside those namespaces. --queues sets the veth's
# explicit rx/tx queue counts (veth has one active queue unless told otherwise).
# --no-tx-csum turns TX checksum offload off on the client end, so its datagrams reach
# the server with complete UDP checksums (see docs/OPERATIONS.md).
#
# Owner: the long-lived process the topology belongs to (a test process, a script),
# --owner PID or else this script's parent. Its pid and start time are recorded in
# /run/xrudp-netns/ID before the namespaces exist, so `down --all` (the pre-clean of
# scripts/test.sh) removes what crashed runs left and never a running suite's
# topologies. Behind `$(...)`, pass --owner $$: the parent there may be a subshell.
set -euo pipefail

OWNERS=/run/xrudp-netns

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "netns.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"
command -v ip >/dev/null || die "ip (iproute2) is missing: run scripts/setup.sh"

# "PID STARTTIME" of a live process (start time in clock ticks since boot, field 22 of
# /proc/PID/stat, so a recycled pid is told apart); nothing if there is no such process.
identity() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  # The command name (field 2) may hold spaces: read the fields after its ')'.
  local rest="${stat##*) }"
  local fields
  read -ra fields <<<"$rest"
  # rest starts at field 3, so field 22 is rest's 20th (index 19).
  echo "$1 ${fields[19]}"
}

# Whether the owner recorded for topology $1 is still running.
owner_alive() {
  local file="$OWNERS/$1" pid start
  [ -f "$file" ] || return 1
  read -r pid start <"$file" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(identity "$pid")" = "$pid $start" ]
}

up() {
  local queues=2 txcsum=1 owner=$PPID
  while [ $# -gt 0 ]; do
    case "$1" in
      --queues) queues="$2"; shift 2 ;;
      --no-tx-csum) txcsum=0; shift ;;
      --owner) owner="$2"; shift 2 ;;
      *) usage ;;
    esac
  done
  [[ "$queues" =~ ^[1-9][0-9]*$ ]] || die "--queues must be a positive integer"
  [[ "$owner" =~ ^[1-9][0-9]*$ ]] || die "--owner must be a process id"
  local who; who="$(identity "$owner")"
  [ -n "$who" ] || die "--owner $owner: no such process"
  local id; id="$(printf '%04x%04x' $((RANDOM)) $$ | cut -c1-8)"
  local srv="xrudp-$id-srv" cli="xrudp-$id-cli" ifs="xs$id" ifc="xc$id"
  # Undo a half-built topology if any step fails.
  trap 'ip netns del "$srv" 2>/dev/null || true; ip netns del "$cli" 2>/dev/null || true; rm -f "$OWNERS/$id"' ERR
  # The owner first: a concurrent `down --all` must never see these namespaces unowned.
  mkdir -p "$OWNERS"
  echo "$who" >"$OWNERS/$id"
  ip netns add "$srv"
  ip netns add "$cli"
  ip link add "$ifs" numrxqueues "$queues" numtxqueues "$queues" netns "$srv" type veth \
    peer name "$ifc" numrxqueues "$queues" numtxqueues "$queues" netns "$cli"
  ip -n "$srv" link set lo up
  ip -n "$cli" link set lo up
  ip -n "$srv" addr add 198.18.0.1/24 dev "$ifs"
  ip -n "$cli" addr add 198.18.0.2/24 dev "$ifc"
  ip -n "$srv" addr add 2001:db8::1/64 dev "$ifs" nodad
  ip -n "$cli" addr add 2001:db8::2/64 dev "$ifc" nodad
  ip -n "$srv" link set "$ifs" up
  ip -n "$cli" link set "$ifc" up
  if [ "$txcsum" -eq 0 ]; then
    command -v ethtool >/dev/null || die "ethtool is missing: run scripts/setup.sh"
    ip netns exec "$cli" ethtool -K "$ifc" tx off >/dev/null
  fi
  trap - ERR
  cat <<OUT
XR_ID=$id
XR_NS_SRV=$srv
XR_NS_CLI=$cli
XR_IF_SRV=$ifs
XR_IF_CLI=$ifc
XR_IP_SRV=198.18.0.1
XR_IP_CLI=198.18.0.2
XR_IP6_SRV=2001:db8::1
XR_IP6_CLI=2001:db8::2
OUT
}

# Deletes topology $1: its namespaces (either may be gone already), then its owner record.
remove() {
  ip netns del "xrudp-$1-srv" 2>/dev/null || true
  ip netns del "xrudp-$1-cli" 2>/dev/null || true
  rm -f "$OWNERS/$1"
}

down() {
  [ $# -ge 1 ] || usage
  if [ "$1" != "--all" ]; then
    [ $# -eq 1 ] || usage
    [[ "$1" =~ ^[0-9a-f]{8}$ ]] || die "bad topology id: $1"
    remove "$1"
    return
  fi
  shift
  local force=0 dry=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --force) force=1; shift ;;
      --dry-run) dry=1; shift ;;
      *) usage ;;
    esac
  done
  # Every topology id with a namespace or an owner record (a record whose namespaces
  # are gone is removed too).
  local ids id
  ids="$(
    {
      ip netns list | awk '{print $1}' | sed -nE 's/^xrudp-([0-9a-f]{8})-(srv|cli)$/\1/p'
      for id in "$OWNERS"/*; do
        id="${id##*/}"
        [[ "$id" =~ ^[0-9a-f]{8}$ ]] && echo "$id"
      done
      true
    } | sort -u
  )"
  for id in $ids; do
    if [ "$force" -eq 0 ] && owner_alive "$id"; then
      echo "netns.sh: keeping topology $id: its owner (pid $(cut -d' ' -f1 "$OWNERS/$id")) is running" >&2
      continue
    fi
    if [ "$dry" -eq 1 ]; then
      echo "netns.sh: would delete topology $id" >&2
    else
      remove "$id"
    fi
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  *) usage ;;
esac
