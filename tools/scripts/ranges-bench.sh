#!/usr/bin/env bash
# Puts and linearizable gets (64 connections, keys uniform) against a 3-node Strata cluster on
# loopback whose key space is pre-split into 1, 16 and 64 ranges, each on a fresh cluster, in
# one run; with BASELINE=path/to/strata (a build of an earlier commit) its 1-range figures
# too. Reports requests per second, the nodes' CPU-µs per request, and the ratios to this
# build's 1-range run.
#
#   tools/scripts/ranges-bench.sh
#   SECS=5 RANGES=1,64 BASELINE=/tmp/strata-before tools/scripts/ranges-bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${SECS:-10}
CONNS=${CONNS:-64}
RANGES=${RANGES:-1,16,64}
OUT=${OUT:-./ranges-bench-results}
BASELINE=${BASELINE:-}
cargo build --release -q -p node -p tools
BIN=target/release
WORK=$(mktemp -d)
source tools/scripts/lib-strata-cluster.sh
STRATA_PIDS=()
trap 'strata_stop; rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

run() { # label, strata binary, ranges
  local label=$1 bin=$2 ranges=$3
  echo "== $label: $ranges range(s)"
  strata_start "$bin" "$WORK/$label-$ranges"
  local pids
  pids=$(IFS=,; echo "${STRATA_PIDS[*]}")
  $BIN/strata-bench http --system strata --token bench-token --target "$STRATA_TARGETS" \
    --phases put,get --connections "$CONNS" --seconds "$SECS" --split-ranges "$ranges" \
    --cpu-pids "$pids" --json "$OUT/$label-$ranges.json"
  strata_stop
}

if [ -n "$BASELINE" ]; then run baseline "$BASELINE" 1; fi
for r in ${RANGES//,/ }; do run current "$BIN/strata" "$r"; done

python3 - "$OUT" <<'PY'
import glob, json, os, sys
rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    label, ranges = os.path.basename(f)[:-5].rsplit("-", 1)
    for r in json.load(open(f))["results"]:
        rows[(label, int(ranges), r["phase"].lower())] = r
base = {p: rows.get(("current", 1, p)) for p in ("put", "get")}
print("\n== puts and gets by ranges (ratios to this build's 1 range, same run)")
for (label, ranges, phase), r in sorted(rows.items(), key=lambda x: (x[0][0] != "baseline", x[0][1], x[0][2])):
    b = base.get(phase)
    ratio = f"{r['ops_per_sec'] / b['ops_per_sec']:5.2f}x" if b and b["ops_per_sec"] else "   - "
    cpu = r.get("cpu_seconds_per_op")
    cpu = f"{cpu * 1e6:7.1f} CPU-µs/op" if cpu else ""
    print(f"{label:>8} {ranges:>3} ranges {phase:>4}: {r['ops_per_sec']:>9.0f}/s  {ratio}  p99 {r['latency']['p99_us'] / 1000:7.2f} ms  {cpu}")
PY
