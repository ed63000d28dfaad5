#!/usr/bin/env bash
# Runs one scenario against ringcast and against the baseline gateway, measures the kernel's
# floor for the same number of connections, and prints them side by side.
#
#   loadtest/compare.sh SCENARIO [ringcast-loadtest run flags...]
#
# 1. `ringcast-loadtest floor --connections N --json` with N = the scenario's clients (or the
#    --clients flag given here; 1000 if neither says; fewer, in whole channels, when two
#    descriptors per connection do not fit under the hard limit), its sender on the gateway's
#    core and its reader on the load test's core, rounds back to back.
# 1b. For a paced scenario (rate > 0), the floor again at the scenario's pace: one channel's
#    subscribers (clients / channels connections) written per round, a round every
#    1/rate seconds (--group, --interval-us), for about 5 s.
# 1c. For a paced one-channel scenario, ringcast's run below also runs the floor halfway
#    between its publishes (run --floor-cores), so the gateway and that floor share the host.
# 1d. For a paced scenario published through Redis (--publish redis), the relay: a cost-free
#    gateway fed by Redis at the same pace (`redis-hop --relay-connections`, on a private
#    redis-server), whose CPU per send and p50 include the wake-up, the read and Redis's hop
#    that the paced floor leaves out.
# 2. loadtest/run.sh SCENARIO --target ringcast [flags...]
# 3. loadtest/run.sh SCENARIO --target baseline [flags...]
# 4. A table: ringcast, baseline, ringcast/baseline, and ringcast against the floor:
#    p99 latency / floor last_completion_us at 1 frame per write (the soonest one core can
#    reach the last of N clients), the same against the paced floor (median and p99 over its
#    rounds), and delivered msgs per gateway CPU-s / (1 / floor cost_per_message_us at 64
#    frames per write, the most batched setting); for a paced scenario, gateway CPU µs per
#    frame against the paced floor's CPU per send and the relay's, and the p50 less theirs.
# The combined result goes to reports/compare-SCENARIO.json (one JSON line: scenario, floor,
# ringcast, baseline, ratios); the runs' own lines stay in reports/SCENARIO-TARGET.json.
#
# Environment: as run.sh (RINGCAST_GATEWAY_CORES, RINGCAST_LOAD_CORES, RINGCAST_SHARDS,
# RINGCAST_SKIP_BUILD, REDIS_SERVER, BASELINE_FLAGS, REPORTS_DIR); SKIP_FLOOR=1 leaves the floor
# out. The baseline runs tuned as its users run it (a 4 KiB read buffer); BASELINE_FLAGS=
# '--read-buffer 0' measures the untuned one (tungstenite's 128 KiB default).
set -euo pipefail

usage() {
    sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in
    -h | --help) usage; exit 0 ;;
esac
scenario_arg=$1
shift
for a in "$@"; do
    case "$a" in
        --target | --target=*) die "compare.sh runs both targets; drop $a" ;;
    esac
done

if [ -f "$scenario_arg" ]; then
    scenario_file=$scenario_arg
else
    scenario_file=$root/loadtest/scenarios/${scenario_arg%.toml}.toml
    [ -f "$scenario_file" ] || die "no scenario '$scenario_arg' (looked for $scenario_file)"
fi
scenario=$(basename "$scenario_file" .toml)
command -v python3 >/dev/null || die "python3 not found"

# A scenario setting: the --NAME flag given here, else the scenario file's NAME, else $2.
setting() {
    local name=$1 fallback=$2 value= i
    local args=("${run_args[@]}")
    for i in "${!args[@]}"; do
        case "${args[$i]}" in
            "--$name") value=${args[$((i + 1))]:-} ;;
            "--$name="*) value=${args[$i]#--"$name"=} ;;
        esac
    done
    if [ -z "$value" ]; then
        value=$(sed -n "s/^[[:space:]]*$name[[:space:]]*=[[:space:]]*\([0-9_]*\).*/\1/p" \
            "$scenario_file" | head -1 | tr -d _)
    fi
    echo "${value:-$fallback}"
}
run_args=("$@")
clients=$(setting clients 1000)
channels=$(setting channels 1)
rate=$(setting rate 0)
case "$clients$channels$rate" in
    *[!0-9]*) die "clients, channels and rate must be whole numbers" ;;
