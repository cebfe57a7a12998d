#!/usr/bin/env bash
# Flood runs, admission on and off side by side (issue 14): honest players under every
# kind of `xrudp flood`, on a fresh veth topology in namespaces this script creates.
#
#   scripts/flood.sh [--bin XRUDP] [--secs S] [--rate PPS] [--kinds "k1 k2 ..."]
#
# For each --admission mode (on, then off) a fresh engine (echo app, default limits,
# worker pinned to core 1) serves 100 honest clients (`xrudp bench`, kernel sockets,
# 4,000 reliable-ordered 64 B messages a second, sleeping between sends, core 0):
# first without a flood (the baseline), then once per flood kind, the flood (`xrudp
# flood`, one core, AF_XDP copy mode, --rate PPS, 0 = as fast as it goes) starting 2 s
# into the honest run and lasting S seconds. Printed per mode and kind: the flood's
# packets and rate, the frames veth dropped before XDP ran (its counters, less the AF_XDP
# socket's drops), the share the XDP program dropped (counter deltas over the phase, so
# honest stragglers dropped as unknown sessions can lift it past 100 %), the flood
# packets it passed (sent - veth's - its drops), the worker's received packets and the AF_XDP
# socket's drops (ring full), the worker's CPU over the phase, and the honest clients'
# RTT p50/p90/p99 and loss. Kind `guessed-ids` is `--kind data --ids LO..=HI` over the
# honest clients' live connection ids (read from `xrudp stats --connections` when the
# flood starts; ids are a slot under a generation count, easy to guess) from random
# sources: the migration attempts that --migration-rate bounds. Raw JSON lines go to $OUT/flood.jsonl ($OUT =
# ${CARGO_TARGET_DIR:-target}/flood). Needs root; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
BIN=${CARGO_TARGET_DIR:-target}/release/xrudp
SECS=5
RATE=0
KINDS="junk magic-junk data replay hello one-source guessed-ids"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --kinds) KINDS="$2"; shift 2 ;;
    *) usage ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "flood.sh: must run as root (namespaces, XDP, AF_XDP)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "flood.sh: $BIN is not an executable: cargo build --release -p xrudp, or pass --bin" >&2; exit 1; }
BIN=$(realpath "$BIN")

