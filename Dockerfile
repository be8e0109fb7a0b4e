# syntax=docker/dockerfile:1
# wsbridge: build in the Rust image, run in a small Debian image as a non-root user.
#   docker build -t wsbridge .
#   docker run --rm -p 8000:8000 -e BRIDGE_COMMAND_QUEUE_URL=... -e BRIDGE_EVENTS_TOPIC_ARN=... wsbridge
# Base images are pinned to exact versions (the toolchain the project is
# built and tested with, a Debian point release): a rebuild gets the same
# compiler and system libraries. Bump them on purpose, together with
# scripts/check-packaging.sh's expectations if the series changes.

FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p app --bin wsbridge \
    && mkdir -p /out/config \
    && cp target/release/wsbridge /out/wsbridge \
    && if [ -d config ]; then cp -r config/. /out/config/; fi

FROM debian:12.12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin wsbridge
WORKDIR /app
COPY --from=builder /out/wsbridge /usr/local/bin/wsbridge
COPY --from=builder /out/config /app/config
USER wsbridge
# Listen on all interfaces inside the container (the host decides what to publish).
ENV BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8000
EXPOSE 8000
# Liveness: `wsbridge health` GETs http://127.0.0.1:$BRIDGE_PORT/health
# (exit 0 on 200, 1 otherwise; no curl in the image). `serve` needs its
# queue and topic set; without them it exits 2 at once, naming them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["wsbridge", "health", "--timeout", "3"]
ENTRYPOINT ["wsbridge"]
CMD ["serve"]