esac
[ "$channels" -ge 1 ] || channels=1
# The floor's connections: the scenario's clients, as many as two descriptors each fit under
# the hard limit, in whole channels (the paced floor writes one channel's subscribers a round).
group=$(( clients / channels ))
[ "$group" -ge 1 ] || group=1
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ]; then hard=$(( 2 * clients + 64 )); fi
floor_conns=$(( (hard - 64) / 2 ))
[ "$floor_conns" -le "$clients" ] || floor_conns=$clients
floor_conns=$(( floor_conns / group * group ))

cd "$root"
reports=${REPORTS_DIR:-$root/reports}
export REPORTS_DIR=$reports
mkdir -p "$reports"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "${RINGCAST_SKIP_BUILD:-}" != 1 ]; then
    echo "compare.sh: building (release)" >&2
    cargo build --release -p ringcast -p ringcast-loadtest --bin ringcast --bin ringcast-loadtest
    cargo build --release --manifest-path loadtest/baseline/Cargo.toml
fi
export RINGCAST_SKIP_BUILD=1

# Published through Redis (`--publish redis` here or `publish = "redis"` in the scenario)?
via_redis=0
prev=
for a in "$@"; do
    case "$prev=$a" in
        --publish=redis | *=--publish=redis) via_redis=1 ;;
    esac
    prev=$a
done
grep -Eq '^[[:space:]]*publish[[:space:]]*=[[:space:]]*"redis"' "$scenario_file" && via_redis=1
payload=$(setting payload_bytes 200)

# The relay (step 1d) on a private redis-server pinned with the load test, on a free port.
run_relay() {
    local bin=$1 interval_us=$2 port pid
    command -v "${REDIS_SERVER:-redis-server}" >/dev/null || die "redis-server not found"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    taskset -c "$reader_core" "${REDIS_SERVER:-redis-server}" --port "$port" --bind 127.0.0.1 \
        --save '' --appendonly no >"$tmp/relay-redis.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || die "redis-server for the relay did not start: $(tail -3 "$tmp/relay-redis.log")"
        sleep 0.05
    done
    echo "compare.sh: relay at the scenario's pace: $group of $floor_conns connections an event, an event every $interval_us µs, through redis-server on port $port" >&2
    if ! "$bin" redis-hop --redis "redis://127.0.0.1:$port" --rate "$rate" --seconds 5 \
        --payload-bytes "$payload" --relay-connections "$floor_conns" --relay-group "$group" \
        --subscriber-core "$sender_core" --publisher-core "$reader_core" \
        --reader-core "$reader_core" --json >"$tmp/relay.out"; then
        kill "$pid" 2>/dev/null
        die "the relay failed"
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
    grep '^{' "$tmp/relay.out" | tail -1 >"$relay_json"
    [ -s "$relay_json" ] || die "the relay printed no JSON line"
}

# The floor, pinned like the gateway: its sender on the gateway's first CPU, its reader on the
# load test's first CPU (it pins its own threads).
floor_json=$tmp/floor.json
paced_json=$tmp/paced.json
relay_json=$tmp/relay.json
echo null >"$paced_json"
echo null >"$relay_json"
if [ "${SKIP_FLOOR:-}" = 1 ]; then
    echo null >"$floor_json"
