#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that read network input (and
# relay.toml): libFuzzer through libfuzzer-sys, built by stable rustc with
# SanitizerCoverage (`-Cpasses=sancov-module`), so neither nightly nor
# cargo-fuzz is needed. tests/fuzz/README.md says why and how.
#
#   scripts/fuzz.sh [--seconds N] [--merge] [TARGET...]
#
# Runs each TARGET (default: all) for N seconds (default 60) on a scratch copy
# of tests/fuzz/corpus/TARGET; fails on the first crash, hang (10 s for one
# input) or out-of-memory, leaving the reproducer in
# tests/fuzz/target/artifacts/TARGET/. --merge folds what the run found into
# the committed corpus, minimized (libFuzzer -set_cover_merge=1).
set -euo pipefail
cd "$(dirname "$0")/.."

all=(jet_packet http_head ws_upgrade ws_frames proxy_header jwt relay_toml)
seconds=60
merge=false
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --seconds=*) seconds=${1#*=}; shift ;;
        --merge) merge=true; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# The largest input per target: a JET packet's 16-bit size needs 64 KiB and
# a bit; a token may be 8 KiB; an HTTP head 16 KiB.
max_len() {
    case "$1" in
        jet_packet) echo 70000 ;;
        http_head) echo 20000 ;;
        jwt) echo 9000 ;;
        *) echo 4096 ;;
    esac
}

for t in "${targets[@]}"; do
    case " ${all[*]} " in
        *" $t "*) ;;
        *) echo "fuzz.sh: no target $t (targets: ${all[*]})" >&2; exit 2 ;;
    esac
done

# libfuzzer-sys compiles libFuzzer (C++) itself: only a C++ compiler is needed.
if ! command -v c++ >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq g++ >/dev/null
fi

host=$(rustc -vV | sed -n 's/^host: //p')
fuzz=tests/fuzz
target_dir=${CARGO_TARGET_DIR:-$fuzz/target}
# The coverage flags cargo-fuzz passes with `--sanitizer none`; all are
# stable. An explicit --target keeps them off build scripts and proc macros.
# FUZZ_STACK_DEPTH=1 adds stack-depth feedback (deep recursion is a goal):
# better for long runs, but every new depth is a new feature, which bloats
# a merged corpus.
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
if [ "${FUZZ_STACK_DEPTH:-0}" = 1 ]; then
    RUSTFLAGS="$RUSTFLAGS -Cllvm-args=-sanitizer-coverage-stack-depth"
fi
export RUSTFLAGS
echo "== fuzz: building ${targets[*]}"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
start=$(date +%s)
cargo build --quiet --locked --release --manifest-path "$fuzz/Cargo.toml" \
    --target "$host" "${bins[@]}"
echo "== fuzz: built in $(( $(date +%s) - start )) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    bin=$target_dir/$host/release/$t
    artifacts=$target_dir/artifacts/$t
    mkdir -p "$work/$t" "$artifacts"
    cp "$fuzz/corpus/$t"/* "$work/$t/"
    echo "== fuzz: $t for $seconds s"
    log=$work/$t.log
    # One process (no -jobs/-workers): the machine's cores are shared.
    if ! "$bin" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$work/$t" >"$log" 2>&1; then
        grep -v '^#' "$log" | tail -40 >&2
        echo "fuzz.sh: $t failed; reproducer in $artifacts/ (run: $bin FILE)" >&2
        exit 1
    fi
    grep -E 'DONE' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" |
        tr '\n' ' '
    echo
    if $merge; then
        # Edges only (no hit counts or compare operands): fewer files.
        "$bin" -set_cover_merge=1 -use_counters=0 -use_value_profile=0 -use_cmp=0 \
            -max_len="$(max_len "$t")" "$fuzz/corpus/$t" "$work/$t" \
            >"$work/$t.merge.log" 2>&1
        echo "   corpus/$t: $(ls "$fuzz/corpus/$t" | wc -l) files"
    fi
done
echo "== fuzz: ${#targets[@]} targets, no crash"
