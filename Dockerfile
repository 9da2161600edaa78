# jet-relay in a container: the static musl binary that CI tests, alone in an
# empty image (no shell, no libc, no package manager to patch).
#
#   scripts/build-static.sh          # target/x86_64-unknown-linux-musl/release/jet-relay
#   docker build -f Dockerfile -t jet-relay .
#   docker run --rm -p 8080:8080 jet-relay
#
# Why not a multi-stage build compiling in a rust image: the binary would be
# another build than the one scripts/build-static.sh makes and .ci/run
# smoke-tests, and the build stage needs the crate registry, which a
# networkless build host does not reach. .dockerignore sends only the binary,
# this config and the licences as the build context.
#
# Another config: docker run -v /path/relay.toml:/etc/jet-relay/relay.toml:ro
# (relative cert and key paths start at its folder: mount them beside it).
# Checked by scripts/check-dist.sh (hadolint).
FROM scratch

LABEL org.opencontainers.image.title="jet-relay" \
      org.opencontainers.image.description="A relay for the JET rendezvous protocol" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

COPY LICENSE-MIT LICENSE-APACHE /usr/share/doc/jet-relay/
COPY dist/docker/relay.toml /etc/jet-relay/relay.toml
COPY target/x86_64-unknown-linux-musl/release/jet-relay /usr/local/bin/jet-relay

# No user database in the image: a numeric, unprivileged uid and gid
# (65532, "nonroot" in distroless images). Port 8080 needs no capability.
USER 65532:65532

# JET and WebSocket (ws://) peers, and the REST API, on one TCP port.
EXPOSE 8080/tcp

# SIGTERM is the relay's clean shutdown (docker stop sends it, then SIGKILL
# after --time, 10 s by default: give it more if pairs must drain).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/jet-relay", "--config", "/etc/jet-relay/relay.toml"]