else
    first_cpu() { echo "${1%%[-,]*}"; }
    sender_core=$(first_cpu "${RINGCAST_GATEWAY_CORES:-0}")
    reader_core=$(first_cpu "${RINGCAST_LOAD_CORES:-1}")
    if [ "$(nproc 2>/dev/null || echo 1)" -lt 2 ] && [ -z "${RINGCAST_LOAD_CORES:-}" ]; then
        reader_core=$sender_core
    fi
    loadtest_bin=${CARGO_TARGET_DIR:-$root/target}/release/ringcast-loadtest
    [ "$floor_conns" -ge 1 ] || die "no room for floor connections under the descriptor limit $hard"
    if [ "$floor_conns" -lt "$clients" ]; then
        echo "compare.sh: the floor gets $floor_conns connections, not $clients: two descriptors each must fit under the hard limit of $hard" >&2
    fi
    echo "compare.sh: floor over $floor_conns connections, back to back (sender CPU $sender_core, reader CPU $reader_core)" >&2
    "$loadtest_bin" floor --connections "$floor_conns" --sender-core "$sender_core" \
        --reader-core "$reader_core" --json >"$tmp/floor.out"
    grep '^{' "$tmp/floor.out" | tail -1 >"$floor_json"
    [ -s "$floor_json" ] || die "floor printed no JSON line"
    if [ "$rate" -gt 0 ]; then
        # The same sends at the scenario's pace: one channel's subscribers per round, a round
        # per published message. A send after an idle gap costs more than back to back, so
        # this is the floor a paced scenario is held to. About 5 s of rounds, 200 at least.
        interval_us=$(( 1000000 / rate ))
        rounds=$(( rate * 5 ))
        [ "$rounds" -ge 200 ] || rounds=200
        [ "$rounds" -le 20000 ] || rounds=20000
        echo "compare.sh: floor at the scenario's pace: $group of $floor_conns connections a round, a round every $interval_us µs, $rounds rounds" >&2
        "$loadtest_bin" floor --connections "$floor_conns" --group "$group" \
            --interval-us "$interval_us" --frames-per-write 1 --rounds "$rounds" \
            --sender-core "$sender_core" --reader-core "$reader_core" --json >"$tmp/paced.out"
        grep '^{' "$tmp/paced.out" | tail -1 >"$paced_json"
        [ -s "$paced_json" ] || die "paced floor printed no JSON line"
        if [ "$via_redis" = 1 ]; then
            run_relay "$loadtest_bin" "$interval_us"
        fi
    fi
fi

# A paced one-channel scenario also runs the floor inside ringcast's run, halfway between
# publishes (run --floor-cores): the gateway and the floor then see the same host, interleaved
# in time. Not in the baseline's run: its fan-outs outlast half an interval, so the floor's
# rounds would overlap them and slow it down.
interleave=()
if [ "${SKIP_FLOOR:-}" != 1 ] && [ "$rate" -gt 0 ] && [ "$channels" -eq 1 ]; then
    interleave=(--floor-cores "$sender_core,$reader_core")
fi
echo "compare.sh: == $scenario against ringcast" >&2
"$root/loadtest/run.sh" "$scenario_file" --target ringcast "${interleave[@]}" "$@"
echo "compare.sh: == $scenario against baseline" >&2
"$root/loadtest/run.sh" "$scenario_file" --target baseline "$@"

python3 - "$scenario" "$floor_json" "$paced_json" "$reports/$scenario-ringcast.json" \
    "$reports/$scenario-baseline.json" "$reports/compare-$scenario.json" "$relay_json" <<'EOF'
import json, sys

scenario, floor_path, paced_path, rc_path, bl_path, out_path, relay_path = sys.argv[1:]
def last_line(path):
    lines = [l for l in open(path).read().splitlines() if l.strip()]
    return json.loads(lines[-1])
floor = last_line(floor_path)
paced = last_line(paced_path)
paced_one = paced["results"][0] if paced and paced.get("results") else None
paced_last_us = paced_one["last_completion_us"] if paced_one else None
paced_last_p99_us = paced_one.get("last_completion_p99_us") if paced_one else None
rc, bl = last_line(rc_path), last_line(bl_path)
relay_run = last_line(relay_path)
relay = relay_run.get("relay") if relay_run else None
paced_send_us = paced_one["cost_per_send_us"] if paced_one else None
paced_p50_us = paced_last_us
relay_send_us = relay["cpu_per_send_us"] if relay else None
relay_p50_us = relay["latency_p50_us"] if relay else None

def per_frame_us(r):
    cpu, n = r.get("gateway_cpu_s"), r.get("delivered")
    return None if cpu is None or not n else cpu * 1e6 / n
def minus(a, b):
    return None if a is None or b is None else a - b

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

floor_at = {}
if floor:
    floor_at = {r["frames_per_write"]: r for r in floor["results"]}
one = floor_at.get(1)
batched = floor_at.get(64) or (floor_at[max(floor_at)] if floor_at else None)
floor_last_us = one["last_completion_us"] if one else None
floor_rate = 1e6 / batched["cost_per_message_us"] if batched and batched["cost_per_message_us"] else None

inter = rc.get("floor_interleaved")
inter_last_us = inter["last_completion_us"] if inter else None
inter_send_p99_us = inter.get("send_p99_us") if inter else None

