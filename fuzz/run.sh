#!/usr/bin/env bash
# Runs fuzz targets one after another, each for a bounded time, with the committed seeds as a
# read-only corpus: what a run discovers goes to fuzz/target/work/<target>/ (not committed), a
# crash to fuzz/artifacts/<target>/. Prints each target's executions and findings.
#   fuzz/run.sh SECONDS [TARGET...]        (default: every target)
set -uo pipefail
cd "$(dirname "$0")"
secs="${1:?usage: fuzz/run.sh SECONDS [TARGET...]}"
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
# The raft log targets write a scratch directory per input: keep it in memory.
export TMPDIR="${TMPDIR:-/dev/shm}"
for t in "${targets[@]}"; do
  mkdir -p "target/work/$t" "artifacts/$t"
  log="target/work/$t.log"
  # -a: overflow checks and debug assertions, as in the stable test builds.
  cargo +nightly fuzz run -a "$t" "target/work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -timeout=10 -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  rc=$?
  runs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)
  found=$(grep -E '^(==[0-9]+== ?ERROR|SUMMARY|thread .* panicked)' "$log" | head -3)
  echo "$t: exit $rc; ${runs:-no summary (see $log)}${found:+; FOUND: $found}"
done
