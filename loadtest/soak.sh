#!/usr/bin/env bash
# The soak (issue 14): many connections held for a long time with churn and publishes, the
# gateway's RSS and open descriptors sampled all along; exits non-zero when a target is missed.
#
#   loadtest/soak.sh [ringcast-loadtest run flags...]
#
# Steps: builds ringcast and ringcast-loadtest in release (unless RINGCAST_SKIP_BUILD=1),
# starts a private redis-server on a free port and a fresh gateway (--shards 1) on 127.0.0.1:0
# against it, pinned to one core with the load test and Redis on the other, and runs
# loadtest/scenarios/soak.toml: CLIENTS clients on CHANNELS channels, then DURATION seconds of
# publishing once they are connected (the first WARMUP of them the warm-up), RATE events/s
# published through Redis, CHURN_PCT
# % of the clients reconnecting per minute, the gateway sampled every SAMPLE_EVERY seconds.
# Writes reports/soak.json (the run's JSON line), reports/soak.csv (the samples), the gateway's
# log reports/soak.log and the chart PLOT; prints the figures and checks the targets:
#   - RSS drift after the warm-up below MAX_DRIFT_PCT %: (last sample with the clients
#     connected - first sample after the warm-up) / the latter;
#   - the gateway's open descriptors after the clients left back to their count before the
#     first connect;
#   - no event lost, skipped or reordered for a client that stayed connected the whole run, no
#     connect or reconnect failure, no client dropped by the gateway.
# Extra flags go to `ringcast-loadtest run` and beat the scenario and the variables.
#
# Environment (defaults: the 10-minute soak of docs/BENCHMARKS.md):
#   DURATION (600)  WARMUP (120)  CLIENTS (19000)  CHANNELS (100)  RATE (200)  CHURN_PCT (5)
#   SAMPLE_EVERY (10)  MAX_DRIFT_PCT (1)  CLIENT_THREADS (1)
#   PLOT                    the SVG to draw (default REPORTS_DIR/soak.svg; empty: none)
#   RINGCAST_GATEWAY_CORES  CPU list for the gateway (default 0)
#   RINGCAST_LOAD_CORES     CPU list for the load test and Redis (default 1)
#   RINGCAST_SKIP_BUILD=1   use the binaries already built (CARGO_TARGET_DIR or target/)
#   REDIS_SERVER            the redis-server binary (default redis-server)
#   REPORTS_DIR             where reports go (default reports/ at the repository root)
# Each side needs CLIENTS + about 100 descriptors (`ulimit -Hn`; the script raises the soft
# limit to it). Pinning is skipped, with a warning, without taskset or with one CPU.
set -euo pipefail

usage() {
    sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "soak.sh: $*" >&2
    exit 1
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac
for arg in "$@"; do
    case "$arg" in
        --server-pid* | --redis* | --scenario* | --samples-csv* | --target*)
            die "$arg is set by soak.sh"
            ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

duration=${DURATION:-600}
warmup=${WARMUP:-120}
clients=${CLIENTS:-19000}
channels=${CHANNELS:-100}
rate=${RATE:-200}
churn=${CHURN_PCT:-5}
sample_every=${SAMPLE_EVERY:-10}
max_drift=${MAX_DRIFT_PCT:-1}
client_threads=${CLIENT_THREADS:-1}
window=$(python3 -c "import sys; w = float(sys.argv[1]) - float(sys.argv[2]); print(w if w > 0 else '')" \
    "$duration" "$warmup")
[ -n "$window" ] || die "DURATION ($duration) must be longer than WARMUP ($warmup)"

reports=${REPORTS_DIR:-$root/reports}
mkdir -p "$reports"
plot=${PLOT-$reports/soak.svg}
redis_server=${REDIS_SERVER:-redis-server}
command -v "$redis_server" >/dev/null || die "$redis_server not found (apt-get install redis-server)"
command -v python3 >/dev/null || die "python3 not found"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ $((clients + 100)) -gt "$nofile" ]; then
    die "CLIENTS=$clients needs about $((clients + 100)) descriptors per process; the limit is $nofile"
fi

# --- build --------------------------------------------------------------------------------

target_dir=${CARGO_TARGET_DIR:-$root/target}
loadtest_bin=$target_dir/release/ringcast-loadtest
gateway_bin=$target_dir/release/ringcast
if [ "${RINGCAST_SKIP_BUILD:-}" != 1 ]; then
    echo "soak.sh: building (release)" >&2
    cargo build --release -p ringcast -p ringcast-loadtest --bin ringcast --bin ringcast-loadtest
