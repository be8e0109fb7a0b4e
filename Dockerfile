# syntax=docker/dockerfile:1
# wsbridge: build in the Rust image, run in a small Debian image as a non-root user.
#   docker build -t wsbridge .
#   docker run --rm -p 8000:8000 -e BRIDGE_COMMAND_QUEUE_URL=... -e BRIDGE_EVENTS_TOPIC_ARN=... wsbridge

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p app --bin wsbridge \
    && mkdir -p /out/config \
    && cp target/release/wsbridge /out/wsbridge \
    && if [ -d config ]; then cp -r config/. /out/config/; fi

FROM debian:bookworm-slim
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
ENTRYPOINT ["wsbridge"]
CMD ["serve"]