OUT=${CARGO_TARGET_DIR:-target}/flood
mkdir -p "$OUT"
JSONL="$OUT/flood.jsonl"
: >"$JSONL"
PORT=7777
eval "$(bash scripts/netns.sh up --queues 1 --no-tx-csum --owner $$)"
ENGINE_PID=
LOAD_PID=
stop_engine() {
  if [ -n "$ENGINE_PID" ]; then
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=
  fi
}
cleanup() {
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null || true
  stop_engine
  bash scripts/netns.sh down "$XR_ID" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

stats() { ip netns exec "$XR_NS_SRV" "$BIN" stats --iface "$XR_IF_SRV" --json; }
# veth_drops: the veth pair's dropped frames, both ends and directions (JSON number).
veth_drops() {
  local n=0 ns dev k
  for ns_dev in "$XR_NS_CLI:$XR_IF_CLI" "$XR_NS_SRV:$XR_IF_SRV"; do
    ns=${ns_dev%%:*}; dev=${ns_dev#*:}
    for k in rx_dropped tx_dropped; do
      n=$((n + $(ip netns exec "$ns" cat "/sys/class/net/$dev/statistics/$k")))
    done
  done
  echo "$n"
}

start_engine() {
  ip netns exec "$XR_NS_SRV" "$BIN" attach --iface "$XR_IF_SRV" --port "$PORT" --app echo \
    --cores 1 --max-connections 1024 --admission "$1" 2>>"$OUT/engine.log" &
  ENGINE_PID=$!
  for _ in $(seq 200); do
    stats >/dev/null 2>&1 && return 0
    kill -0 "$ENGINE_PID" 2>/dev/null || { echo "flood.sh: the engine exited; see $OUT/engine.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "flood.sh: the engine did not answer 'xrudp stats' within 20 s" >&2
  exit 1
}

# phase MODE KIND: one honest run, with a flood of KIND unless KIND is "none".
phase() {
  local mode=$1 kind=$2 before after flood='null' vb va
  vb=$(veth_drops)
  before=$(stats)
  ip netns exec "$XR_NS_CLI" "$BIN" bench --server "$XR_IP_SRV:$PORT" --clients 100 \
    --rate 4000 --size 64 --channel 0 --wait sleep --cores 0 --no-probe \
    --duration $((SECS + 4)) --json >"$OUT/load.json" 2>>"$OUT/load.log" &
  LOAD_PID=$!
  if [ "$kind" != none ]; then
    sleep 2
    local what=(--kind "$kind")
    if [ "$kind" = guessed-ids ]; then
      what=(--kind data --ids "$(ip netns exec "$XR_NS_SRV" "$BIN" stats --iface "$XR_IF_SRV" \
        --connections --json | python3 -c 'import json, sys
ids = [c["conn_id"] for e in json.load(sys.stdin) for c in e["connections"]]
print(f"{min(ids)}..={max(ids)}")')")
    fi
    flood=$(ip netns exec "$XR_NS_CLI" "$BIN" flood --iface "$XR_IF_CLI" \
      --target "$XR_IP_SRV:$PORT" "${what[@]}" --duration "$SECS" --rate "$RATE" --json)
  fi
  wait "$LOAD_PID" || { echo "flood.sh: the honest load failed ($mode $kind); see $OUT/load.log" >&2; exit 1; }
  LOAD_PID=
  after=$(stats)
  va=$(veth_drops)
  # One compact JSON line per phase (the reports are pretty-printed).
  python3 -c 'import json, sys
a = sys.argv
print(json.dumps({"admission": a[1], "kind": a[2], "flood": json.loads(a[3]),
                  "load": json.load(open(a[4])), "before": json.loads(a[5]),
                  "after": json.loads(a[6]), "veth_drops": int(a[7])}))' \
    "$mode" "$kind" "$flood" "$OUT/load.json" "$before" "$after" $((va - vb)) >>"$JSONL"
}

for mode in on off; do
  start_engine "$mode"
  echo "==> admission $mode: baseline" >&2
  phase "$mode" none
  for kind in $KINDS; do
    echo "==> admission $mode: $kind" >&2
    phase "$mode" "$kind"
  done
  stop_engine
done

python3 - "$JSONL" "$SECS" "$RATE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def snap(s):
    return s[0]["snapshot"]
def drops(s):
    return sum(v for k, v in snap(s)["xdp"].items() if k.startswith("drop_"))
def cpu(s):
    return sum(q.get("cpu_secs") or 0 for q in snap(s)["queues"])
def rx(s):
    return sum(q["rx_packets"] for q in snap(s)["queues"])
print(f"flood {sys.argv[2]} s per kind, --rate {sys.argv[3]} (0 = unpaced); honest: 100 clients, "
      "4,000 msg/s reliable-ordered")
def sock_drops(s):
    return sum((q.get("xdp_statistics") or {}).get("rx_dropped", 0) for q in snap(s)["queues"])
def wall(r):
    return (snap(r["after"])["taken_at_us"] - snap(r["before"])["taken_at_us"]) / 1e6
print("| admission | flood | flood pkts | flood rate /s | dropped by veth before XDP | "
      "dropped by the XDP program | passed by it | worker rx pkts | dropped at the AF_XDP socket | "
      "worker CPU | honest p50 / p90 / p99 µs | honest loss % |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    f, l = r["flood"], r["load"]
    d = drops(r["after"]) - drops(r["before"])
    rtt = l["rtt_us"]
    loss = 100 * l["messages"]["loss_ratio"]
    # veth counts the AF_XDP socket's drops too: take them off.
    lost = max(r["veth_drops"] - (sock_drops(r["after"]) - sock_drops(r["before"])), 0)
    if f:
        sent = f["sent"]
        fl = (f"{sent:,} | {f['rate']:,.0f} | {lost:,} | {100 * d / max(sent, 1):.3f} % | "
              f"{max(sent - lost - d, 0):,}")
    else:
        fl = f"— | — | {lost:,} | — | —"
    c = cpu(r["after"]) - cpu(r["before"])
    print(f"| {r['admission']} | {r['kind']} | {fl} | {rx(r['after']) - rx(r['before']):,} | "
          f"{sock_drops(r['after']) - sock_drops(r['before']):,} | "
          f"{c:.2f} s of {wall(r):.1f} s ({100 * c / max(wall(r), 1e-9):.0f} %) | "
          f"{rtt['p50']:.0f} / {rtt['p90']:.0f} / {rtt['p99']:.0f} | {loss:.3f} |")
PY
