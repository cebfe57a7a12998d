#!/usr/bin/env bash
# Self-check of the comparison peers, on loopback only (127.0.0.1), about 15 s.
#
#   bash tools/peers/smoke.sh
#
# Builds the three programs into a temporary directory, then for enet and udp:
#   1. starts the echo server on 127.0.0.1 port 0 (the kernel picks a free port; the
#      server prints "listening on 127.0.0.1:PORT" on stderr once bound, which is read
#      back — no guessed ports, no bind races);
#   2. runs tick_load: 50 clients x 60 Hz, 64 B, 2 s, with --server-pid;
#   3. asserts from its JSON: connected == 50, scheduled == 6000 (so an empty run cannot
#      pass), echoed == scheduled, duplicates == 0, corrupt == 0, rtt count == echoed,
#      the server's CPU was read;
#   4. stops the server with SIGTERM and asserts from its JSON: received == sent and
#      received >= echoed (for enet also: 50 connects and 50 graceful disconnects).
# Then two negative controls, so the checks are known to fail when nothing echoes:
# tick_load --proto udp against the now-closed port must see 0 echoes and loss 1.0, and
# --proto enet must exit nonzero (no client connected within --connect-timeout).
# Every process runs under `timeout`; a trap stops servers and removes the temp dir.
# Exits nonzero with a message naming what failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d /tmp/peers-smoke.XXXXXX)"
servers=()

cleanup() {
    local p
    for p in ${servers[@]+"${servers[@]}"}; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in ${servers[@]+"${servers[@]}"}; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "smoke: FAILED: $*" >&2
    exit 1
}

CLIENTS=50
HZ=60
SECS=2
SCHEDULED=$((CLIENTS * HZ * SECS))

echo "smoke: building into $tmp/bin"
timeout 300 bash "$here/build.sh" "$tmp/bin" >"$tmp/build.log" 2>&1 ||
    { cat "$tmp/build.log" >&2; fail "build"; }
bin="$tmp/bin"

# Starts server $1 (udp_echo or enet_echo) on port 0; sets srv_pid (timeout's pid),
# srv_child (the server's own pid) and srv_port.
start_server() {
    local name="$1" log="$tmp/$1.err" i
    timeout 120 "$bin/$name" --bind 127.0.0.1:0 >"$tmp/$name.json" 2>"$log" &
    srv_pid=$!
    servers+=("$srv_pid")
    srv_port=""
    for i in $(seq 1 100); do
        srv_port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log")"
        [ -n "$srv_port" ] && break
        kill -0 "$srv_pid" 2>/dev/null || { cat "$log" >&2; fail "$name exited at start"; }
        sleep 0.05
    done
    [ -n "$srv_port" ] || fail "$name did not report its port within 5 s"
    srv_child="$(cat "/proc/$srv_pid/task/$srv_pid/children" 2>/dev/null | awk '{print $1}')"
    [ -n "$srv_child" ] || fail "$name: cannot find its pid under timeout ($srv_pid)"
}

# Stops the server started last with SIGTERM; it must exit 0 within 10 s.
stop_server() {
    local name="$1" rc=0 i
    kill -TERM "$srv_pid" || fail "$name: cannot signal it"
    for i in $(seq 1 100); do
        kill -0 "$srv_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$srv_pid" 2>/dev/null && fail "$name: still running 10 s after SIGTERM"
    wait "$srv_pid" || rc=$?
    [ "$rc" -eq 0 ] || { cat "$tmp/$name.err" >&2; fail "$name exited with status $rc"; }
}