fi
[ -x "$loadtest_bin" ] || die "$loadtest_bin is missing (build it, or unset RINGCAST_SKIP_BUILD)"
[ -x "$gateway_bin" ] || die "$gateway_bin is missing (build it, or unset RINGCAST_SKIP_BUILD)"

# --- processes we start, and their cleanup ------------------------------------------------

tmp=$(mktemp -d)
pids=()

cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 60); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- core pinning -------------------------------------------------------------------------

ncpu=$(nproc 2>/dev/null || echo 1)
gateway_cores=${RINGCAST_GATEWAY_CORES:-0}
load_cores=${RINGCAST_LOAD_CORES:-1}
pin_gateway=()
pin_load=()
if ! command -v taskset >/dev/null; then
    echo "soak.sh: warning: taskset not found; the gateway and the load test are not pinned" >&2
elif [ -z "${RINGCAST_GATEWAY_CORES:-}${RINGCAST_LOAD_CORES:-}" ] && [ "$ncpu" -lt 2 ]; then
    echo "soak.sh: warning: $ncpu CPU; the gateway and the load test share it, not pinned" >&2
else
    pin_gateway=(taskset -c "$gateway_cores")
    pin_load=(taskset -c "$load_cores")
fi

# --- Redis --------------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_redis() {
    local attempt pid
    for attempt in 1 2 3 4 5; do
        redis_port=$(free_port)
        "${pin_load[@]}" "$redis_server" --port "$redis_port" --bind 127.0.0.1 \
            --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then
                return 0
            fi
            sleep 0.05
        done
        echo "soak.sh: redis-server on port $redis_port did not start (try $attempt)" >&2
        tail -5 "$tmp/redis.log" >&2 || true
        kill "$pid" 2>/dev/null || true
    done
    die "could not start redis-server"
}

start_redis
redis_url="redis://127.0.0.1:$redis_port/0"

# --- the gateway --------------------------------------------------------------------------

gateway_log=$reports/soak.log
"${pin_gateway[@]}" "$gateway_bin" --listen 127.0.0.1:0 --shards "${RINGCAST_SHARDS:-1}" \
    --redis "$redis_url" 2>"$gateway_log" &
gateway_pid=$!
pids+=("$gateway_pid")

addr=
for _ in $(seq 200); do
    addr=$(sed -n 's/.*listening addr=\([0-9.]*:[0-9]*\).*/\1/p' "$gateway_log" | head -1)
    [ -n "$addr" ] && break
    kill -0 "$gateway_pid" 2>/dev/null || break
    sleep 0.05
done
if [ -z "$addr" ]; then
    tail -20 "$gateway_log" >&2 || true
    die "the gateway did not print 'listening addr=' (log: $gateway_log)"
fi
# The gateway's Redis subscription comes up in the background; the warm-up covers the rest.
ready=0
for _ in $(seq 100); do
    if grep -q 'ringcast_redis_up 1' < <(curl -s "http://$addr/metrics" 2>/dev/null); then
        ready=1
        break
    fi
    sleep 0.1
done
[ "$ready" = 1 ] || echo "soak.sh: warning: /metrics did not show ringcast_redis_up 1 within 10 s" >&2
kill -0 "$gateway_pid" 2>/dev/null || { tail -20 "$gateway_log" >&2; die "the gateway exited"; }
echo "soak.sh: gateway pid $gateway_pid on $addr, Redis on port $redis_port" >&2

# --- the load test ------------------------------------------------------------------------

out=$reports/soak.json
csv=$reports/soak.csv
cmd=("$loadtest_bin" run --scenario loadtest/scenarios/soak.toml --target "ws://$addr"
    --redis "$redis_url" --server-pid "$gateway_pid" --json
    --clients "$clients" --channels "$channels" --rate "$rate" --warmup "$warmup"
    --duration "$window" --churn-pct-per-min "$churn" --sample-every "$sample_every"
    --samples-csv "$csv" --client-threads "$client_threads" "$@")
echo "soak.sh: $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg): ${pin_load[*]:+${pin_load[*]} }${cmd[*]}" >&2
"${pin_load[@]}" "${cmd[@]}" >"$tmp/loadtest.out" &
lt_pid=$!
pids+=("$lt_pid")
lt_rc=0
wait "$lt_pid" || lt_rc=$?
kept=()
for p in "${pids[@]}"; do [ "$p" = "$lt_pid" ] || kept+=("$p"); done
pids=("${kept[@]}")
[ "$lt_rc" = 0 ] || die "ringcast-loadtest failed (exit $lt_rc)"
json=$(grep '^{' "$tmp/loadtest.out" | tail -1 || true)
[ -n "$json" ] || die "ringcast-loadtest printed no JSON line"
printf '%s\n' "$json" >"$out"
echo "soak.sh: $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg): wrote $out and $csv" >&2

