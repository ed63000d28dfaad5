#!/usr/bin/env bash
# One RabbitMQ stream to one WebSocket through `ringcast --preset squonk2`: runs
# `ringcast-loadtest ess` in each mode RUNS times against one fresh gateway and prints medians.
#
#   loadtest/ess.sh [RUNS]          (default 3)
#
# Steps: builds ringcast and ringcast-loadtest in release, starts ringcast with
#   --preset squonk2 --shards 1 --listen 127.0.0.1:0 --route ess.listen=127.0.0.1:0
#   --route ess_api.listen=127.0.0.1:0 --route ess_api.registry=<temp dir>/es.db
# and ESS_AMPQ_URL=$AMQP_URL, pinned to its own core with taskset; reads the ports from its
# `route ready name=… listen=…` and `listening addr=` log lines; then, for each mode,
#   ringcast-loadtest ess --mode M --body B --messages N --api http://… --ws ws://… \
#       --metrics http://… --server-pid PID --json
# pinned to the other core. Modes: replay-json, replay-text (N = $MESSAGES, publish first,
# read from ordinal 1), live-json (connect first, publish while reading), slow-json
# ($SLOW_MESSAGES read at $READ_RATE msgs/s). Each JSON line goes to $REPORTS_DIR/ess.jsonl,
# the gateway's log to $REPORTS_DIR/ess-gateway.log; it stops exactly what it started.
#
# Environment:
#   AMQP_URL                RabbitMQ (default amqp://guest:guest@127.0.0.1/ ; the gateway
#                           reads the same host over the stream port 5552)
#   MESSAGES                messages per replay and live run (default 100000)
#   SLOW_MESSAGES           messages in a slow run (default 20000)
#   READ_RATE               the slow reader's msgs/s (default 2000)
#   BODY_BYTES              body size (default 200)
#   MODES                   which modes (default "replay-json replay-text live-json slow-json")
#   RINGCAST_GATEWAY_CORES  CPU list for the gateway (default 0)
#   RINGCAST_LOAD_CORES     CPU list for the load test (default 1)
#   RINGCAST_SKIP_BUILD=1   use the binaries already built
#   REPORTS_DIR             where reports go (default reports/ at the repository root)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-3}
amqp=${AMQP_URL:-amqp://guest:guest@127.0.0.1/}
messages=${MESSAGES:-100000}
slow_messages=${SLOW_MESSAGES:-20000}
read_rate=${READ_RATE:-2000}
body_bytes=${BODY_BYTES:-200}
modes=${MODES:-replay-json replay-text live-json slow-json}
gw_cores=${RINGCAST_GATEWAY_CORES:-0}
load_cores=${RINGCAST_LOAD_CORES:-1}
reports=${REPORTS_DIR:-$root/reports}
bin=$root/target/release

die() {
    echo "ess.sh: $*" >&2
    exit 1
}

pids=()
tmp=$(mktemp -d)
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 60); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${RINGCAST_SKIP_BUILD:-}" != 1 ]; then
    (cd "$root" && cargo build --release -p ringcast -p ringcast-loadtest \
        --bin ringcast --bin ringcast-loadtest) || die "build failed"
fi

pin_gw=()
pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
    pin_gw=(taskset -c "$gw_cores")
    pin_load=(taskset -c "$load_cores")
else
    echo "ess.sh: warning: running unpinned (no taskset or one CPU)" >&2
fi

mkdir -p "$reports"
log=$reports/ess-gateway.log
out=$reports/ess.jsonl
: >"$out"
ESS_AMPQ_URL=$amqp "${pin_gw[@]}" "$bin/ringcast" --preset squonk2 --shards 1 \
    --listen 127.0.0.1:0 --route ess.listen=127.0.0.1:0 --route ess_api.listen=127.0.0.1:0 \
    --route "ess_api.registry=$tmp/es.db" 2>"$log" &
gw=$!
pids+=("$gw")

route() { sed -n "s/.*route ready name=$1 .*listen=\([0-9.]*:[0-9]*\).*/\1/p" "$log" | head -1; }
for _ in $(seq 100); do
    kill -0 "$gw" 2>/dev/null || die "ringcast exited: $(tail -5 "$log")"
    [ -n "$(route ess)" ] && [ -n "$(route ess_api)" ] && grep -q 'listening addr=' "$log" && break
    sleep 0.1
done
ess=$(route ess)
api=$(route ess_api)
main=$(sed -n 's/.*listening addr=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -1)
[ -n "$ess" ] && [ -n "$api" ] && [ -n "$main" ] || die "no route ready lines in $log"
echo "ess.sh: ringcast pid $gw on CPU $gw_cores: ess $ess, ess_api $api, metrics $main;" \
    "load test on CPU $load_cores; loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# RabbitMQ's CPU too, when it runs here (read only; never signalled).
broker=()
beam=$(pgrep -o -x beam.smp || true)
[ -n "$beam" ] && broker=(--broker-pid "$beam")

for run in $(seq "$runs"); do
    for m in $modes; do
        mode=${m%-*}
        body=${m#*-}
        n=$messages
        [ "$mode" = slow ] && n=$slow_messages
        echo "ess.sh: run $run, $m, $n messages" >&2
        "${pin_load[@]}" "$bin/ringcast-loadtest" ess --amqp "$amqp" --api "http://$api" \
            --ws "ws://$ess" --metrics "http://$main" --server-pid "$gw" "${broker[@]}" \
            --mode "$mode" \
            --body "$body" --messages "$n" --body-bytes "$body_bytes" \
            --read-rate "$read_rate" --json | jq -c --arg m "$m" --argjson r "$run" \
            '{name: $m, run: $r} + .' >>"$out"
        kill -0 "$gw" 2>/dev/null || die "ringcast died during $m: $(tail -5 "$log")"
    done
done

echo
echo "Medians of $runs runs ($out; gateway on CPU $gw_cores, load test on CPU $load_cores):"
jq -s -r '
  def median: sort | if length == 0 then null
      elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r(n): if . == null then "-" else (. * n | round) / n | tostring end;
  group_by(.name)[] as $g
  | ($g | map(.msgs_per_s) | median) as $rate
  | ($g | map(.msgs_per_gateway_cpu_s) | median) as $eff
  | ($g | map(.msgs_per_gateway_sched_cpu_s) | median) as $seff
  | "\($g[0].name): \($g | length) runs, \($g | map(.frames) | min)/\($g[0].frames_expected) frames, "
    + "out of order \($g | map(.out_of_order) | add), closes \($g | map(select(.closed_early)) | length); "
    + "msgs/s \($rate | r(1)); gateway CPU \($g | map(.gateway_cpu_pct) | median | r(1)) % of a core; "
    + "msgs per gateway CPU-s \($eff | r(1)) (\($eff / 6400 | r(10))x the original 6.4k; "
    + "by schedstat \($seff | r(1)), \($seff / 6400 | r(10))x); "
    + "msgs per chunk \($g | map(.msgs_per_chunk) | median | r(10)); "
    + "broker CPU \($g | map(.broker_cpu_pct) | median | r(1)) %; "
    + "gateway RSS max \($g | map(.gateway_rss_max_kib) | median) KiB (before \($g | map(.gateway_rss_before_kib) | median)); "
    + "load test CPU \($g | map(.loadtest_cpu_pct) | median | r(1)) %; "
    + "threads (run 1): " + ($g[0].gateway_threads | map("\(.thread) \(.share_pct | r(1))%") | join(", "))
' "$out"
echo "warnings:"
jq -r '"  \(.name) run \(.run): " + (.warnings | join("; "))' "$out" | grep -v ': $' || echo "  none"
