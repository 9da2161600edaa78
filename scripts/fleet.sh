#!/usr/bin/env bash
# A fleet of three relays behind HAProxy on loopback (dist/haproxy/haproxy.cfg),
# driven by scripts/fleet.py through the balancer's single address: 200
# associations spread and paired, a relay killed, a relay drained, the peers'
# own addresses in the relays' logs. Bounded: well under 3 minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
started=$(date +%s)
# JET_RELAY_BIN picks the binary under test (CI passes the static build).
if [ -n "${JET_RELAY_BIN:-}" ]; then
    bin=$JET_RELAY_BIN
else
    cargo build --release --quiet
    bin=target/release/jet-relay
fi

if ! command -v haproxy >/dev/null; then
    echo "fleet: installing haproxy from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq haproxy >/dev/null
fi
haproxy_bin=$(command -v haproxy)

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    if [ "${FLEET_KEEP:-}" = 1 ]; then echo "fleet: logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# The balancer's four ports, free now: the relays must know them (their
# external_url) before HAProxy can bind them.
read -r LB_HTTP LB_TCP1 LB_TCP2 LB_TCP3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
export LB_HTTP LB_TCP1 LB_TCP2 LB_TCP3

# Drain on SIGTERM (drain_timeout) may be missing from the relay under test:
# step 3 then says so and fails rather than pass.
if grep -qa drain_timeout "$bin"; then
    FLEET_DRAIN=1
    drain_key="drain_timeout = 30"
else
    FLEET_DRAIN=0
    drain_key="# drain_timeout is not known to this relay"
    echo "fleet: this relay has no drain_timeout: step 3 will report the drain missing"
fi
export FLEET_DRAIN

start_relay() {
    local n=$1 lb_tcp=$2
    cat >"$tmp/relay$n.toml" <<TOML
# Relay $n: Jet-Instance and its tcp:// candidates name its own balancer port.
instance = "127.0.0.1:$lb_tcp"
log_level = "info"
trusted_proxies = ["127.0.0.1/32"]
$drain_key
# REST and ws:// through the shared HTTP port: WebSocket candidates only.
[[listeners]]
url = "tcp://127.0.0.1:0"
external_url = "ws://127.0.0.1:$LB_HTTP"
proxy_protocol = true
# Raw JET through this relay's own port.
[[listeners]]
url = "tcp://127.0.0.1:0"
external_url = "tcp://127.0.0.1:$lb_tcp"
proxy_protocol = true
TOML
    mkfifo "$tmp/relay$n.out"
    "$bin" --config "$tmp/relay$n.toml" >"$tmp/relay$n.out" 2>"$tmp/relay$n.log" &
    pids+=($!)
    eval "RELAY${n}_PID=$!"
    local http tcp word
    exec {fd}<"$tmp/relay$n.out"
    read -r -t 10 word http <&"$fd" && read -r -t 10 word tcp <&"$fd" || {
        echo "fleet: relay$n printed no listening lines" >&2
        cat "$tmp/relay$n.log" >&2
        exit 1
    }
    # Keep reading its stdout so the relay never blocks on a full pipe.
    cat <&"$fd" >/dev/null &
    eval "RELAY${n}_HTTP=${http##*:} RELAY${n}_TCP=${tcp##*:}"
    export "RELAY${n}_PID" "RELAY${n}_HTTP" "RELAY${n}_TCP"
    export "RELAY${n}_LOG=$tmp/relay$n.log"
}
start_relay 1 "$LB_TCP1"
start_relay 2 "$LB_TCP2"
start_relay 3 "$LB_TCP3"

"$haproxy_bin" -c -q -f dist/haproxy/haproxy.cfg
"$haproxy_bin" -db -f dist/haproxy/haproxy.cfg >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
haproxy_pid=$!

# HAProxy is ready when /health answers through it (bounded: 10 s).
ready=0
for _ in $(seq 100); do
    if python3 - "$LB_HTTP" <<'PY' 2>/dev/null; then ready=1; break; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1, ("127.0.0.254", 0))
s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
sys.exit(0 if s.recv(64).startswith(b"HTTP/1.1 200") else 1)
PY
    kill -0 "$haproxy_pid" || { cat "$tmp/haproxy.log" >&2; exit 1; }
    sleep 0.1
done
[ "$ready" = 1 ] || { echo "fleet: HAProxy never answered /health" >&2; cat "$tmp/haproxy.log" >&2; exit 1; }
echo "fleet: HAProxy at 127.0.0.1:$LB_HTTP (tcp $LB_TCP1 $LB_TCP2 $LB_TCP3);" \
    "relays at $RELAY1_HTTP/$RELAY1_TCP $RELAY2_HTTP/$RELAY2_TCP $RELAY3_HTTP/$RELAY3_TCP"

status=0
timeout 150 python3 scripts/fleet.py || status=$?

# Relay 2 was drained: it must be gone, with status 0, once its pairs ended.
for _ in $(seq 100); do kill -0 "$RELAY2_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$RELAY2_PID" 2>/dev/null; then
    echo "fleet: FAIL the drained relay is still running 10 s after its pairs ended"
    status=1
else
    drained=0
    wait "$RELAY2_PID" || drained=$?
    echo "fleet: the drained relay exited with status $drained"
    [ "$drained" = 0 ] || status=1
fi
kill -0 "$RELAY3_PID" || { echo "fleet: FAIL relay3 died"; status=1; }
counts=$(for n in 1 2 3; do grep -c 'accepted via PROXY v2' "$tmp/relay$n.log" || true; done | tr '\n' ' ')
echo "fleet: accept lines via PROXY v2 in relay 1, 2, 3: ${counts}; $(( $(date +%s) - started )) s in all"
if [ "$status" != 0 ]; then
    echo "fleet: FAILED; relay logs and HAProxy's:" >&2
    tail -n 5 "$tmp"/relay*.log "$tmp/haproxy.log" >&2
    exit 1
fi
echo "fleet: ok"
