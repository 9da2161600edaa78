#!/usr/bin/env bash
# Builds the single static binary jet-relay ships as:
# target/x86_64-unknown-linux-musl/release/jet-relay (no shared libraries,
# stripped: the release profile has strip = true). Prints its path on stdout
# and its size on stderr; fails when it links a shared library or is larger
# than JET_RELAY_MAX_BYTES (default 6 MB, 6,000,000 bytes).
# Needs the musl target of the Rust toolchain and musl-gcc (for ring's C and
# assembly); installs both when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
max_bytes=${JET_RELAY_MAX_BYTES:-6000000}
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target" >&2
fi
if ! command -v musl-gcc >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null
fi
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --target "$target" --quiet
bin=target/$target/release/jet-relay
if ldd "$bin" 2>&1 | grep -q "=>"; then
    echo "build-static: $bin links shared libraries" >&2
    exit 1
fi
# strip = true in the profile should leave no symbol table; check, since a
# profile change elsewhere (or a cached unstripped build) would ship one.
if readelf -S "$bin" | grep -q '\.symtab'; then
    echo "build-static: $bin is not stripped (has .symtab)" >&2
    exit 1
fi
bytes=$(stat -c %s "$bin")
echo "build-static: $bin: $bytes bytes ($(( (bytes + 1023) / 1024 )) KiB), stripped, static; limit $max_bytes" >&2
if (( bytes > max_bytes )); then
    echo "build-static: $bin is larger than $max_bytes bytes" >&2
    exit 1
fi
echo "$bin"