ratios = {
    "delivered_per_s": ratio(rc.get("delivered_per_s"), bl.get("delivered_per_s")),
    "latency_p50_us": ratio(rc.get("latency_p50_us"), bl.get("latency_p50_us")),
    "latency_p99_us": ratio(rc.get("latency_p99_us"), bl.get("latency_p99_us")),
    "delivered_per_gateway_cpu_s": ratio(rc.get("delivered_per_gateway_cpu_s"),
                                         bl.get("delivered_per_gateway_cpu_s")),
    "gateway_rss_after_kib": ratio(rc.get("gateway_rss_after_kib"), bl.get("gateway_rss_after_kib")),
    "ringcast_p99_vs_floor_last_completion": ratio(rc.get("latency_p99_us"), floor_last_us),
    "baseline_p99_vs_floor_last_completion": ratio(bl.get("latency_p99_us"), floor_last_us),
    "ringcast_p99_vs_paced_floor_last_completion": ratio(rc.get("latency_p99_us"), paced_last_us),
    "baseline_p99_vs_paced_floor_last_completion": ratio(bl.get("latency_p99_us"), paced_last_us),
    "ringcast_p99_vs_paced_floor_last_completion_p99": ratio(rc.get("latency_p99_us"), paced_last_p99_us),
    "ringcast_p99_vs_interleaved_floor": rc.get("latency_p99_vs_interleaved_floor"),
    "ringcast_p99_vs_interleaved_send_p99": ratio(rc.get("latency_p99_us"), inter_send_p99_us),
    "ringcast_per_cpu_vs_floor": ratio(rc.get("delivered_per_gateway_cpu_s"), floor_rate),
    "ringcast_cpu_per_frame_vs_paced_floor_send": ratio(per_frame_us(rc), paced_send_us),
    "baseline_cpu_per_frame_vs_paced_floor_send": ratio(per_frame_us(bl), paced_send_us),
    "ringcast_cpu_per_frame_vs_relay_send": ratio(per_frame_us(rc), relay_send_us),
    "ringcast_p50_minus_paced_floor_p50_us": minus(rc.get("latency_p50_us"), paced_p50_us),
    "ringcast_p50_minus_relay_p50_us": minus(rc.get("latency_p50_us"), relay_p50_us),
    "baseline_per_cpu_vs_floor": ratio(bl.get("delivered_per_gateway_cpu_s"), floor_rate),
}
combined = {
    "scenario": scenario,
    "floor": floor,
    "floor_last_completion_us_1_frame": floor_last_us,
    "paced_floor": paced,
    "paced_floor_last_completion_us": paced_last_us,
    "paced_floor_last_completion_p99_us": paced_last_p99_us,
    "relay": relay_run,
    "floor_msgs_per_cpu_s_batched": floor_rate,
    "floor_batched_frames_per_write": batched["frames_per_write"] if batched else None,
    "ringcast": rc,
    "baseline": bl,
    "ratios": ratios,
}
with open(out_path, "w") as f:
    f.write(json.dumps(combined) + "\n")

def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"
def fr(v):
    return "-" if v is None else f"{v:.2f}x"

