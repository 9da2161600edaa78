#!/usr/bin/env bash
# Builds the relay (profiling profile: release code with symbols) and runs
# jet-bench against it: the relay against a direct loopback connection
# between the same two peers, figures (a)-(e) of issue 6, and (j): one JMUX
# tunnel against a plain relayed pair. Arguments go to jet-bench (see
# `scripts/bench.sh --help`), e.g.
#   scripts/bench.sh --quick              # a smoke run, a few minutes
#   scripts/bench.sh --transport tcp      # plain TCP only, (a)-(e)
#   scripts/bench.sh --transport tls,ws,wss --only a,b,c
#   scripts/bench.sh                      # full sizes, 5 rounds, tcp,tls,ws,wss
#   scripts/bench.sh --only a,c --rounds 9
#   scripts/bench.sh --zero-copy false    # the portable read/write path
#   scripts/bench.sh --transport tcp --only j --rounds 3 --j-bytes 128MiB
#                                         # (j) one JMUX tunnel vs a plain pair
# Set BENCH_OUT=FILE to keep the output. The table and the `BENCH {json}`
# lines go to stdout, progress to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "machine: $(nproc) cores, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" >&2
# Each relay thread takes about four memory mappings (its stack and Rust's
# signal stack, each with a guard page): 10,000 idle pairs are 20,000 threads,
# past the default limit of 65,530 mappings. Raise it when we may (root).
want_maps=262144
maps=$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo "$want_maps")
if (( maps < want_maps )); then
    if [[ $(id -u) == 0 ]]; then
        echo "raising vm.max_map_count from $maps to $want_maps for the idle-capacity figure" >&2
        echo "$want_maps" > /proc/sys/vm/max_map_count
    else
        echo "warning: vm.max_map_count is $maps: the relay cannot start ~$((maps / 4)) threads or more" >&2
    fi
fi
# The relay under test: the profiling profile is the release code (the same
# LTO and codegen units as what ships) with symbols kept, so `perf record -p`
# on the relay during a run names functions. The shipped release is stripped.
cargo build --profile profiling --bin jet-relay >&2
# The bench profile inherits release; cargo runs the harness-less bench binary.
cmd=(cargo bench --bench jet-bench -- --relay target/profiling/jet-relay "$@")
if [[ -n "${BENCH_OUT:-}" ]]; then
    "${cmd[@]}" | tee "$BENCH_OUT"
else
    "${cmd[@]}"
fi
