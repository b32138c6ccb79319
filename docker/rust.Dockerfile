# The builder base made by docker/base-images.sh where no registry offers
# rust:1-bookworm: the local Debian minbase image, a C toolchain for linking, and the
# host's rustc and cargo (copied into the build context as toolchain/).
ARG BASE=raftkv-local/debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY toolchain/ /usr/local/rust/
# As in the official rust image: cargo's registry cache under /usr/local/cargo.
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:$PATH
RUN rustc --version && cargo --version