rows = [
    # label, key, digits, floor value, ringcast/floor
    ("delivered msgs/s", "delivered_per_s", 0, None, None),
    ("loss %", "loss_pct", 3, None, None),
    ("latency p50 µs", "latency_p50_us", 0, None, None),
    ("latency p50 µs (paced floor; last column: µs over it)", "latency_p50_us", 0, paced_p50_us, None),
    ("latency p50 µs (relay; last column: µs over it)", "latency_p50_us", 0, relay_p50_us, None),
    ("latency p90 µs", "latency_p90_us", 0, None, None),
    ("latency p99 µs", "latency_p99_us", 0, floor_last_us, ratios["ringcast_p99_vs_floor_last_completion"]),
    ("latency p99 µs (paced floor)", "latency_p99_us", 0, paced_last_us, ratios["ringcast_p99_vs_paced_floor_last_completion"]),
    ("latency p99 µs (paced floor p99)", "latency_p99_us", 0, paced_last_p99_us, ratios["ringcast_p99_vs_paced_floor_last_completion_p99"]),
    ("latency p99 µs (interleaved floor)", "latency_p99_us", 0, inter_last_us, ratios["ringcast_p99_vs_interleaved_floor"]),
    ("latency p99 µs (interleaved sends p99)", "latency_p99_us", 0, inter_send_p99_us, ratios["ringcast_p99_vs_interleaved_send_p99"]),
    ("latency p99.9 µs", "latency_p999_us", 0, None, None),
    ("latency max µs", "latency_max_us", 0, None, None),
    ("gateway CPU-s", "gateway_cpu_s", 2, None, None),
    ("gateway CPU µs per frame (paced floor per send)", "cpu_per_frame_us", 2, paced_send_us, ratios["ringcast_cpu_per_frame_vs_paced_floor_send"]),
    ("gateway CPU µs per frame (relay per send)", "cpu_per_frame_us", 2, relay_send_us, ratios["ringcast_cpu_per_frame_vs_relay_send"]),
    ("gateway CPU % of a core", "gateway_cpu_pct", 1, None, None),
    ("delivered / gateway CPU-s", "delivered_per_gateway_cpu_s", 0, floor_rate, ratios["ringcast_per_cpu_vs_floor"]),
    ("gateway RSS after KiB", "gateway_rss_after_kib", 0, None, None),
    ("connect rate /s", "connect_rate_per_s", 0, None, None),
    ("load test busiest thread %", "loadtest_max_thread_cpu_pct", 1, None, None),
]
head = ("", "ringcast", "baseline", "ringcast/baseline", "floor", "ringcast/floor")
table = [head]
rc["cpu_per_frame_us"], bl["cpu_per_frame_us"] = per_frame_us(rc), per_frame_us(bl)
for label, key, digits, fl, rf in rows:
    a, b = rc.get(key), bl.get(key)
    if "µs over it" in label:
        if fl is None:
            continue
        table.append((label, fmt(a, digits), fmt(b, digits), fr(ratio(a, b)), fmt(fl, 0),
                      "-" if a is None else f"{a - fl:+,.0f}"))
        continue
    if ("paced floor per send" in label or "relay per send" in label) and fl is None:
        continue
    if a is None and b is None:
        continue
    if ("paced" in label or "interleaved" in label) and fl is None:
        continue
    if label == "latency p99 µs" and paced and paced["group"] < paced["connections"]:
        fl, rf = None, None  # all connections back to back is not this scenario's fan-out
    table.append((label, fmt(a, digits), fmt(b, digits), fr(ratio(a, b)),
                  fmt(fl, 1 if fl is not None and fl < 100 else 0), fr(rf)))
widths = [max(len(row[i]) for row in table) for i in range(len(head))]
print(f"\n{scenario}: ringcast vs baseline"
      + (f" (floor: {floor['connections']} connections, {floor['message_bytes']} B)" if floor else ""))
for row in table:
    print("  " + row[0].ljust(widths[0]) + "  "
          + "  ".join(c.rjust(w) for c, w in zip(row[1:], widths[1:])))
if floor:
    print(f"  floor p99 row: last_completion_us at 1 frame/write over {floor['connections']} "
          f"connections; floor per-CPU row: 1 / cost_per_message_us at "
          f"{batched['frames_per_write']} frames/write")
if paced:
    print(f"  paced floor rows: last_completion_us (median; p99 over {paced_one['rounds']} rounds) "
          f"writing {paced['group']} of {paced['connections']} connections a round, a round every "
          f"{paced['interval_us']} µs (the scenario's publish interval)")
if relay:
    print(f"  relay rows: a cost-free gateway fed by Redis at the same pace (redis-hop "
          f"--relay-connections {relay['connections']} --relay-group {relay['group']}): its whole "
          f"CPU per send and its p50 at the receiving ends")
if inter:
    print(f"  interleaved floor row: the ringcast run's own floor, {inter['connections']} sends "
          f"halfway between publishes, median over {inter['rounds']} rounds (p99 "
          f"{inter['last_completion_p99_us']:,.0f} µs); sends p99 row: the 99th percentile of "
          f"every one of its sends' completion after its round's start (a gateway with no cost "
          f"of its own would score this as its p99)")
for name, r in (("ringcast", rc), ("baseline", bl)):
    for w in r.get("warnings", []):
        print(f"  WARNING ({name}): {w}")
print(f"\nwrote {out_path}")
EOF
