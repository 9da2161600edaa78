#!/usr/bin/env bash
# Exposes a local TCP service (a small HTTP server) through a relay and reaches
# it from the other peer, checking the bytes: once per candidate type the relay
# serves (tcp and ws on a tcp listener, tls and wss on a tls listener) with the
# two commands of the README (accept --forward, connect --listen), then through
# a negotiation (answer/offer over two FIFOs), with and without host candidates,
# then through one JMUX tunnel that carries several connections.
#
# Usage: scripts/expose.sh
# Environment:
#   JET_RELAY_BIN     the binary (default: target/debug/jet-relay, built if missing)
#   JET_RELAY_CONFIG  a relay.toml to use (all its listeners are exercised);
#                     default: a tcp and a tls listener on 127.0.0.1:0 with the
#                     test certificate of tests/data
#   JET_CA            CA file for tls:// and wss:// (default: tests/data/ca.pem
#                     with the default configuration, else --insecure)
#   JET_API_KEY       the relay's api_key, if it has one (for the REST calls)
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
    cat > "$config" <<EOF
[[listeners]]
url = "tcp://127.0.0.1:0"

[[listeners]]
url = "tls://127.0.0.1:0"
cert = "$PWD/tests/data/server.pem"
key = "$PWD/tests/data/server.key"
EOF
    JET_CA=${JET_CA:-$PWD/tests/data/ca.pem}
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

# The REST API is served on every listener: HTTP on tcp, HTTPS on tls.
case ${urls[0]} in
    tcp://*) rest=http://${urls[0]#tcp://} ;;
    tls://*) rest=https://${urls[0]#tls://} ;;
    *) fail "unexpected listener ${urls[0]}" ;;
esac

if [ -n "${JET_CA:-}" ]; then
    tls_args=(--ca "$JET_CA")
else
    tls_args=(--insecure)
fi

# Gathers candidates for association $1 through the REST API: one
# "ID URL" line per candidate (one per transport each listener serves).
gather() {
    python3 - "$rest" "$1" "${JET_CA:-}" <<'EOF' || fail "POST /jet/gather/$1 failed"
import json, os, ssl, sys, urllib.error, urllib.request
base, association, ca = sys.argv[1:4]
request = urllib.request.Request(f"{base}/jet/gather/{association}", data=b"", method="POST")
key = os.environ.get("JET_API_KEY")
if key:
    request.add_header("Authorization", "Bearer " + key)
context = ssl.create_default_context(cafile=ca or None)
if not ca:
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
try:
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        for candidate in json.load(response)["candidates"]:
            print(candidate["id"], candidate["url"])
except urllib.error.HTTPError as e:
    sys.exit(f"expose: {base} answered {e.code}: {e.read().decode(errors='replace')}")
EOF
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

# Two commands, one per peer, for each candidate type. Each type gets its own
# association (the relay keeps only the first candidate that carries data);
# gathering creates it, which WebSocket candidates need.
gathered=$(gather "$(uuid)")
mapfile -t types < <(echo "$gathered" | sed -n 's|^[^ ]* \([a-z]*\)://.*|\1|p')
[ "${#types[@]}" -eq $((2 * listeners)) ] ||
    fail "gathered ${#types[@]} candidate types (${types[*]}) for $listeners listeners"
for type in "${types[@]}"; do
    a=$(uuid)
    line=$(gather "$a" | grep -m1 " $type://") || fail "no $type candidate gathered"
    c=${line%% *}
    url=${line#* }
    "$BIN" accept "$url" "$a" "$c" --forward "$service" "${tls_args[@]}" \
        2> "$work/server.err" &
    server=$!
    pids+=("$server")
    wait_line "$work/server.err" "jet-relay: accept $a $c: " > /dev/null
    "$BIN" connect "$url" "$a" "$c" --listen 127.0.0.1:0 "${tls_args[@]}" \
        > "$work/client.out" 2> "$work/client.err" &
    client=$!
    pids+=("$client")
    local_addr=$(wait_line "$work/client.out" "listening tcp://" | sed 's|^listening tcp://||')
    fetch_and_check "$local_addr" "$url"
    wait_exit "$client" "the client peer"
    wait_exit "$server" "the server peer"
done

# The same through a negotiation: the server peer gathers one relay candidate
# per type and, unless told not to, adds a host candidate; the client picks
# one (the host candidate when it is reachable).
mkfifo "$work/to-server" "$work/to-client"
negotiate() {
    local expected=$1
    shift
    "$BIN" answer --signal-in "$work/to-server" --signal-out "$work/to-client" \
        --gather "$rest" --forward "$service" "${tls_args[@]}" "$@" \
        2> "$work/answer.err" &
    server=$!
    pids+=("$server")
    "$BIN" offer --signal-in "$work/to-client" --signal-out "$work/to-server" \
        --listen 127.0.0.1:0 "${tls_args[@]}" \
        > "$work/offer.out" 2> "$work/offer.err" &
    client=$!
    pids+=("$client")
    local_addr=$(wait_line "$work/offer.out" "listening tcp://" | sed 's|^listening tcp://||')
    # The client peer negotiates once the local connection arrives, so the
    # fetch runs while it does.
    fetch_and_check "$local_addr" "negotiated ($*)"
    selected=$(wait_line "$work/offer.err" "jet-relay: selected" | sed 's/^jet-relay: //')
    echo "expose: $selected"
    case $selected in
        *"?ctype=$expected") ;;
        *) fail "expected a $expected candidate to be selected" ;;
    esac
    wait_exit "$client" "the offering peer"
    wait_exit "$server" "the answering peer"
}
negotiate host --host-listen 127.0.0.1:0
negotiate relay --no-host-candidates

# A tunnel that stays up (the README's JMUX commands): one relayed stream
# carries three fetches in a row; the peers create the association through
# the REST API themselves (--api, and JET_API_KEY when the relay has a key).
a=$(uuid)
c=$(uuid)
"$BIN" accept "${urls[0]}" "$a" "$c" --jmux --forward "$service" --api "$rest" "${tls_args[@]}" \
    2> "$work/jmux-server.err" &
pids+=($!)
wait_line "$work/jmux-server.err" "jet-relay: accept $a $c: 200" > /dev/null
"$BIN" connect "${urls[0]}" "$a" "$c" --jmux --listen "127.0.0.1:0=$service" --api "$rest" \
    "${tls_args[@]}" > "$work/jmux-client.out" 2> "$work/jmux-client.err" &
pids+=($!)
local_addr=$(wait_line "$work/jmux-client.out" "listening tcp://" | sed 's|^listening tcp://||')
for n in 1 2 3; do
    fetch_and_check "$local_addr" "JMUX tunnel over ${urls[0]}, fetch $n"
done
echo "expose: OK"
