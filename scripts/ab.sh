#!/usr/bin/env bash
# A/B of two xrudp binaries on the same veth topology, interleaved, so a change that
# must not move the figures (a refactor) is checked against the run-to-run spread.
#
#   scripts/ab.sh OLD_BIN NEW_BIN [--pairs N] [--duration S]
#
# Per pair and per backend (xdp need_wakeup, socket) it runs, old binary then new,
# each engine fresh and pinned to core 1, the load pinned to core 0:
#   b. the design point: 1,000 clients, 20,000 msg/s, 64 B, reliable-ordered
#      (echo RTT p50/p90 from the load generator);
#   d. CPU per message: 100 clients, 50,000 msg/s, 64 B, reliable-ordered, the load
#      sleeping between sends (the engine's CPU time per echoed message);
#   t. a tick point: 2,000 clients x 60 Hz (120,000 packets/s each way), one 64-byte
#      reliable message per client per tick (echo RTT, loss and the engine's CPU time per
#      message), the load through AF_XDP as in scripts/bench.sh's tick workload.
# The load generator is OLD_BIN's `xrudp bench` for every run, so both engines see the
# same load. Prints medians and (min–max) ranges per binary; raw JSON lines go to
# target/ab/results.jsonl. Needs root (namespaces, XDP); every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
OLD=$(realpath "$1"); NEW=$(realpath "$2"); shift 2
PAIRS=3; DUR=5
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS="$2"; shift 2 ;;
    --duration) DUR="$2"; shift 2 ;;
    *) usage ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "ab.sh: must run as root (namespaces, XDP)" >&2; exit 1; }
for b in "$OLD" "$NEW"; do [ -x "$b" ] || { echo "ab.sh: $b is not an executable" >&2; exit 1; }; done

OUT=${CARGO_TARGET_DIR:-target}/ab
mkdir -p "$OUT"
JSONL="$OUT/results.jsonl"
: >"$JSONL"
PORT=7777
eval "$(bash scripts/netns.sh up --queues 1 --no-tx-csum --owner $$)"
ENGINE_PID=
stop_engine() {
  if [ -n "$ENGINE_PID" ]; then
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=
  fi
}
cleanup() { stop_engine; bash scripts/netns.sh down "$XR_ID" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

# start_engine BIN BACKEND: waits until `xrudp stats` answers (20 s at most).
start_engine() {
  local bin=$1 backend=$2 args=(--backend "$backend")
  [ "$backend" = socket ] && args+=(--workers 1)
  # Engines with session encryption run without it here: the load generator is OLD's,
  # and an engine from before encryption has neither the flag nor the protocol mode.
  "$bin" attach --help | grep -q -- '--encryption' && args+=(--encryption off)
  ip netns exec "$XR_NS_SRV" "$bin" attach --iface "$XR_IF_SRV" --port "$PORT" --app echo \
    --cores 1 --max-connections 4096 --idle-timeout 60 "${args[@]}" 2>>"$OUT/engine.log" &
  ENGINE_PID=$!
  for _ in $(seq 200); do
    ip netns exec "$XR_NS_SRV" "$bin" stats --iface "$XR_IF_SRV" --json >/dev/null 2>&1 && return 0
    kill -0 "$ENGINE_PID" 2>/dev/null || { echo "ab.sh: $bin ($backend) exited; see $OUT/engine.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "ab.sh: $bin ($backend) did not answer 'xrudp stats' within 20 s" >&2
  exit 1
}

# run WHICH BACKEND WORKLOAD PAIR ARGS...: one load run against a fresh engine. The load
# goes through kernel sockets, or through AF_XDP for the tick point.
run() {
  local which=$1 backend=$2 wl=$3 pair=$4 bin line load=(--backend socket); shift 4
  if [ "$which" = old ]; then bin=$OLD; else bin=$NEW; fi
  # The server's veth end keeps TX checksum offload: its echoes carry partial UDP
  # checksums (the RUDP CRC still checks every packet).
  [ "$wl" = t ] && load=(--backend xdp --iface "$XR_IF_CLI" --no-udp-checksum-check)
  # The load matches the engine's protection (off, see start_engine).
  "$OLD" bench --help | grep -q -- '--encryption' && load+=(--encryption off)
  start_engine "$bin" "$backend"
  line=$(ulimit -n 19000; ip netns exec "$XR_NS_CLI" "$OLD" bench --server "$XR_IP_SRV:$PORT" \
    --cores 0 --server-pid "$ENGINE_PID" --json "${load[@]}" --duration "$DUR" "$@") ||
    { echo "ab.sh: load run failed ($which $backend $wl)" >&2; stop_engine; return 1; }
  stop_engine
  printf '{"which":"%s","backend":"%s","workload":"%s","pair":%s,"report":%s}\n' \
    "$which" "$backend" "$wl" "$pair" "$line" >>"$JSONL"
}

for pair in $(seq "$PAIRS"); do
  for backend in xdp socket; do
    for which in old new; do
      echo "==> pair $pair, $backend, $which" >&2
      run "$which" "$backend" b "$pair" --clients 1000 --rate 20000 --size 64 --channel 0
      run "$which" "$backend" d "$pair" --clients 100 --rate 50000 --size 64 --channel 0 \
        --wait sleep --no-probe
      run "$which" "$backend" t "$pair" --clients 2000 --rate 120000 --size 64 --channel 0 \
        --drain 1 --connect-window 256 --connect-timeout 60 --wait sleep --no-probe
    done
  done
done

python3 - "$JSONL" "$OLD" "$NEW" "$PAIRS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def fig(xs, f):
    if not xs:
        return "—"
    return f"{f.format(statistics.median(xs))} ({f.format(min(xs))}–{f.format(max(xs))})"
print(f"A/B, {sys.argv[4]} interleaved pair(s); old = {sys.argv[2]}, new = {sys.argv[3]}")
print("| backend | binary | b: RTT p50 µs | b: RTT p90 µs | b: loss % | d: engine CPU ns/msg "
      "| t: RTT p50 µs | t: RTT p90 µs | t: loss % | t: engine CPU ns/msg |")
print("|---|---|---|---|---|---|---|---|---|---|")
for backend in ("xdp", "socket"):
    for which in ("old", "new"):
        b = [r["report"] for r in rows if r["backend"] == backend and r["which"] == which and r["workload"] == "b"]
        d = [r["report"] for r in rows if r["backend"] == backend and r["which"] == which and r["workload"] == "d"]
        t = [r["report"] for r in rows if r["backend"] == backend and r["which"] == which and r["workload"] == "t"]
        print(f"| {backend} | {which} | {fig([x['rtt_us']['p50'] for x in b], '{:.1f}')} | "
              f"{fig([x['rtt_us']['p90'] for x in b], '{:.1f}')} | "
              f"{fig([100 * x['messages']['loss_ratio'] for x in b], '{:.3f}')} | "
              f"{fig([x['server']['cpu_ns_per_msg'] for x in d if x.get('server')], '{:,.0f}')} | "
              f"{fig([x['rtt_us']['p50'] for x in t], '{:.1f}')} | "
              f"{fig([x['rtt_us']['p90'] for x in t], '{:.1f}')} | "
              f"{fig([100 * x['messages']['loss_ratio'] for x in t], '{:.3f}')} | "
              f"{fig([x['server']['cpu_ns_per_msg'] for x in t if x.get('server')], '{:,.0f}')} |")
PY
