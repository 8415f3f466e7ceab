# syntax=docker/dockerfile:1
#
# linkpulse image: both binaries (`producer`, `worker`) on a distroless runtime.
#
#   docker build -t linkpulse:local .
#   docker run --rm -e DATABASE_URL=... linkpulse:local                         # a worker (default)
#   docker run --rm -e DATABASE_URL=... linkpulse:local /usr/local/bin/producer run
#
# Stages: `chef` (toolchain + cargo-chef) → `planner` (dependency recipe from the manifests and
# Cargo.lock only) → `builder` (dependencies cooked into their own layer, which a source-only change
# does not invalidate; then the `--locked` release build) → `runtime` (the two binaries on
# distroless `cc`: glibc, libgcc, CA certificates, no shell, no package manager, uid 65532).

ARG RUST_VERSION=1.95.0
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
# The queue's SQL is checked at run time (no `query!` macros need a database while compiling);
# SQLX_OFFLINE keeps a stray DATABASE_URL in the build environment from being used anyway.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json -p producer -p worker
COPY . .
RUN cargo build --release --locked -p producer -p worker \
    && mkdir -p /out \
    && cp target/release/producer target/release/worker /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="linkpulse" \
      org.opencontainers.image.description="linkpulse producer and worker: a PostgreSQL-backed link-checking worker pool" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=builder /out/producer /out/worker /usr/local/bin/
# distroless `nonroot` user; Kubernetes manifests pin the same uid/gid (runAsUser 65532).
USER 65532:65532
# 9090: worker /livez, /readyz (LINKPULSE_WORKER_ADDR); 8080: producer admin (LINKPULSE_ADMIN_ADDR).
EXPOSE 9090 8080
CMD ["/usr/local/bin/worker"]
