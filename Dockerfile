# syntax=docker/dockerfile:1
# wsbridge: build in the Rust image, run in a small Debian image as a non-root user.
#   docker build -t wsbridge .
#   docker run --rm -p 8000:8000 -e BRIDGE_COMMAND_QUEUE_URL=... -e BRIDGE_EVENTS_TOPIC_ARN=... \
#       -e BRIDGE_AUTH=jwt -e BRIDGE_JWT_SECRET=... wsbridge
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
# Beyond loopback the bridge is never open by default: with auth = "none" and
# no allowed_origins, `serve` exits 2 naming the fixes. Set BRIDGE_AUTH=jwt
# (with BRIDGE_JWT_SECRET, BRIDGE_JWT_PUBLIC_KEY_FILE or BRIDGE_JWT_JWKS_URL)
# or BRIDGE_ALLOWED_ORIGINS; BRIDGE_ALLOW_INSECURE=true accepts an open bridge
# (anyone who reaches the port connects as any client id) with a warning in
# the log at every start. This image sets none of them.
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
