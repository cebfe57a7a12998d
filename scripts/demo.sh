#!/usr/bin/env bash
# The main job on a fresh machine, end to end: install what is missing, build, make a
# veth pair between two fresh namespaces, attach the engine to the server end, send
# traffic from the client end, show the engine's live figures, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# PROFILE=dev skips the (slower) optimised build.
if [ "${PROFILE:-release}" = dev ]; then
  cargo build --locked -p xrudp
  BIN=target/debug/xrudp
else
  cargo build --release --locked -p xrudp
  BIN=target/release/xrudp
fi
PORT=${PORT:-7777}
CLIENTS=${CLIENTS:-200}
RATE=${RATE:-10000}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-5}

# TX checksum offload off on the client end: the engine verifies UDP checksums.
eval "$(bash scripts/netns.sh up --queues 2 --no-tx-csum --owner $$)"
ENGINE_PID=
cleanup() {
  [ -n "$ENGINE_PID" ] && kill -TERM "$ENGINE_PID" 2>/dev/null && wait "$ENGINE_PID" 2>/dev/null || true
  bash scripts/netns.sh down "$XR_ID"
}
trap cleanup EXIT INT TERM

echo "==> xrudp attach --iface $XR_IF_SRV --port $PORT   (RUDP echo app, in namespace $XR_NS_SRV)"
ip netns exec "$XR_NS_SRV" "$BIN" attach --iface "$XR_IF_SRV" --port "$PORT" --app "${APP:-echo}" &
ENGINE_PID=$!
for _ in $(seq 100); do
  ip netns exec "$XR_NS_SRV" "$BIN" stats --iface "$XR_IF_SRV" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "==> xrudp bench: $CLIENTS RUDP clients, $RATE msg/s for $SECONDS_OF_LOAD s, from $XR_NS_CLI"
ip netns exec "$XR_NS_CLI" "$BIN" bench --server "$XR_IP_SRV:$PORT" --clients "$CLIENTS" \
  --rate "$RATE" --size 64 --duration "$SECONDS_OF_LOAD" &
LOAD_PID=$!
sleep $((SECONDS_OF_LOAD / 2 + 1))
echo "==> xrudp stats --iface $XR_IF_SRV   (under load)"
ip netns exec "$XR_NS_SRV" "$BIN" stats --iface "$XR_IF_SRV"
wait "$LOAD_PID"
