#!/usr/bin/env bash
# The same put and linearizable-get load against a 3-member etcd cluster and a 3-node Strata
# cluster, on loopback, one after the other in one run; then short-link creates and redirects
# against one Strata node. Prints both tables and the ratios. Both also answer pings (a static
# endpoint): the rate of requests with nothing behind them, the ceiling of any other phase.
#
#   tools/scripts/etcd-compare.sh            # 10 s per run
#   SECS=5 CONNS=1,64 tools/scripts/etcd-compare.sh
#   RANGES=1,64 tools/scripts/etcd-compare.sh # Strata's key space in 1, then 64 ranges
#
# With RANGES, the Strata put/get/ping run is repeated on a fresh cluster pre-split into each
# count of ranges, and every one is compared with etcd.
# Everything (etcd, the data) lives under a temporary directory removed at exit; the JSON
# results are copied to $OUT (default ./etcd-compare-results).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${SECS:-10}
CONNS=${CONNS:-1,64}
RANGES=${RANGES:-1}
OUT=${OUT:-./etcd-compare-results}
tools/scripts/install-etcd.sh
cargo build --release -q -p node -p tools
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
STRATA_PIDS=()
source tools/scripts/lib-strata-cluster.sh
cleanup() {
  for p in "${PIDS[@]}" "${STRATA_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"

echo "== etcd: 3 members on 127.0.0.1:2379{1,2,3}"
CLUSTER="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$WORK/e$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token strata-bench \
    --logger zap --log-level error >"$WORK/e$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do wait_http "http://127.0.0.1:2379$i/health" "etcd member $i"; done
ETCD_TARGETS=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793
$BIN/strata-bench http --system etcd --target "$ETCD_TARGETS" --phases put,get,ping \
  --connections "$CONNS" --seconds "$SECS" --json "$OUT/etcd.json"
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

for R in ${RANGES//,/ }; do
  echo "== strata: 3 nodes on 127.0.0.1:1808{1,2,3}, $R range(s)"
  strata_stop # the previous count's cluster, if any
  strata_start "$BIN/strata" "$WORK/strata-$R"
  SUFFIX=$([ "$R" = 1 ] && echo "" || echo "-$R-ranges")
  $BIN/strata-bench http --system strata --token bench-token --target "$STRATA_TARGETS" \
    --phases put,get,ping --connections "$CONNS" --seconds "$SECS" --split-ranges "$R" \
    --json "$OUT/strata$SUFFIX.json"
  if [ "$R" != 1 ]; then
    python3 - "$OUT/etcd.json" "$OUT/strata$SUFFIX.json" "$R" <<'PY'
import json, sys
etcd = {(r["phase"], r["connections"]): r for r in json.load(open(sys.argv[1]))["results"]}
strata = {(r["phase"], r["connections"]): r for r in json.load(open(sys.argv[2]))["results"]}
print(f"\n== ratios with {sys.argv[3]} ranges (strata / etcd, same run)")
for k in sorted(strata):
    if k in etcd and etcd[k]["ops_per_sec"] > 0 and k[0] != "ping":
        s, e = strata[k]["ops_per_sec"], etcd[k]["ops_per_sec"]
        print(f"{k[0]:>5} {k[1]:>3} conns: strata {s:>9.0f}/s  etcd {e:>9.0f}/s  ratio {s/e:5.2f}x")
PY
  fi
done
# The link phases on the cluster of the last range count (1 by default).
LEADER=$(curl -fsS -H 'Authorization: Bearer bench-token' http://127.0.0.1:18081/admin/status |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_addr"])')
echo "== strata links on one node (the leader, $LEADER): creates, then redirects spread evenly over every link created"
$BIN/strata-bench http --system strata --token bench-token --target "http://$LEADER" \
  --phases create,redirect --connections "$CONNS" --seconds "$SECS" --json "$OUT/strata-links.json"
# The hot set of a shortener: every redirect finds its link (and its visit counter) cached, and
# one flush a second writes 1,000 counters rather than one per link of the whole store.
echo "== strata redirects of 1,000 hot links on the leader"
$BIN/strata-bench http --system strata --token bench-token --target "http://$LEADER" \
  --phases redirect --links 1000 --connections "$CONNS" --seconds "$SECS" --json "$OUT/strata-hot.json"

[ -f "$OUT/strata.json" ] || exit 0
python3 - "$OUT/etcd.json" "$OUT/strata.json" <<'PY'
import json, sys
etcd = {(r["phase"], r["connections"]): r for r in json.load(open(sys.argv[1]))["results"]}
strata = {(r["phase"], r["connections"]): r for r in json.load(open(sys.argv[2]))["results"]}
print("\n== ratios (strata / etcd, same run)")
for k in sorted(strata):
    if k in etcd and etcd[k]["ops_per_sec"] > 0:
        s, e = strata[k]["ops_per_sec"], etcd[k]["ops_per_sec"]
        print(f"{k[0]:>5} {k[1]:>3} conns: strata {s:>9.0f}/s  etcd {e:>9.0f}/s  ratio {s/e:5.2f}x")
# A ping is a request with nothing behind it: no system serves more requests than that, so a
# ratio of gets can be no larger than strata's pings over etcd's gets.
print("\n== the ceiling: requests with nothing behind them (ping) against gets, same run")
for (phase, conns), s in sorted(strata.items()):
    e = etcd.get(("get", conns))
    if phase == "ping" and e and e["ops_per_sec"] > 0:
        g = strata.get(("get", conns))
        print(f"  {conns:>3} conns: strata pings {s['ops_per_sec']:>9.0f}/s = {s['ops_per_sec'] / e['ops_per_sec']:5.2f}x etcd's gets"
              + (f"; strata gets reach {g['ops_per_sec'] / s['ops_per_sec']:.0%} of its pings" if g else ""))
PY
