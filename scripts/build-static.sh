#!/usr/bin/env bash
# Builds the single static binary jet-relay ships as:
# target/x86_64-unknown-linux-musl/release/jet-relay (no shared libraries).
# Needs the musl target of the Rust toolchain and musl-gcc (for ring's C and
# assembly); installs both when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
    apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null
fi
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --target "$target" --quiet
bin=target/$target/release/jet-relay
if ldd "$bin" 2>&1 | grep -q "=>"; then
    echo "build-static: $bin links shared libraries" >&2
    exit 1
fi
echo "$bin"
