#!/usr/bin/env bash
# Stop what infra/serve.sh started.
set -uo pipefail
cd "$(dirname "$0")/.."
STATE=${CSDM_STATE:-$PWD/.csdm-serve}
for name in worker server; do
  if [[ -f "$STATE/$name.pid" ]]; then
    kill "$(cat "$STATE/$name.pid")" 2>/dev/null && echo "stopped $name"
    rm -f "$STATE/$name.pid"
  fi
done
