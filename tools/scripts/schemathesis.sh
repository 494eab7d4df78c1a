#!/usr/bin/env bash
# API conformance: schemathesis (property-based HTTP fuzzing) against one node on loopback,
# checked against the node's OpenAPI document (node/openapi.json, served at /openapi.json):
# no 5xx, every status and content type documented, every JSON body matching its schema.
#
#   tools/scripts/schemathesis.sh
#   SCHEMATHESIS_MAX_EXAMPLES=200 SCHEMATHESIS_SECS=900 tools/scripts/schemathesis.sh
#
# Budget: at most SCHEMATHESIS_MAX_EXAMPLES (default 30) generated cases per operation in one
# pass (a pass takes ~10 s at the default on 2 cores), and SCHEMATHESIS_SECS (default 180) for
# the whole schemathesis run: it is interrupted there, reports what it found, and the script
# fails. SCHEMATHESIS_SEED fixes the generation (default: random, printed).
#
# schemathesis is installed from PyPI (pinned below) in a venv under target/ (reused when
# present); the node is target/debug/strata (built when missing; STRATA_BIN overrides it), with
# a temporary data directory removed at exit. The node-to-node routes (/raft/*) are not tested,
# nor the membership changes (/admin/learners, /admin/membership: they would wait on nodes that
# do not exist and leave the one-node group without a quorum). Every request goes to loopback:
# other hosts are sent to a dead proxy, and redirects (short links) are never followed.
set -euo pipefail
cd "$(dirname "$0")/../.."

ST_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-30}
SECS=${SCHEMATHESIS_SECS:-180}
SEED=${SCHEMATHESIS_SEED:-$(( (RANDOM << 15) | RANDOM ))}
VENV=target/schemathesis-venv
BIN=${STRATA_BIN:-target/debug/strata}
PYTHON=${PYTHON:-$(command -v python3 || echo /root/.pyenv/shims/python3)}
TOKEN=schemathesis-token

if [ "$("$VENV/bin/st" --version 2>/dev/null)" != "st, version $ST_VERSION" ]; then
  echo "== installing schemathesis $ST_VERSION in $VENV"
  t0=$(date +%s)
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
  echo "   installed in $(( $(date +%s) - t0 ))s"
fi
if [ ! -x "$BIN" ]; then
  echo "== building $BIN"
  cargo build -p node --bin strata
fi

WORK=$(mktemp -d)
NODE_PID=
cleanup() {
  if [ -n "$NODE_PID" ]; then
    kill "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting $BIN on 127.0.0.1 (data in $WORK)"
"$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --token "$TOKEN" \
  >"$WORK/node.out" 2>"$WORK/node.err" &
NODE_PID=$!
ADDR=
for _ in $(seq 1 300); do
  ADDR=$(sed -n 's|^strata: listening on http://||p' "$WORK/node.out" | head -n 1)
  [ -n "$ADDR" ] && break
  if ! kill -0 "$NODE_PID" 2>/dev/null; then
    echo "the node exited:" >&2; cat "$WORK/node.err" >&2; exit 1
  fi
  sleep 0.2
done
[ -n "$ADDR" ] || { echo "the node did not start within 60 s" >&2; tail -n 20 "$WORK/node.err" >&2; exit 1; }
BASE="http://$ADDR"
echo "   listening on $BASE"

# The document the node serves; the file when the binary serves none or another version (it
# was built before the file's last edit).
if curl -fsS --noproxy '*' -o "$WORK/served.json" "$BASE/openapi.json" 2>/dev/null \
  && cmp -s "$WORK/served.json" node/openapi.json; then
  SCHEMA=("$BASE/openapi.json")
else
  echo "   note: $BIN does not serve this node/openapi.json (rebuild it); testing against the file"
  SCHEMA=("$PWD/node/openapi.json" --url "$BASE")
fi

echo "== schemathesis $ST_VERSION: $MAX_EXAMPLES examples per operation, at most ${SECS}s, seed $SEED"
t0=$(date +%s)
status=0
# At SECS, schemathesis is interrupted (it then prints what it found) and the run fails. It runs
# in the temporary directory: its caches (.hypothesis, .schemathesis) go with it.
VENV_ABS="$PWD/$VENV"
(cd "$WORK" && env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
  no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost \
  timeout --signal=INT --kill-after=20 "$SECS" \
  "$VENV_ABS/bin/st" run "${SCHEMA[@]}" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path-regex '^/raft/' \
  --exclude-path /admin/learners --exclude-path /admin/membership \
  --header "Authorization: Bearer $TOKEN" \
  --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
  --max-redirects 0 --request-timeout 30 \
  --no-color) \
  || status=$?
echo "== schemathesis finished in $(( $(date +%s) - t0 ))s (exit $status)"
if [ "$status" = 124 ]; then
  echo "the run did not finish within SCHEMATHESIS_SECS=${SECS}s" >&2
fi
if ! kill -0 "$NODE_PID" 2>/dev/null; then
  echo "the node died during the run:" >&2; tail -n 40 "$WORK/node.err" >&2; status=1
fi
exit "$status"
