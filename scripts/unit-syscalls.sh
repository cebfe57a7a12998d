#!/usr/bin/env bash
# The packaged unit's system-call filter against what a serving engine really calls.
#
#   unit-syscalls.sh [XRUDP_BIN]     (default: target/debug/xrudp)
#
# Runs `xrudp attach` under `strace -f` in a fresh pair of namespaces (scripts/netns.sh),
# once on AF_XDP and once on kernel sockets: loads each with `xrudp bench` (reliable
# echo, 2 s), reads `xrudp stats` as a table, as JSON and per connection, and stops it
# with SIGTERM. Then it resolves deploy/systemd/xrudp@.service's SystemCallFilter= lines
# with `systemd-analyze syscall-filter` (groups expanded, @default always allowed, as
# systemd does) and fails naming every traced call the filter would refuse. Root only;
# bounded in time; removes its namespaces and files on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "unit-syscalls.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (namespaces, XDP)"
for c in strace systemd-analyze ip; do command -v "$c" >/dev/null || die "$c is missing: run scripts/setup.sh"; done
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/debug/xrudp}")
[ -x "$bin" ] || die "$bin is missing: build it first (cargo build -p xrudp)"
unit=deploy/systemd/xrudp@.service

work=$(mktemp -d)
topo=""
cleanup() {
  if [ -n "$topo" ]; then bash scripts/netns.sh down "$topo" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

eval "$(bash scripts/netns.sh up --queues 1 --no-tx-csum --owner $$)"
topo=$XR_ID
export XRUDP_RUN_DIR="$work/run"

# One traced engine: attach, load, stats, SIGTERM; the trace goes to $work/trace.$1.
trace_engine() {
  local backend=$1
  ip netns exec "$XR_NS_SRV" timeout 60 strace -f -qq -o "$work/trace.$backend" \
    "$bin" attach --iface "$XR_IF_SRV" --port 7777 --backend "$backend" --cores 1 \
    >"$work/engine.$backend.log" 2>&1 &
  local pid=$!
  local sock="$XRUDP_RUN_DIR/net-$(stat -L -c %i "/var/run/netns/$XR_NS_SRV")/$XR_IF_SRV.sock"
  for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || { cat "$work/engine.$backend.log" >&2; die "$backend: the engine did not start"; }
  ip netns exec "$XR_NS_CLI" timeout 60 "$bin" bench --server "$XR_IP_SRV:7777" \
    --clients 20 --rate 2000 --duration 2 >"$work/bench.$backend.log" 2>&1 ||
    { cat "$work/bench.$backend.log" >&2; die "$backend: the load run failed"; }
  "$bin" stats >/dev/null
  "$bin" stats --json >/dev/null
  "$bin" stats --connections >/dev/null
  pkill -TERM -f "^$bin attach --iface $XR_IF_SRV " || true
  wait "$pid" || { cat "$work/engine.$backend.log" >&2; die "$backend: the engine did not exit 0"; }
}
trace_engine xdp
trace_engine socket

# Syscall names in the traces ("PID name(args) = ...", "PID <... name resumed> ...").
sed -E 's/^[0-9]+ +//; s/^<\.\.\. ([a-z_0-9]+) resumed>.*/\1/; s/^([a-z_0-9]+)\(.*/\1/' \
  "$work"/trace.* | grep -E '^[a-z_0-9]+$' | sort -u >"$work/called"

# Every syscall a name stands for: itself, or a group's members, recursively.
expand() {
  local name
  for name in "$@"; do
    if [[ "$name" == @* ]]; then
      # shellcheck disable=SC2046 # one word per member
      expand $(systemd-analyze syscall-filter "$name" | tail -n +2 | grep -v '^ *#' | awk '{print $1}')
    else
      echo "$name"
    fi
  done
}

# The filter, line by line as systemd applies it: the first line is an allow-list (and
# @default is always allowed), `~` lines take away, later plain lines add back.
expand @default | sort -u >"$work/allowed"
while IFS= read -r line; do
  value=${line#SystemCallFilter=}
  if [[ "$value" == ~* ]]; then
    # shellcheck disable=SC2086 # the value is a list of names
    expand ${value#\~} | sort -u | comm -23 "$work/allowed" - >"$work/next"
  else
    # shellcheck disable=SC2086
    { cat "$work/allowed"; expand $value; } | sort -u >"$work/next"
  fi
  mv "$work/next" "$work/allowed"
done < <(grep '^SystemCallFilter=' "$unit")

refused=$(comm -23 "$work/called" "$work/allowed")
echo "unit-syscalls.sh: $(wc -l <"$work/called") distinct system calls traced (xdp and socket backends), $(wc -l <"$work/allowed") allowed by $unit"
if [ -n "$refused" ]; then
  die "$unit's SystemCallFilter= would refuse: $(echo "$refused" | tr '\n' ' ')"
fi
echo "unit-syscalls.sh: the filter allows every call the engine made"
