#!/usr/bin/env bash
# Stop what infra/serve.sh started: SIGINT first (the worker shuts down cleanly on it), then
# SIGTERM, then SIGKILL.
set -uo pipefail
cd "$(dirname "$0")/.."
STATE=${CSDM_STATE:-$PWD/.csdm-serve}
for name in worker server; do
  pidfile="$STATE/$name.pid"
  [[ -f "$pidfile" ]] || continue
  pid=$(cat "$pidfile")
  for sig in INT TERM KILL; do
    kill -0 "$pid" 2>/dev/null || break
    kill -"$sig" "$pid" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  done
  rm -f "$pidfile"
  echo "stopped $name"
done
