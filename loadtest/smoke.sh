#!/usr/bin/env bash
# End-to-end smoke run of ringcast-loadtest: starts a fresh gateway (one shard, embedded
# broker), runs a small idle scenario and a small HTTP-published one, then, when redis-server is
# installed, a private Redis and a Redis-backed gateway for the same scenario published through
# Redis and through HTTP. Kills everything it started.
#
#   cargo build --release --bin ringcast && cargo build --release -p ringcast-loadtest
#   loadtest/smoke.sh [BIN_DIR]          # BIN_DIR defaults to target/release
#
# Environment: CLIENTS (200), RATE (1000), DURATION (5), GATEWAY_CPUS / LOADTEST_CPUS (CPU
# lists such as 2,3: pin the gateway with taskset and the load test with --pin-cores),
# CLIENT_THREADS (1), REDIS_SERVER (redis-server), JSON=1 (JSON lines, not summaries).
set -euo pipefail

bin=${1:-target/release}
clients=${CLIENTS:-200}
rate=${RATE:-1000}
duration=${DURATION:-5}
tmp=$(mktemp -d)
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

redis_server=${REDIS_SERVER:-redis-server}
pin_gateway=()
[ -n "${GATEWAY_CPUS:-}" ] && pin_gateway=(taskset -c "$GATEWAY_CPUS")
lt_extra=(--client-threads "${CLIENT_THREADS:-1}")
[ -n "${LOADTEST_CPUS:-}" ] && lt_extra+=(--pin-cores "$LOADTEST_CPUS")
[ -n "${JSON:-}" ] && lt_extra+=(--json)

# start_gateway LOG [FLAGS...]: sets gw_pid and port.
start_gateway() {
    local log=$1
    shift
    "${pin_gateway[@]}" "$bin/ringcast" --listen 127.0.0.1:0 --shards 1 "$@" 2>"$log" &
    gw_pid=$!
    pids+=("$gw_pid")
    port=
    for _ in $(seq 200); do
        port=$(sed -n 's/.*listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || { cat "$log" >&2; echo "smoke: the gateway did not start" >&2; exit 1; }
}

loadtest() {
    echo "== ringcast-loadtest run $*" >&2
    "$bin/ringcast-loadtest" run --server-pid "$gw_pid" "${lt_extra[@]}" "$@"
}

start_gateway "$tmp/gw.log"
# The idle run first: RSS per idle connection needs a gateway that has served no one yet.
loadtest --target "ws://127.0.0.1:$port" --clients 2000 --channels 20 --idle --duration 2
loadtest --target "ws://127.0.0.1:$port" --clients "$clients" --rate "$rate" \
    --duration "$duration" --publish http
kill "$gw_pid"

if command -v "$redis_server" >/dev/null; then
    rport=$(( 20000 + RANDOM % 20000 ))
    "$redis_server" --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
        >"$tmp/redis.log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break
        sleep 0.05
    done
    start_gateway "$tmp/gw-redis.log" --redis "redis://127.0.0.1:$rport/0"
    sleep 0.5 # the gateway's Redis connections come up in the background
    loadtest --target "ws://127.0.0.1:$port" --clients "$clients" --rate "$rate" \
        --duration "$duration" --publish redis --redis "redis://127.0.0.1:$rport/0"
    loadtest --target "ws://127.0.0.1:$port" --clients "$clients" --rate "$rate" \
        --duration "$duration" --publish http
else
    echo "smoke: $redis_server not installed, skipping the Redis runs" >&2
fi
