# Sourced by the benchmark scripts: starts and stops a 3-node Strata cluster on loopback.
#   strata_start BIN WORKDIR   # nodes on 127.0.0.1:1808{1,2,3}; sets STRATA_PIDS, STRATA_TARGETS
#   strata_stop
wait_http() { # url, what
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "timed out waiting for $2 ($1)" >&2; exit 1
}

strata_start() { # bin, workdir
  local bin=$1 work=$2
  local peers=1=127.0.0.1:18081,2=127.0.0.1:18082,3=127.0.0.1:18083
  STRATA_PIDS=()
  mkdir -p "$work"
  for i in 1 2 3; do
    "$bin" serve --node-id "$i" --listen "127.0.0.1:1808$i" --peers "$peers" \
      --cluster-secret bench-secret --token bench-token --link-rate-per-minute 0 \
      --data-dir "$work/s$i" --object-dir "$work/objects" >"$work/s$i.out" 2>"$work/s$i.log" &
    STRATA_PIDS+=($!)
  done
  for i in 1 2 3; do wait_http "http://127.0.0.1:1808$i/ready" "strata node $i"; done
  STRATA_TARGETS=http://127.0.0.1:18081,http://127.0.0.1:18082,http://127.0.0.1:18083
}

strata_stop() {
  for p in "${STRATA_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${STRATA_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  STRATA_PIDS=()
}
