#!/usr/bin/env bash
# Issue 12: one SuperDARN radar record broadcast to N Socket.IO clients, ringcast
# (`--preset superdarn`) against the original's stack (Flask-SocketIO under
# `gunicorn -k eventlet -w 1`, loadtest/socketio_peer/app.py), measured in the same run.
#
#   loadtest/socketio.sh [RUNS]          (default 3)
#
# For each run, for each N in $CLIENTS (default "1000 10000"), for each target in $TARGETS
# (default "ringcast python"), in that order so that each ratio comes from neighbouring
# measurements: start a fresh server pinned to CPU $RINGCAST_GATEWAY_CORES (default 0),
#   ringcast: target/release/ringcast --preset superdarn --shards $RINGCAST_SHARDS
#             --listen 127.0.0.1:0 --route superdarn.listen=127.0.0.1:0
#             --route 'superdarn.origins=*' --route superdarn.echoes_db=<temp>/echoes.sqlite
#   python:   $PYTHON_VENV/bin/gunicorn -k eventlet -w 1 --worker-connections 12000
#             --bind 127.0.0.1:<free port> --chdir loadtest/socketio_peer app:app
# then run, pinned to CPU $RINGCAST_LOAD_CORES (default 1),
#   target/release/ringcast-loadtest socketio --target ws://… --publish http://…/api/publish
#       --metrics http://… --server-pid PID --label T --clients N --events $EVENTS
#       --rate $RATE --batch $BATCH --drain-s $DRAIN_S --json
# and stop the server by its pid (SIGTERM, SIGKILL after 6 s). The server's pid is ringcast's,
# or the gunicorn worker's (the process that serves the sockets; the master only supervises).
# Each JSON line (with `target`, `n` and `run`) goes to $REPORTS_DIR/socketio.jsonl, the
# servers' logs to $REPORTS_DIR/socketio-TARGET-N-runRUN.log; then the medians and the ratios are printed.
#
# Environment:
#   CLIENTS                 client counts (default "1000 10000")
#   TARGETS                 "ringcast python" (default) or one of them
#   EVENTS, RATE            events per run (default 100) and per second (default 10)
#   BATCH                   clients connecting at once (default 500)
#   DRAIN_S                 wait after the last send for the last deliveries (default 120)
#   RINGCAST_SHARDS         ringcast's --shards (default 1, like the Python peer's one worker)
#   RINGCAST_GATEWAY_CORES  CPU list for the server (default 0)
#   RINGCAST_LOAD_CORES     CPU list for the load test (default 1)
#   PYTHON_VENV             virtualenv with eventlet, gunicorn 23 and Flask-SocketIO
#                           (default target/pyvenv; created with --system-site-packages and
#                           `pip install eventlet 'gunicorn==23.0.0' flask-socketio` if missing:
#                           gunicorn 24+ has no eventlet worker)
#   RINGCAST_SKIP_BUILD=1   use the binaries already built
#   REPORTS_DIR             where reports go (default reports/ at the repository root)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-3}
clients=${CLIENTS:-1000 10000}
targets=${TARGETS:-ringcast python}
events=${EVENTS:-100}
rate=${RATE:-10}
batch=${BATCH:-500}
drain_s=${DRAIN_S:-120}
shards=${RINGCAST_SHARDS:-1}
gw_cores=${RINGCAST_GATEWAY_CORES:-0}
load_cores=${RINGCAST_LOAD_CORES:-1}
venv=${PYTHON_VENV:-$root/target/pyvenv}
reports=${REPORTS_DIR:-$root/reports}
bin=$root/target/release

die() {
    echo "socketio.sh: $*" >&2
    exit 1
}

pids=()
tmp=$(mktemp -d)
stop_server() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 60); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${RINGCAST_SKIP_BUILD:-}" != 1 ]; then
    (cd "$root" && cargo build --release -p ringcast -p ringcast-loadtest \
        --bin ringcast --bin ringcast-loadtest) || die "build failed"
fi
if [[ " $targets " == *" python "* ]] && [ ! -x "$venv/bin/gunicorn" ]; then
    python3 -m venv --system-site-packages "$venv" || die "cannot create $venv"
    "$venv/bin/pip" install -q eventlet 'gunicorn==23.0.0' flask-socketio ||
        die "cannot install eventlet, gunicorn and flask-socketio into $venv"
fi

pin_gw=()
pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
    pin_gw=(taskset -c "$gw_cores")
    pin_load=(taskset -c "$load_cores")
