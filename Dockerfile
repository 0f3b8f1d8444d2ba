# syntax=docker/dockerfile:1
# One image for every hookmesh service: the container runs `hookmesh <target>`
# (gateway, sweep-worker, csr-consumer, batch-processor; the Helm chart sets
# the argument). Build it from the repository root:
#
#   docker build -t hookmesh:0.1.0 .
#
# The binary carries everything it needs: the stream, consumer and bucket
# definitions of nats/ and each service's SQL migrations are compiled in.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry and the target directory are cached between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hookmesh \
    && install -D -m 0755 target/release/hookmesh /out/hookmesh

# glibc, libgcc and CA certificates (for https calls to the Trading API and
# incoming webhooks), no shell, no package manager; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/hookmesh /usr/local/bin/hookmesh
USER 65532:65532
ENV HOOKMESH_HTTP_ADDR=0.0.0.0:8080 \
    HOOKMESH_OPS_ADDR=0.0.0.0:9090 \
    HOOKMESH_LOG_FORMAT=json
# 8080: the gateway's HTTP (webhooks, /api, /health, /readyz, /metrics);
# 9090: the other services' /health, /readyz and /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/hookmesh"]
CMD ["gateway"]
