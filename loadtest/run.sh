#!/usr/bin/env bash
# Runs one load-test scenario against a freshly started gateway and saves its JSON report.
#
#   loadtest/run.sh SCENARIO [--target ringcast|baseline] [ringcast-loadtest run flags...]
#
# SCENARIO is a name from loadtest/scenarios/ (fanout-latency) or a path to a .toml file.
# Steps: builds what it needs in release (ringcast and ringcast-loadtest; the baseline only
# when targeted), starts a private redis-server on a free port, starts the target on
# 127.0.0.1:0 against it (ringcast with --shards 1), pins the gateway to one core and the load
# test and Redis to another with taskset, runs
#   ringcast-loadtest run --scenario FILE --target ws://... --redis redis://... \
#       --server-pid PID --json [flags...]
# prints a summary, writes the JSON line to reports/SCENARIO-TARGET.json (and the gateway's
# log to reports/SCENARIO-TARGET.log), and stops exactly the processes it started.
#
# The load test publishes as the scenario says (HTTP by default; add --publish redis to go
# through Redis). Extra flags go to `ringcast-loadtest run` and beat the scenario file, e.g.
# --duration 3 or --client-threads 2.
#
# Environment:
#   RINGCAST_GATEWAY_CORES  CPU list for the gateway (default 0)
#   RINGCAST_LOAD_CORES     CPU list for the load test and Redis (default 1)
#   RINGCAST_SHARDS         ringcast's --shards (default 1)
#   RINGCAST_SKIP_BUILD=1   use the binaries already built
#   REDIS_SERVER            the redis-server binary (default redis-server)
#   BASELINE_FLAGS          more flags for the baseline gateway, e.g. --read-buffer 0 (the
#                           untuned 128 KiB read buffer; the default is 4 KiB)
#   REPORTS_DIR             where reports go (default reports/ at the repository root)
# Pinning is skipped, with a warning, when taskset is missing or the machine has one core.
set -euo pipefail

usage() {
    sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "run.sh: $*" >&2
    exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in
    -h | --help) usage; exit 0 ;;
esac
scenario_arg=$1
shift

target=ringcast
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --target)
            [ $# -ge 2 ] || die "--target needs ringcast or baseline"
            target=$2
            shift 2
            ;;
        --target=*)
            target=${1#--target=}
            shift
            ;;
        --json) shift ;; # always on
        --server-pid | --server-pid=* | --redis | --redis=* | --scenario | --scenario=*)
            die "$1 is set by run.sh"
            ;;
        *)
            extra+=("$1")
            shift
            ;;
    esac
done
case "$target" in
    ringcast | baseline) ;;
    *) die "--target must be ringcast or baseline, not '$target'" ;;
esac

if [ -f "$scenario_arg" ]; then
    scenario_file=$(cd "$(dirname "$scenario_arg")" && pwd)/$(basename "$scenario_arg")
else
    scenario_file=$root/loadtest/scenarios/${scenario_arg%.toml}.toml
    [ -f "$scenario_file" ] || die "no scenario '$scenario_arg' (looked for $scenario_file)"
fi
scenario=$(basename "$scenario_file" .toml)

cd "$root"
reports=${REPORTS_DIR:-$root/reports}
mkdir -p "$reports"
redis_server=${REDIS_SERVER:-redis-server}
command -v "$redis_server" >/dev/null || die "$redis_server not found (apt-get install redis-server)"
command -v python3 >/dev/null || die "python3 not found"

# --- build --------------------------------------------------------------------------------

target_dir=${CARGO_TARGET_DIR:-$root/target}
loadtest_bin=$target_dir/release/ringcast-loadtest
if [ "$target" = ringcast ]; then
    gateway_bin=$target_dir/release/ringcast
else
    gateway_bin=${CARGO_TARGET_DIR:-$root/loadtest/baseline/target}/release/ringcast-baseline
fi
if [ "${RINGCAST_SKIP_BUILD:-}" != 1 ]; then
    echo "run.sh: building (release)" >&2
    cargo build --release -p ringcast -p ringcast-loadtest --bin ringcast --bin ringcast-loadtest
    if [ "$target" = baseline ]; then
        cargo build --release --manifest-path loadtest/baseline/Cargo.toml
    fi
fi
[ -x "$loadtest_bin" ] || die "$loadtest_bin is missing (build it, or unset RINGCAST_SKIP_BUILD)"
[ -x "$gateway_bin" ] || die "$gateway_bin is missing (build it, or unset RINGCAST_SKIP_BUILD)"

# --- processes we start, and their cleanup ------------------------------------------------

tmp=$(mktemp -d)
pids=()

cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    # The gateway shuts down gracefully (ringcast: at most --shutdown-timeout, 4 s, + 0.5 s).
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
    echo "run.sh: warning: taskset not found; the gateway and the load test are not pinned" >&2
elif [ -z "${RINGCAST_GATEWAY_CORES:-}${RINGCAST_LOAD_CORES:-}" ] && [ "$ncpu" -lt 2 ]; then
    echo "run.sh: warning: $ncpu CPU; the gateway and the load test share it, not pinned" >&2
else
    pin_gateway=(taskset -c "$gateway_cores")
    pin_load=(taskset -c "$load_cores")
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- Redis --------------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts redis-server on a free port; sets redis_port. Retries if the port was taken meanwhile.
start_redis() {
    local attempt pid
    for attempt in 1 2 3 4 5; do
        redis_port=$(free_port)
        "${pin_load[@]}" "$redis_server" --port "$redis_port" --bind 127.0.0.1 \
            --save '' --appendonly no --notify-keyspace-events KA \
            >"$tmp/redis.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then
                return 0
            fi
            sleep 0.05
        done
        echo "run.sh: redis-server on port $redis_port did not start (try $attempt)" >&2
        tail -5 "$tmp/redis.log" >&2 || true
        kill "$pid" 2>/dev/null || true
    done
    die "could not start redis-server"
}

