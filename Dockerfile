# The gateway as a container image: a Rust build stage, then a slim Debian runtime running the
# binary as an unprivileged user.
#
#   docker build -t gateway .
#   docker run --rm -p 80:8080 gateway          # admin API on 127.0.0.1:9901 inside the container
#
# Container ports follow Istio's ingress gateway: 8080 (HTTP), 8443 (HTTPS), 9901 (admin). The
# admin API defaults to loopback; to reach it from outside the container set --admin 0.0.0.0:9901
# together with GATEWAY_ADMIN_TOKEN (compose.yaml does both).

FROM rust:1-bookworm AS build
# The build's Debian packages come from the one list in scripts/setup (cmake for Pingora's zlib-ng,
# protoc and its well-known types for the etcd client, …), copied alone so the layer is cached.
COPY scripts/setup /usr/local/bin/gateway-setup
RUN gateway-setup build && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gateway \
 && install -m 0755 target/release/gateway /usr/local/bin/gateway

FROM debian:bookworm-slim
# curl serves the compose health check (GET /readyz); ca-certificates for TLS upstreams.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
 && mkdir -p /var/lib/gateway /etc/gateway \
 && chown gateway:gateway /var/lib/gateway
COPY --from=build /usr/local/bin/gateway /usr/local/bin/gateway
COPY examples/ /etc/gateway/examples/
USER gateway
WORKDIR /var/lib/gateway
ENV GATEWAY_HTTP=0.0.0.0:8080 \
    GATEWAY_HTTPS=0.0.0.0:8443 \
    GATEWAY_DATA_DIR=/var/lib/gateway
EXPOSE 8080 8443 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway"]
