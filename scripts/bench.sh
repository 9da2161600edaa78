#!/usr/bin/env bash
# Builds the release relay and runs jet-bench against it: the relay against a
# direct loopback connection between the same two peers, figures (a)-(e) of
# issue 6. Arguments go to jet-bench (see `scripts/bench.sh --help`), e.g.
#   scripts/bench.sh --quick              # a smoke run, about a minute
#   scripts/bench.sh                      # full sizes, 5 rounds
#   scripts/bench.sh --only a,c --rounds 9
#   scripts/bench.sh --zero-copy false    # the portable read/write path
# Set BENCH_OUT=FILE to keep the output. The table and the `BENCH {json}`
# lines go to stdout, progress to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "machine: $(nproc) cores, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" >&2
cargo build --release --bin jet-relay >&2
# The bench profile inherits release; cargo runs the harness-less bench binary.
cmd=(cargo bench --bench jet-bench -- --relay target/release/jet-relay "$@")
if [[ -n "${BENCH_OUT:-}" ]]; then
    "${cmd[@]}" | tee "$BENCH_OUT"
else
    "${cmd[@]}"
fi
