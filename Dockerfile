# syntax=docker/dockerfile:1
# The edfi-cdc image: the release binary on a slim Debian, run as a non-root user.
#   docker build -t edfi-cdc .
#   docker run --env-file … edfi-cdc            # = edfi-cdc run --config /etc/edfi-cdc/connectors/edfi-ods.toml
# Only the edfi-cdc binary is built (the ODS simulator is a test tool and is not in the image).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds of the same builder.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p edfi-cdc --bin edfi-cdc \
    && install -D -m 0755 target/release/edfi-cdc /out/edfi-cdc

FROM debian:bookworm-slim
# ca-certificates: TLS to SQL Server, MSK and AWS endpoints trusts the system roots; libssl3:
# librdkafka's TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin edfi-cdc
COPY --from=builder /out/edfi-cdc /usr/local/bin/edfi-cdc
COPY connectors/ /etc/edfi-cdc/connectors/
USER 10001:10001
ENV EDFI_CDC_LOG_FORMAT=json \
    METRICS_ADDR=0.0.0.0:9720
EXPOSE 9720
# Liveness over the metrics port without curl: `edfi-cdc healthcheck` GETs /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["edfi-cdc", "healthcheck", "--addr", "127.0.0.1:9720"]
# SIGTERM finishes the current transaction (shutdown_grace = 30 s in edfi-ods.toml); give
# `docker stop` / ECS stopTimeout at least that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["edfi-cdc"]
CMD ["run", "--config", "/etc/edfi-cdc/connectors/edfi-ods.toml"]
