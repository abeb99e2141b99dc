# cryptobot image: built from the workspace, run as a non-root user with its database on a volume.
#   docker build -t cryptobot .
#   docker run -p 127.0.0.1:8080:8080 -v cryptobot-data:/var/lib/cryptobot \
#     -e CRYPTOBOT__AUTH__TOKENS='[{"name":"ops","token":"<32+ random characters>","scopes":["read","trade"]}]' cryptobot
# deploy/compose.yaml runs an engine, two gateways, Redis and nginx from it (docs/operations.md).

FROM rust:1.95.0-slim-bookworm AS build
# A C compiler for the bundled SQLite and ring; make is not needed for the release build.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The toolchain of rust-toolchain.toml without its lint components (not needed to build).
ENV RUSTUP_TOOLCHAIN=1.95.0
COPY . .
RUN cargo build --release --locked -p cryptobot-server --bin cryptobot

FROM debian:bookworm-slim
# curl only for the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/cryptobot --shell /usr/sbin/nologin cryptobot \
    && mkdir -p /var/lib/cryptobot /etc/cryptobot \
    && chown cryptobot:cryptobot /var/lib/cryptobot
COPY --from=build /src/target/release/cryptobot /usr/local/bin/cryptobot
COPY deploy/cryptobot.prod.toml /etc/cryptobot/cryptobot.toml
USER 10001:10001
WORKDIR /var/lib/cryptobot
VOLUME ["/var/lib/cryptobot"]
# Inside a container the server listens on every interface of the container's own network.
ENV CRYPTOBOT__SERVER__HOST=0.0.0.0
EXPOSE 8080
# Liveness only (/livez): the process serves HTTP. Readiness is /readyz (docs/operations.md).
# Through sh: the port follows CRYPTOBOT__SERVER__PORT (gateways of deploy/compose.yaml use others).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["sh", "-c", "curl -fsS -o /dev/null http://127.0.0.1:${CRYPTOBOT__SERVER__PORT:-8080}/livez"]
# SIGTERM is the graceful stop (docs/operations.md); exec form so it reaches the server.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/cryptobot", "--config", "/etc/cryptobot/cryptobot.toml"]
