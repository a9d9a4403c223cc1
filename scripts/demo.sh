#!/usr/bin/env bash
# `make demo`'s chain: start the latency server on a free loopback port with a one-time write token, wait for
# /healthz, run the pruning demo against it over HTTP (it profiles and uploads this machine's table if the server
# lacks it), stop the server, print the summary. Tables live in demo-out/tables, so a second run reuses them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${DEMO_OUT:-demo-out}"
TABLE_ID="${DEMO_TABLE:-digits-vit-cpu-b64}"
TARGET="${DEMO_TARGET:-0.5}"
CRITERION="${DEMO_CRITERION:-default}"  # or nvit: the NViT authors' choices (docs/pruning.md)
mkdir -p "$OUT/tables"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
LUT_SERVER_TOKEN="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
export LUT_SERVER_TOKEN
"$PY" -m lut_server --tables "$OUT/tables" --host 127.0.0.1 --port "$PORT" > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
    if "$PY" -c "import httpx, sys; sys.exit(httpx.get('$URL/healthz', timeout=1).status_code != 200)" 2>/dev/null; then
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited; see $OUT/server.log" >&2; exit 1; }
    sleep 0.2
done
echo "latency server on $URL (pid $SERVER_PID)"
"$PY" -m pruner demo --server "$URL" --table "$TABLE_ID" --target "$TARGET" --criterion "$CRITERION" --out "$OUT/prune" --no-progress