start_redis
redis_url="redis://127.0.0.1:$redis_port/0"

# --- the gateway --------------------------------------------------------------------------

gateway_log=$reports/$scenario-$target.log
if [ "$target" = ringcast ]; then
    "${pin_gateway[@]}" "$gateway_bin" --listen 127.0.0.1:0 --shards "${RINGCAST_SHARDS:-1}" \
        --redis "$redis_url" 2>"$gateway_log" &
else
    # shellcheck disable=SC2086 # BASELINE_FLAGS is a word list on purpose
    "${pin_gateway[@]}" "$gateway_bin" --listen 127.0.0.1:0 --redis "$redis_url" \
        ${BASELINE_FLAGS:-} 2>"$gateway_log" &
fi
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
    die "$target did not print 'listening addr=' (log: $gateway_log)"
fi
sleep 0.5 # the gateway's Redis connections come up in the background
kill -0 "$gateway_pid" 2>/dev/null || { tail -20 "$gateway_log" >&2; die "$target exited"; }
if [ ${#pin_gateway[@]} -gt 0 ]; then
    where="gateway on CPU $gateway_cores, load test and Redis on CPU $load_cores"
else
    where="not pinned"
fi
echo "run.sh: $target pid $gateway_pid on $addr, Redis on port $redis_port ($where)" >&2

# --- the load test ------------------------------------------------------------------------

out=$reports/$scenario-$target.json
cmd=("$loadtest_bin" run --scenario "$scenario_file" --target "ws://$addr" --redis "$redis_url"
    --server-pid "$gateway_pid" --json "${extra[@]}")
echo "run.sh: ${pin_load[*]:+${pin_load[*]} }${cmd[*]}" >&2
"${pin_load[@]}" "${cmd[@]}" >"$tmp/loadtest.out" &
lt_pid=$!
pids+=("$lt_pid")
lt_rc=0
wait "$lt_pid" || lt_rc=$?
# Reaped now: its pid may be reused, so cleanup must not signal it.
kept=()
for p in "${pids[@]}"; do [ "$p" = "$lt_pid" ] || kept+=("$p"); done
pids=("${kept[@]}")
[ "$lt_rc" = 0 ] || die "ringcast-loadtest failed (exit $lt_rc)"
json=$(grep '^{' "$tmp/loadtest.out" | tail -1 || true)
[ -n "$json" ] || die "ringcast-loadtest printed no JSON line"
printf '%s\n' "$json" >"$out"

# --- summary ------------------------------------------------------------------------------

TARGET_NAME=$target python3 - "$out" <<'EOF'
import json, os, sys

r = json.loads(open(sys.argv[1]).read())
def f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)
def line(label, text):
    print(f"  {label:<20} {text}")

print(f"{r.get('scenario') or 'run'} against {os.environ['TARGET_NAME']} ({r['mode']}"
      + (f", {r['publish']} publisher)" if r.get("publish") else ")"))
line("clients", f"{r['connected']} of {r['clients']} connected on {r['channels']} channel(s), "
     f"{r['connect_failed']} failed, {f(r['connect_rate_per_s'])} conn/s")
if r["mode"] == "publish":
    line("published", f"{f(r['published'])} in {f(r['window_s'], '{:.2f}')} s "
         f"({f(r['publish_rate_per_s'])}/s), {f(r['publish_errors'])} errors")
    line("delivered", f"{f(r['delivered'])} of {f(r['expected'])}, lost {f(r['lost'])} "
         f"({f(r['loss_pct'], '{:.3f}')} %), {f(r['delivered_per_s'])} msgs/s")
    line("latency (µs)", f"p50 {f(r['latency_p50_us'])}  p90 {f(r['latency_p90_us'])}  "
         f"p99 {f(r['latency_p99_us'])}  p99.9 {f(r['latency_p999_us'])}  "
         f"max {f(r['latency_max_us'])}  (n={r['latency_count']})")
    line("stream checks", f"{r['seq_gaps']} seq gaps, {r['out_of_order']} out of order, "
         f"{r['dropped_clients']} clients dropped")
    if r.get("slow_clients"):
        line("slow clients", f"{r['slow_clients']}: {r['slow_closed']} closed by the gateway "
             f"({r['slow_closed_4000']} saw 4000); gateway slow-consumer closes (4000): "
             f"{f(r['gateway_slow_consumer_closes'])}")
line("gateway", f"{f(r['gateway_cpu_s'], '{:.2f}')} CPU-s ({f(r['gateway_cpu_pct'], '{:.1f}')} % "
     f"of a core), RSS {f(r['gateway_rss_before_kib'])} -> {f(r['gateway_rss_after_kib'])} KiB")
if r.get("delivered_per_gateway_cpu_s") is not None:
    line("per gateway CPU-s", f"{f(r['delivered_per_gateway_cpu_s'])} delivered msgs")
if r.get("rss_per_idle_conn_bytes") is not None:
    line("RSS per idle conn", f"{f(r['rss_per_idle_conn_bytes'])} bytes")
line("load test", f"{r['loadtest_cpu_s']:.2f} CPU-s ({r['loadtest_cpu_pct']:.1f} % of a core, "
     f"busiest thread {r['loadtest_max_thread_cpu_pct']:.1f} %)")
for w in r["warnings"]:
    print(f"  WARNING: {w}")
EOF
echo "run.sh: wrote $out" >&2
