# syntax=docker/dockerfile:1
# ringcast's container image: built on rust:1-bookworm, run on debian:bookworm-slim as an
# unprivileged user. The native listener is 0.0.0.0:8080 (RINGCAST_LISTEN); give any other
# knob as arguments or RINGCAST_* variables, e.g.
#
#   docker build -t ringcast .
#   docker run --rm -p 8080:8080 --security-opt seccomp=/etc/docker/seccomp-io_uring.json \
#       ringcast --redis redis://redis:6379
#
# Docker's default seccomp profile forbids io_uring_setup, io_uring_enter and io_uring_register;
# see "Deploying" in README.md for a profile that allows them.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ringcast \
    && cp target/release/ringcast /usr/local/bin/ringcast

FROM debian:bookworm-slim
# curl is only for the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/ringcast \
        --create-home --shell /usr/sbin/nologin ringcast
COPY --from=build /usr/local/bin/ringcast /usr/local/bin/ringcast
USER ringcast
# Writable working directory (SuperDARN keeps echoes.sqlite here).
WORKDIR /var/lib/ringcast
ENV RINGCAST_LISTEN=0.0.0.0:8080
EXPOSE 8080
# Clients get close code 1001 and the process exits within --shutdown-timeout (4 s) + ~0.5 s,
# inside `docker stop`'s default 10 s.
STOPSIGNAL SIGTERM
# /healthz answers 200 also while Redis is down ("degraded"), so Redis trouble does not get the
# container restarted. Change the port here if RINGCAST_LISTEN changes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["ringcast"]