# Checks tick_load's JSON ($2) for proto $1; prints a one-line summary.
check_load() {
    python3 - "$1" "$2" "$CLIENTS" "$SCHEDULED" <<'EOF'
import json, sys
proto, path, clients, scheduled = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = open(path).read().splitlines()
if len(lines) != 1:
    sys.exit(f"tick_load {proto}: expected one JSON line, got {len(lines)}")
r = json.loads(lines[0])
m, rtt = r["messages"], r["rtt_us"]
checks = [
    ("settings.proto == " + proto, r["settings"]["proto"] == proto),
    (f"connected == {clients}", r["connected"] == clients),
    (f"scheduled == {scheduled}", m["scheduled"] == scheduled),
    ("echoed == scheduled", m["echoed"] == m["scheduled"]),
    ("duplicates == 0", m["duplicates"] == 0),
    ("corrupt == 0", m["corrupt"] == 0),
    ("rtt_us.count == echoed", rtt["count"] == m["echoed"]),
    ("0 < rtt p50 <= max", 0 < rtt["p50"] <= rtt["max"]),
    ("server figures present", r["server"] is not None and r["server"]["cpu_ns"] >= 0),
]
bad = [name for name, ok in checks if not ok]
if bad:
    sys.exit(f"tick_load {proto}: " + "; ".join(bad) + "\n" + lines[0])
print(f"{m['echoed']}/{m['scheduled']} echoed, rtt p50 {rtt['p50']:.0f} us "
      f"p99 {rtt['p99']:.0f} us, behind {r['behind']}, "
      f"server {r['server']['cpu_ns_per_msg']:.0f} ns/msg")
EOF
}

# Checks the server's JSON ($2) against tick_load's ($3).
check_server() {
    python3 - "$1" "$2" "$3" "$CLIENTS" <<'EOF'
import json, sys
name, spath, lpath, clients = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lines = open(spath).read().splitlines()
if len(lines) != 1:
    sys.exit(f"{name}: expected one JSON line, got {len(lines)}")
s = json.loads(lines[0])
echoed = json.loads(open(lpath).read())["messages"]["echoed"]
checks = [
    ("received == sent", s["received"] == s["sent"]),
    ("received >= echoed", s["received"] >= echoed),
]
if name == "enet_echo":
    checks += [
        (f"connects == {clients}", s["connects"] == clients),
        (f"disconnects == {clients}", s["disconnects"] == clients),
    ]
bad = [n for n, ok in checks if not ok]
if bad:
    sys.exit(f"{name}: " + "; ".join(bad) + "\n" + lines[0])
print(f"received {s['received']}, sent {s['sent']}")
EOF
}

for proto in enet udp; do
    server="${proto}_echo"
    start_server "$server"
    load="$tmp/$proto.load.json"
    rc=0
    timeout 60 "$bin/tick_load" --proto "$proto" --server "127.0.0.1:$srv_port" \
        --clients "$CLIENTS" --tick-hz "$HZ" --size 64 --seconds "$SECS" \
        --server-pid "$srv_child" >"$load" 2>"$tmp/$proto.load.err" || rc=$?
    [ "$rc" -eq 0 ] || { cat "$tmp/$proto.load.err" >&2; fail "tick_load --proto $proto exited with $rc"; }
    summary="$(check_load "$proto" "$load")" || fail "tick_load --proto $proto: checks above"
    echo "smoke: $proto: tick_load ok: $summary"
    stop_server "$server"
    summary="$(check_server "$server" "$tmp/$server.json" "$load")" || fail "$server: checks above"
    echo "smoke: $proto: $server ok: $summary"
done

# Negative controls: the same checks must see a run with nothing to echo.
closed="$srv_port" # udp_echo's port, closed now
rc=0
timeout 30 "$bin/tick_load" --proto udp --server "127.0.0.1:$closed" --clients 5 \
    --seconds 1 --drain 0 >"$tmp/neg.json" 2>"$tmp/neg.err" || rc=$?
[ "$rc" -eq 0 ] || { cat "$tmp/neg.err" >&2; fail "negative udp control: tick_load exited with $rc"; }
python3 - "$tmp/neg.json" <<'EOF' || fail "negative udp control: a closed port did not read as total loss"
import json, sys
m = json.loads(open(sys.argv[1]).read())["messages"]
sys.exit(0 if m["scheduled"] == 300 and m["echoed"] == 0 and m["loss_ratio"] == 1.0 else 1)
EOF
echo "smoke: negative control: udp to a closed port: 0 echoed, loss 1.0 (as expected)"
rc=0
timeout 30 "$bin/tick_load" --proto enet --server "127.0.0.1:$closed" --clients 5 \
    --seconds 1 --connect-timeout 1 >"$tmp/neg.json" 2>"$tmp/neg.err" || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "negative enet control: tick_load exited with $rc, want an error"
grep -q "no client connected" "$tmp/neg.err" || fail "negative enet control: no 'no client connected' message"
echo "smoke: negative control: enet to a closed port: exit $rc, \"$(head -n1 "$tmp/neg.err")\" (as expected)"

echo "smoke: all passed"
