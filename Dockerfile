# raftkv node image: build with the Rust toolchain image, run on a slim Debian base as
# a non-root user, data in a volume. docs/deploy/README.md tells how to configure and
# run it; compose.yaml starts a 3-node cluster.
#
# The bases are build arguments: with a registry, the defaults. Without one,
# docker/base-images.sh makes local stand-ins from Debian's packages and the host's
# toolchain (RUST_IMAGE=raftkv-local/rust:bookworm,
# RUNTIME_IMAGE=raftkv-local/debian:bookworm-slim), as tests/containers.rs does.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Only what cargo builds from, so a change to the docs, tests or scripts keeps the
# compiled layer.
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
COPY tools/ tools/
COPY benches/ benches/
COPY examples/ examples/
COPY config/ config/
# Crates come from the registry, or, where the build cannot reach it, from
# docker/vendor, filled on the host by `cargo vendor --locked --versioned-dirs
# docker/vendor` (tests/containers.rs does so); the lock file pins the same versions.
COPY docker/vendor/ docker/vendor/
RUN if [ -n "$(ls docker/vendor)" ]; then \
        mkdir -p .cargo \
        && printf '%s\n' '[source.crates-io]' 'replace-with = "vendored"' \
            '[source.vendored]' 'directory = "docker/vendor"' > .cargo/config.toml; \
    fi \
 && cargo build --release --locked --bin raftkv-server --bin raftkv-cli \
 && mkdir /out \
 && cp target/release/raftkv-server target/release/raftkv-cli /out/ \
 && strip /out/raftkv-server /out/raftkv-cli

FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 raftkv \
 && useradd --system --uid 10001 --gid raftkv --home-dir /var/lib/raftkv \
        --shell /usr/sbin/nologin raftkv \
 && mkdir -p /var/lib/raftkv \
 && chown raftkv:raftkv /var/lib/raftkv
COPY --from=build /out/raftkv-server /out/raftkv-cli /usr/local/bin/
COPY docker/entrypoint.sh /usr/local/bin/raftkv-entrypoint
COPY docker/healthcheck.sh /usr/local/bin/raftkv-healthcheck
USER raftkv:raftkv
WORKDIR /var/lib/raftkv
# The node's WAL, hard state and snapshots (RAFTKV_DATA_DIR is a directory inside it).
VOLUME ["/var/lib/raftkv"]
# Peer (Raft), client, Redis, HTTP: the ports the entrypoint's defaults and
# compose.yaml use.
EXPOSE 7000 7001 6379 8080
# raftkv-server stops cleanly on SIGTERM (the entrypoint execs it: it is PID 1).
STOPSIGNAL SIGTERM
# Healthy when GET /health answers 200: a leader is known and committed entries applied.
HEALTHCHECK --interval=5s --timeout=3s --start-period=15s --retries=3 \
    CMD ["raftkv-healthcheck"]
ENTRYPOINT ["raftkv-entrypoint"]