else
    echo "socketio.sh: warning: running unpinned (no taskset or one CPU)" >&2
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts TARGET logging to LOG; sets ws, publish, metrics and server_pid.
start_server() {
    local target=$1 log=$2
    if [ "$target" = ringcast ]; then
        "${pin_gw[@]}" "$bin/ringcast" --preset superdarn --shards "$shards" \
            --listen 127.0.0.1:0 --route superdarn.listen=127.0.0.1:0 \
            --route 'superdarn.origins=*' --route "superdarn.echoes_db=$tmp/echoes.sqlite" \
            2>"$log" &
        server_pid=$!
        pids+=("$server_pid")
        local sio="" main=""
        for _ in $(seq 100); do
            kill -0 "$server_pid" 2>/dev/null || die "ringcast exited: $(tail -5 "$log")"
            sio=$(sed -n 's/.*route ready name=superdarn .*listen=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -1)
            main=$(sed -n 's/.*listening addr=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -1)
            [ -n "$sio" ] && [ -n "$main" ] && break
            sleep 0.1
        done
        [ -n "$sio" ] && [ -n "$main" ] || die "no route ready line in $log"
        ws=ws://$sio
        publish=http://$main/api/publish
        metrics=http://$main
    else
        local port
        port=$(free_port)
        "${pin_gw[@]}" "$venv/bin/gunicorn" -k eventlet -w 1 --worker-connections 12000 \
            --bind "127.0.0.1:$port" --chdir "$root/loadtest/socketio_peer" app:app \
            >"$log" 2>&1 &
        local master=$!
        pids+=("$master")
        server_pid=""
        for _ in $(seq 150); do
            kill -0 "$master" 2>/dev/null || die "gunicorn exited: $(tail -5 "$log")"
            server_pid=$(pgrep -P "$master" | head -1 || true)
            [ -n "$server_pid" ] && curl -sf "http://127.0.0.1:$port/metrics" >/dev/null && break
            sleep 0.1
        done
        [ -n "$server_pid" ] || die "no gunicorn worker: $(tail -5 "$log")"
        pids+=("$server_pid")
        ws=ws://127.0.0.1:$port
        publish=http://127.0.0.1:$port/api/publish
        metrics=http://127.0.0.1:$port
    fi
}

mkdir -p "$reports"
out=$reports/socketio.jsonl
: >"$out"
echo "socketio.sh: ulimit -n $(ulimit -n) (hard $(ulimit -Hn)); server on CPU $gw_cores," \
    "load test on CPU $load_cores; $events events at $rate/s; loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for run in $(seq "$runs"); do
    for n in $clients; do
        for t in $targets; do
            log=$reports/socketio-$t-$n-run$run.log
            start_server "$t" "$log"
            echo "socketio.sh: run $run, $t, $n clients (pid $server_pid)," \
                "loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
            if ! "${pin_load[@]}" "$bin/ringcast-loadtest" socketio --target "$ws" \
                --publish "$publish" --metrics "$metrics" --server-pid "$server_pid" \
                --label "$t" --clients "$n" --events "$events" --rate "$rate" \
                --batch "$batch" --drain-s "$drain_s" --json >"$tmp/line.json"; then
                echo "socketio.sh: the load test failed for $t at $n clients" >&2
            fi
            if ! kill -0 "$server_pid" 2>/dev/null; then
                echo "socketio.sh: $t died during the run at $n clients: $(tail -3 "$log")" >&2
            fi
            if [ -s "$tmp/line.json" ]; then
                jq -c --arg t "$t" --argjson n "$n" --argjson r "$run" \
                    '{target: $t, n: $n, run: $r} + .' "$tmp/line.json" >>"$out"
            fi
            stop_server
        done
    done
done

echo
echo "Medians of $runs runs ($out; server on CPU $gw_cores, load test on CPU $load_cores):"
jq -s -r '
  def median: map(select(. != null)) | sort | if length == 0 then null
      elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r(n): if . == null then "-" else (. * n | round) / n | tostring end;
  def med(f): map(f) | median;
  (group_by([.n, .target])[] as $g
   | "\($g[0].target) \($g[0].n) clients: \($g | length) runs; delivered \($g | map(.delivered) | join("/")) of \($g[0].expected) "
     + "(missing \($g | map(.missing) | join("/")), out of order \($g | map(.out_of_order) | add), dropped clients \($g | map(.dropped_clients) | join("/"))); "
     + "latency p50 \($g | med(.latency_us.p50) / 1000 | r(10)) ms, p99 \($g | med(.latency_us.p99) / 1000 | r(10)) ms, max \($g | med(.latency_us.max) / 1000 | r(10)) ms; "
     + "server \($g | med(.server_us_per_delivery) | r(100)) us CPU per delivery, \($g | med(.deliveries_per_server_cpu_s) | r(1)) deliveries per CPU-s "
     + "(runs \($g | map(.deliveries_per_server_cpu_s | r(1)) | join(" / ")); schedstat \($g | med(.deliveries_per_server_sched_cpu_s) | r(1))), "
     + "\($g | med(.server_cpu_pct) | r(1)) % of a core, run-queue wait \($g | med(.server_runqueue_wait_s) | r(100)) s; "
     + "RSS \($g | med(.server_rss_after_kib)) KiB; connect \($g | med(.connect_s) | r(10)) s; "
     + "load test \($g | med(.loadtest_us_per_delivery) | r(100)) us per delivery, busiest thread \($g | med(.loadtest_max_thread_cpu_pct) | r(1)) %; "
     + "loadavg \($g | map(.loadavg) | join(" / "))"),
  "",
  "ringcast / python, medians:",
  (group_by(.n)[] as $g
   | ($g | map(select(.target == "ringcast"))) as $a
   | ($g | map(select(.target == "python"))) as $b
   | select(($a | length) > 0 and ($b | length) > 0)
   | "  \($g[0].n) clients: deliveries per server CPU-s \(($a | med(.deliveries_per_server_cpu_s)) / ($b | med(.deliveries_per_server_cpu_s)) | r(10))x; "
     + "p99 latency \(($a | med(.latency_us.p99)) / ($b | med(.latency_us.p99)) | r(1000))x; "
     + "p50 \(($a | med(.latency_us.p50)) / ($b | med(.latency_us.p50)) | r(1000))x")
' "$out"
echo "warnings:"
jq -r '"  \(.target) \(.n) run \(.run): " + (.warnings | join("; "))' "$out" | grep -v ': $' || echo "  none"
