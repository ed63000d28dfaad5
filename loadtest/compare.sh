#!/usr/bin/env bash
# Runs one scenario against ringcast and against the baseline gateway, measures the kernel's
# floor for the same number of connections, and prints them side by side.
#
#   loadtest/compare.sh SCENARIO [ringcast-loadtest run flags...]
#
# 1. `ringcast-loadtest floor --connections N --json` with N = the scenario's clients (or the
#    --clients flag given here; 1000 if neither says), its sender on the gateway's core and
#    its reader on the load test's core.
# 2. loadtest/run.sh SCENARIO --target ringcast [flags...]
# 3. loadtest/run.sh SCENARIO --target baseline [flags...]
# 4. A table: ringcast, baseline, ringcast/baseline, and ringcast against the floor:
#    p99 latency / floor last_completion_us at 1 frame per write (the soonest one core can
#    reach the last of N clients), and delivered msgs per gateway CPU-s / (1 / floor
#    cost_per_message_us at 64 frames per write, the most batched setting).
# The combined result goes to reports/compare-SCENARIO.json (one JSON line: scenario, floor,
# ringcast, baseline, ratios); the runs' own lines stay in reports/SCENARIO-TARGET.json.
#
# Environment: as run.sh (RINGCAST_GATEWAY_CORES, RINGCAST_LOAD_CORES, RINGCAST_SHARDS,
# RINGCAST_SKIP_BUILD, REDIS_SERVER, REPORTS_DIR); SKIP_FLOOR=1 leaves the floor out.
set -euo pipefail

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
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

# Clients: a --clients flag here, else the scenario's `clients`, else 1000.
clients=
args=("$@")
for i in "${!args[@]}"; do
    case "${args[$i]}" in
        --clients) clients=${args[$((i + 1))]:-} ;;
        --clients=*) clients=${args[$i]#--clients=} ;;
    esac
done
if [ -z "$clients" ]; then
    clients=$(sed -n 's/^[[:space:]]*clients[[:space:]]*=[[:space:]]*\([0-9_]*\).*/\1/p' \
        "$scenario_file" | head -1 | tr -d _)
fi
clients=${clients:-1000}

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

# The floor, pinned like the gateway: its sender on the gateway's first CPU, its reader on the
# load test's first CPU (it pins its own threads).
floor_json=$tmp/floor.json
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
    echo "compare.sh: floor over $clients connections (sender CPU $sender_core, reader CPU $reader_core)" >&2
    "$loadtest_bin" floor --connections "$clients" --sender-core "$sender_core" \
        --reader-core "$reader_core" --json >"$tmp/floor.out"
    grep '^{' "$tmp/floor.out" | tail -1 >"$floor_json"
    [ -s "$floor_json" ] || die "floor printed no JSON line"
fi

for target in ringcast baseline; do
    echo "compare.sh: == $scenario against $target" >&2
    "$root/loadtest/run.sh" "$scenario_file" --target "$target" "$@"
done

python3 - "$scenario" "$floor_json" "$reports/$scenario-ringcast.json" \
    "$reports/$scenario-baseline.json" "$reports/compare-$scenario.json" <<'EOF'
import json, sys

scenario, floor_path, rc_path, bl_path, out_path = sys.argv[1:]
def last_line(path):
    lines = [l for l in open(path).read().splitlines() if l.strip()]
    return json.loads(lines[-1])
floor = last_line(floor_path)
rc, bl = last_line(rc_path), last_line(bl_path)

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

floor_at = {}
if floor:
    floor_at = {r["frames_per_write"]: r for r in floor["results"]}
one = floor_at.get(1)
batched = floor_at.get(64) or (floor_at[max(floor_at)] if floor_at else None)
floor_last_us = one["last_completion_us"] if one else None
floor_rate = 1e6 / batched["cost_per_message_us"] if batched and batched["cost_per_message_us"] else None

ratios = {
    "delivered_per_s": ratio(rc.get("delivered_per_s"), bl.get("delivered_per_s")),
    "latency_p50_us": ratio(rc.get("latency_p50_us"), bl.get("latency_p50_us")),
    "latency_p99_us": ratio(rc.get("latency_p99_us"), bl.get("latency_p99_us")),
    "delivered_per_gateway_cpu_s": ratio(rc.get("delivered_per_gateway_cpu_s"),
                                         bl.get("delivered_per_gateway_cpu_s")),
    "gateway_rss_after_kib": ratio(rc.get("gateway_rss_after_kib"), bl.get("gateway_rss_after_kib")),
    "ringcast_p99_vs_floor_last_completion": ratio(rc.get("latency_p99_us"), floor_last_us),
    "baseline_p99_vs_floor_last_completion": ratio(bl.get("latency_p99_us"), floor_last_us),
    "ringcast_per_cpu_vs_floor": ratio(rc.get("delivered_per_gateway_cpu_s"), floor_rate),
    "baseline_per_cpu_vs_floor": ratio(bl.get("delivered_per_gateway_cpu_s"), floor_rate),
}
combined = {
    "scenario": scenario,
    "floor": floor,
    "floor_last_completion_us_1_frame": floor_last_us,
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
    ("latency p90 µs", "latency_p90_us", 0, None, None),
    ("latency p99 µs", "latency_p99_us", 0, floor_last_us, ratios["ringcast_p99_vs_floor_last_completion"]),
    ("latency p99.9 µs", "latency_p999_us", 0, None, None),
    ("latency max µs", "latency_max_us", 0, None, None),
    ("gateway CPU-s", "gateway_cpu_s", 2, None, None),
    ("gateway CPU % of a core", "gateway_cpu_pct", 1, None, None),
    ("delivered / gateway CPU-s", "delivered_per_gateway_cpu_s", 0, floor_rate, ratios["ringcast_per_cpu_vs_floor"]),
    ("gateway RSS after KiB", "gateway_rss_after_kib", 0, None, None),
    ("connect rate /s", "connect_rate_per_s", 0, None, None),
    ("load test busiest thread %", "loadtest_max_thread_cpu_pct", 1, None, None),
]
head = ("", "ringcast", "baseline", "ringcast/baseline", "floor", "ringcast/floor")
table = [head]
for label, key, digits, fl, rf in rows:
    a, b = rc.get(key), bl.get(key)
    if a is None and b is None:
        continue
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
for name, r in (("ringcast", rc), ("baseline", bl)):
    for w in r.get("warnings", []):
        print(f"  WARNING ({name}): {w}")
print(f"\nwrote {out_path}")
EOF
