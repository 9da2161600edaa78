#!/usr/bin/env bash
# Exposes a local TCP service (a small HTTP server) through a relay and reaches
# it from the other peer, checking the bytes: once per relay listener with the
# two commands of docs/peer.md (accept --forward, connect --listen), then once
# through a negotiation (answer/offer over two FIFOs).
#
# Usage: scripts/expose.sh
# Environment:
#   JET_RELAY_BIN     the binary (default: target/debug/jet-relay, built if missing)
#   JET_RELAY_CONFIG  a relay.toml to use (all its listeners are exercised);
#                     default: one tcp listener on 127.0.0.1:0
#   JET_CA            CA file for tls:// and wss:// listeners (default: --insecure)
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${JET_RELAY_BIN:-target/debug/jet-relay}
if [ ! -x "$BIN" ]; then
    cargo build --quiet
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "expose: FAIL: $*" >&2
    for f in "$work"/*.err; do
        [ -s "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }
    done
    exit 1
}

# Waits until FILE has a line starting with PREFIX (at most 10 s) and prints it.
wait_line() {
    local file=$1 prefix=$2 i line
    for i in $(seq 200); do
        line=$(grep -m1 "^$prefix" "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        sleep 0.05
    done
    fail "no line starting with '$prefix' in $file"
}

# Waits (at most 20 s) for a process to exit; fails if it does not or if it failed.
wait_exit() {
    local pid=$1 what=$2 i
    for i in $(seq 400); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" || fail "$what exited with status $?"
            return 0
        fi
        sleep 0.05
    done
    fail "$what did not exit"
}

uuid() { cat /proc/sys/kernel/random/uuid; }

# The local service: python's HTTP server on a free port, serving 3 MB of
# random bytes.
mkdir "$work/site"
head -c 3000000 /dev/urandom > "$work/site/blob"
python3 -u -m http.server --bind 127.0.0.1 --directory "$work/site" 0 \
    > "$work/http.out" 2> "$work/http.err" &
pids+=($!)
http_line=$(wait_line "$work/http.out" "Serving HTTP")
http_port=$(echo "$http_line" | sed -n 's/.* port \([0-9][0-9]*\) .*/\1/p')
[ -n "$http_port" ] || fail "cannot read the HTTP server's port from: $http_line"
service=127.0.0.1:$http_port

# The relay, on port 0: it prints one `listening URL` line per listener.
config=${JET_RELAY_CONFIG:-}
if [ -z "$config" ]; then
    config=$work/relay.toml
    printf '[[listeners]]\nurl = "tcp://127.0.0.1:0"\n' > "$config"
fi
listeners=$(grep -c '^\[\[listeners\]\]' "$config")
JET_RELAY_LOG=warn "$BIN" --config "$config" > "$work/relay.out" 2> "$work/relay.err" &
pids+=($!)
for i in $(seq 200); do
    [ "$(grep -c '^listening ' "$work/relay.out" 2>/dev/null || true)" -ge "$listeners" ] && break
    sleep 0.05
done
mapfile -t urls < <(sed -n 's/^listening //p' "$work/relay.out")
[ "${#urls[@]}" -ge "$listeners" ] || fail "the relay printed ${#urls[@]} of $listeners listening lines"

tls_args() {
    case $1 in
        tls://* | wss://*) if [ -n "${JET_CA:-}" ]; then echo --ca "$JET_CA"; else echo --insecure; fi ;;
    esac
}

# Fetches the blob through a local address and compares it byte for byte.
fetch_and_check() {
    local addr=$1 what=$2
    python3 - "http://$addr/blob" "$work/got" <<'EOF' || fail "$what: the fetch failed"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as r, open(sys.argv[2], "wb") as out:
    out.write(r.read())
EOF
    cmp -s "$work/site/blob" "$work/got" || fail "$what: the bytes differ"
    echo "expose: $what: $(stat -c %s "$work/got") bytes identical"
}

# Two commands, one per peer, for each relay listener.
for url in "${urls[@]}"; do
    a=$(uuid)
    c=$(uuid)
    # shellcheck disable=SC2046
    "$BIN" accept "$url" "$a" "$c" --forward "$service" $(tls_args "$url") \
        2> "$work/server.err" &
    server=$!
    pids+=("$server")
    wait_line "$work/server.err" "jet-relay: accept $a $c: " > /dev/null
    # shellcheck disable=SC2046
    "$BIN" connect "$url" "$a" "$c" --listen 127.0.0.1:0 $(tls_args "$url") \
        > "$work/client.out" 2> "$work/client.err" &
    client=$!
    pids+=("$client")
    local_addr=$(wait_line "$work/client.out" "listening tcp://" | sed 's|^listening tcp://||')
    fetch_and_check "$local_addr" "$url"
    wait_exit "$client" "the client peer"
    wait_exit "$server" "the server peer"
done

# The same through a negotiation: the server peer offers the relay candidate
# of the first listener and a host candidate; the client picks one.
mkfifo "$work/to-server" "$work/to-client"
# shellcheck disable=SC2046
"$BIN" answer --signal-in "$work/to-server" --signal-out "$work/to-client" \
    --relay "${urls[0]}" --host-listen 127.0.0.1:0 --forward "$service" $(tls_args "${urls[0]}") \
    2> "$work/answer.err" &
server=$!
pids+=("$server")
# shellcheck disable=SC2046
"$BIN" offer --signal-in "$work/to-client" --signal-out "$work/to-server" \
    --listen 127.0.0.1:0 $(tls_args "${urls[0]}") \
    > "$work/offer.out" 2> "$work/offer.err" &
client=$!
pids+=("$client")
local_addr=$(wait_line "$work/offer.out" "listening tcp://" | sed 's|^listening tcp://||')
# The client peer negotiates once the local connection arrives, so the fetch
# runs while it does.
fetch_and_check "$local_addr" "negotiated"
echo "expose: $(wait_line "$work/offer.err" "jet-relay: selected" | sed 's/^jet-relay: //')"
wait_exit "$client" "the offering peer"
wait_exit "$server" "the answering peer"
echo "expose: OK"
