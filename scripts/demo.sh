#!/usr/bin/env bash
# The main job on a fresh machine, end to end: install what is missing, build, make a
# veth pair between two fresh namespaces, attach the engine to the server end, send
# traffic from the client end, show the engine's live figures, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked -p xrudp
BIN=target/release/xrudp
PORT=${PORT:-7777}
COUNT=${COUNT:-20000}

eval "$(bash scripts/netns.sh up --queues 2)"
ENGINE_PID=
cleanup() {
  [ -n "$ENGINE_PID" ] && kill -TERM "$ENGINE_PID" 2>/dev/null && wait "$ENGINE_PID" 2>/dev/null || true
  bash scripts/netns.sh down "$XR_ID"
}
trap cleanup EXIT INT TERM

echo "==> xrudp attach --iface $XR_IF_SRV --port $PORT   (in namespace $XR_NS_SRV)"
ip netns exec "$XR_NS_SRV" "$BIN" attach --iface "$XR_IF_SRV" --port "$PORT" --app "${APP:-discard}" &
ENGINE_PID=$!
for _ in $(seq 100); do
  ip netns exec "$XR_NS_SRV" "$BIN" stats --iface "$XR_IF_SRV" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "==> sending $COUNT UDP datagrams to $XR_IP_SRV:$PORT from $XR_NS_CLI"
ip netns exec "$XR_NS_CLI" python3 - "$XR_IP_SRV" "$PORT" "$COUNT" <<'PY'
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"XR\x01\x06" + b"\x00" * 60
for i in range(count):
    s.sendto(payload, (host, port))
    if i % 256 == 255:
        time.sleep(0.001)
PY
sleep 0.5
echo "==> xrudp stats --iface $XR_IF_SRV"
ip netns exec "$XR_NS_SRV" "$BIN" stats --iface "$XR_IF_SRV"
