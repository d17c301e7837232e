# voxrelay: multi-stage build of the same binary the README runs (`cargo build --release`).
#   docker build -t voxrelay .
#   docker run --rm -p 8080:8080 -p 10000-10100:10000-10100/udp \
#     -e VOXRELAY_RTC_IP=<this host's IP as callers reach it> voxrelay
# Media needs an address callers can reach: set VOXRELAY_RTC_IP (0.0.0.0 cannot be advertised).
# TURN: mount a turn.conf and add `--turn-config /etc/voxrelay/turn.conf` (ports 3478, 5349).

# No apt step: libopus is vendored and compiled by the build (media/opus); the image's gcc suffices.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin voxrelay

FROM debian:bookworm-slim
# ca-certificates: TLS to AI providers; curl: the health check. (Opus is linked in statically.)
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/voxrelay voxrelay
COPY --from=build /src/target/release/voxrelay /usr/local/bin/voxrelay
USER voxrelay
ENV VOXRELAY_LISTEN=0.0.0.0:8080 \
    VOXRELAY_DATA_DIR=/var/lib/voxrelay \
    VOXRELAY_RTC_PORTS=10000-10100
# HTTP API and web page; media (one UDP port per call, the same TCP port for ICE-TCP);
# embedded TURN when configured. SIGTERM drains for --drain-grace (30 s): stop with
# `docker stop -t 35` so Docker does not SIGKILL live calls after its default 10 s.
EXPOSE 8080/tcp 10000-10100/udp 10000-10100/tcp 3478/udp 3478/tcp 5349/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["voxrelay"]
CMD ["serve"]
