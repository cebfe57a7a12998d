#!/usr/bin/env bash
# Test topology: two fresh network namespaces joined by a veth pair.
#
#   netns.sh up [--queues N] [--no-tx-csum]   creates them; prints shell assignments:
#       XR_ID, XR_NS_SRV, XR_NS_CLI, XR_IF_SRV, XR_IF_CLI, XR_IP_SRV, XR_IP_CLI, XR_IP6_SRV, XR_IP6_CLI
#   netns.sh down ID                           deletes the namespaces of topology ID
#   netns.sh down --all                        deletes every xrudp test namespace
#
# Both veth ends live in namespaces created here, never on the host. Addresses come
# from the benchmarking range 198.18.0.0/15 (RFC 2544) and the documentation prefix
# 2001:db8::/32, and exist only inside those namespaces. --queues sets the veth's
# explicit rx/tx queue counts (veth has one active queue unless told otherwise).
# --no-tx-csum turns TX checksum offload off on the client end, so its datagrams reach
# the server with complete UDP checksums (see docs/OPERATIONS.md).
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "netns.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"
command -v ip >/dev/null || die "ip (iproute2) is missing: run scripts/setup.sh"

up() {
  local queues=2 txcsum=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --queues) queues="$2"; shift 2 ;;
      --no-tx-csum) txcsum=0; shift ;;
      *) usage ;;
    esac
  done
  [[ "$queues" =~ ^[1-9][0-9]*$ ]] || die "--queues must be a positive integer"
  local id; id="$(printf '%04x%04x' $((RANDOM)) $$ | cut -c1-8)"
  local srv="xrudp-$id-srv" cli="xrudp-$id-cli" ifs="xs$id" ifc="xc$id"
  # Undo a half-built topology if any step fails.
  trap 'ip netns del "$srv" 2>/dev/null || true; ip netns del "$cli" 2>/dev/null || true' ERR
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

down() {
  [ $# -eq 1 ] || usage
  if [ "$1" = "--all" ]; then
    local ns
    for ns in $(ip netns list | awk '{print $1}'); do
      if [[ "$ns" =~ ^xrudp-[0-9a-f]{8}-(srv|cli)$ ]]; then
        ip netns del "$ns" || true
      fi
    done
  else
    [[ "$1" =~ ^[0-9a-f]{8}$ ]] || die "bad topology id: $1"
    ip netns del "xrudp-$1-srv" 2>/dev/null || true
    ip netns del "xrudp-$1-cli" 2>/dev/null || true
  fi
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  *) usage ;;
esac