if [ -n "$plot" ]; then
    "$loadtest_bin" plot-soak --csv "$csv" --out "$plot" \
        --title "ringcast soak: $clients clients, ${duration} s, churn $churn %/min" >&2 ||
        echo "soak.sh: warning: plot-soak failed" >&2
fi

# --- figures and targets ------------------------------------------------------------------

MAX_DRIFT=$max_drift python3 - "$out" <<'EOF'
import json, os, sys

r = json.loads(open(sys.argv[1]).read())
max_drift = float(os.environ["MAX_DRIFT"])
def f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)
def line(label, text):
    print(f"  {label:<22} {text}")

rows = r.get("samples") or []
print(f"soak: {r['clients']} clients on {r['channels']} channels, {r['rate']} msg/s via "
      f"{r['publish']}, churn {r['churn_pct_per_min']} %/min, warm-up {r['warmup_s']:.0f} s "
      f"+ window {r['duration_s']:.0f} s")
line("connect", f"{r['connected']} ok, {r['connect_failed']} failed, "
     f"{f(r['connect_rate_per_s'])} conn/s")
line("churn", f"{f(r['churn_kicks'])} kicks, {r['reconnects']} reconnects, "
     f"{r['reconnect_failed']} failed; {r['churned_clients']} churned, {r['stayed_clients']} stayed")
line("stayers", f"{f(r['delivered'])} of {f(r['expected'])} delivered, lost {f(r['lost'])}, "
     f"{f(r['stayers_with_loss'])} with loss, {r['stayed_seq_gaps']} seq gaps, "
     f"{r['out_of_order']} out of order, {r['dropped_clients']} dropped")
line("latency (µs)", f"p50 {f(r['latency_p50_us'])}  p99 {f(r['latency_p99_us'])}  "
     f"max {f(r['latency_max_us'])}")
line("RSS (KiB)", f"{len(rows)} samples; before {f(rows[0][2] if rows else None)}, "
     f"after warm-up {f(r['rss_after_warmup_kib'])}, end {f(r['rss_end_kib'])}, "
     f"drift {f(r['rss_drift_pct'], '{:+.2f}')} %, max {f(r['rss_max_kib'])}, "
     f"after the clients left {f(r['rss_after_clients_left_kib'])}")
line("fds", f"before {f(r['fds_before'])}, max {f(r['fds_max'])}, "
     f"after the clients left {f(r['fds_after_clients_left'])}")
line("gateway", f"{f(r['gateway_cpu_s'], '{:.1f}')} CPU-s ({f(r['gateway_cpu_pct'], '{:.1f}')} % "
     f"of a core), {f(r['gateway_queue_drops'])} queue drops, "
     f"{f(r['gateway_slow_consumer_closes'])} slow-consumer closes")
for w in r["warnings"]:
    print(f"  WARNING: {w}")

missed = []
if r["connect_failed"] or r["reconnect_failed"]:
    missed.append(f"{r['connect_failed']} connects and {r['reconnect_failed']} reconnects failed")
if r["dropped_clients"]:
    missed.append(f"{r['dropped_clients']} readers were dropped by the gateway")
if (r["lost"] or 0) > 0 or (r["stayers_with_loss"] or 0) > 0:
    missed.append(f"stayers lost {r['lost']} events ({r['stayers_with_loss']} clients)")
if r["stayed_seq_gaps"] or r["out_of_order"]:
    missed.append(f"{r['stayed_seq_gaps']} seq gaps and {r['out_of_order']} reorderings")
if r["rss_drift_pct"] is None:
    missed.append("no RSS drift: no sample after the warm-up (raise DURATION or lower SAMPLE_EVERY)")
elif r["rss_drift_pct"] >= max_drift:
    missed.append(f"RSS drift {r['rss_drift_pct']:+.2f} % is not below {max_drift} %")
if r["fds_after_clients_left"] is None or r["fds_before"] is None \
        or r["fds_after_clients_left"] > r["fds_before"]:
    missed.append(f"open descriptors {r['fds_after_clients_left']} after the clients left, "
                  f"{r['fds_before']} before")
for m in missed:
    print(f"  MISSED: {m}")
print("soak: " + ("targets met" if not missed else f"{len(missed)} target(s) missed"))
sys.exit(1 if missed else 0)
EOF
