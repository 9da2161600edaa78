#!/usr/bin/env bash
# Smoke test of the built binary: start the relay on port 0 from a config
# file, run the peer mode on both sides, and check a few MB byte for byte in
# each direction.
set -euo pipefail

cd "$(dirname "$0")/.."
# JET_RELAY_BIN picks the binary under test (CI passes the static build).
if [ -n "${JET_RELAY_BIN:-}" ]; then
    bin=$JET_RELAY_BIN
else
    cargo build --release --quiet
    bin=target/release/jet-relay
fi
size_mb=${SMOKE_MB:-4}
# What ships: the binary's size (CI passes the stripped static build; the
# target is at most 6 MB).
echo "smoke: binary $bin is $(stat -c %s "$bin") bytes"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/relay.toml" <<'TOML'
instance = "smoke"
log_level = "warn"
handshake_timeout = 5
[[listeners]]
url = "tcp://127.0.0.1:0"
TOML

# The relay prints one "listening URL" line per listener once bound.
mkfifo "$tmp/relay.out"
"$bin" --config "$tmp/relay.toml" >"$tmp/relay.out" 2>"$tmp/relay.err" &
pids+=($!)
exec 3<"$tmp/relay.out"
read -r -t 10 word url <&3 || { echo "smoke: the relay printed no listening line" >&2; cat "$tmp/relay.err" >&2; exit 1; }
[ "$word" = listening ] || { echo "smoke: unexpected line: $word $url" >&2; exit 1; }
echo "smoke: relay at $url"

head -c $((size_mb << 20)) /dev/urandom >"$tmp/server.in"
head -c $((size_mb << 20)) /dev/urandom >"$tmp/client.in"
association=$(cat /proc/sys/kernel/random/uuid)
candidate=$(cat /proc/sys/kernel/random/uuid)

# The accept peer reports its 200 on stderr: from then on it is parked.
mkfifo "$tmp/accept.err"
"$bin" accept "$url" "$association" "$candidate" <"$tmp/server.in" >"$tmp/server.out" 2>"$tmp/accept.err" &
accept_pid=$!
pids+=("$accept_pid")
exec 4<"$tmp/accept.err"
read -r -t 10 line <&4 || { echo "smoke: the accept peer said nothing" >&2; exit 1; }
case "$line" in *": 200") ;; *) echo "smoke: accept failed: $line" >&2; exit 1 ;; esac
cat <&4 >&2 &

timeout 60 "$bin" connect "$url" "$association" "$candidate" <"$tmp/client.in" >"$tmp/client.out"
timeout 60 tail --pid="$accept_pid" -f /dev/null
wait "$accept_pid"

cmp "$tmp/client.in" "$tmp/server.out"
cmp "$tmp/server.in" "$tmp/client.out"
echo "smoke: ${size_mb} MiB each way relayed byte for byte"
