#!/usr/bin/env bash
# Start a local Prefect server (SQLite), the `process` work pool, all deployments of
# prefect.yaml and a worker. State and logs live in $CSDM_STATE (default .csdm-serve/).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${PREFECT_PORT:-4200}
STATE=${CSDM_STATE:-$PWD/.csdm-serve}
mkdir -p "$STATE"
export PREFECT_HOME=${PREFECT_HOME:-$STATE/prefect-home}
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export CSDM_ROOT=$PWD
export CSDM_DATA=${CSDM_DATA:-$PWD/data}

if ! curl -sf "$PREFECT_API_URL/health" >/dev/null 2>&1; then
  nohup "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$STATE/server.log" 2>&1 &
  echo $! >"$STATE/server.pid"
fi
for _ in $(seq 1 180); do
  curl -sf "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -sf "$PREFECT_API_URL/health" >/dev/null || { echo "Prefect server did not start; see $STATE/server.log"; exit 1; }

"$BIN/prefect" work-pool inspect process >/dev/null 2>&1 ||
  "$BIN/prefect" work-pool create process --type process >/dev/null
"$BIN/prefect" --no-prompt deploy --all >"$STATE/deploy.log" 2>&1 || { cat "$STATE/deploy.log"; exit 1; }

if [[ ! -f "$STATE/worker.pid" ]] || ! kill -0 "$(cat "$STATE/worker.pid")" 2>/dev/null; then
  nohup "$BIN/prefect" worker start --pool process >"$STATE/worker.log" 2>&1 &
  echo $! >"$STATE/worker.pid"
fi
echo "Prefect UI: http://127.0.0.1:$PORT  (deployments: ingest, process, pipeline, daily-refresh, train)"
echo "Run one: PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run pipeline/pipeline"
