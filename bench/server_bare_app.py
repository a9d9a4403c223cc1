"""The baseline for bench/server_load.py: bare FastAPI endpoints with the server's request models and no table work.

The endpoints are `async` (no thread-pool hop), the cheapest way FastAPI can serve them, so the baseline is strict.
Served exactly like the real server (uvicorn, same workers, no access log, the same JSON log config), so the ratio
in the benchmark is the cost of the service's own work: table lookup, range checks, interpolation, deltas.

    python -m bench.server_bare_app --port N [--workers K]
"""

from __future__ import annotations

import argparse
import json
import logging.config

import uvicorn
from fastapi import FastAPI, Response

from lut_server.api_models import DeltasRequest, LatencyRequest
from lut_server.json_logging import log_config

app = FastAPI(title="bare baseline")


@app.post("/v1/tables/{table_id}/latency")
async def latency(query: LatencyRequest, table_id: str) -> Response:
    body = {"latency_ms": [1.0] * len(query.blocks)}
    return Response(json.dumps(body), media_type="application/json")


@app.post("/v1/tables/{table_id}/deltas")
async def deltas(query: DeltasRequest, table_id: str) -> Response:
    entry = {"heads": 1.0, "qk": 1.0, "v": 1.0, "mlp": 1.0}
    body = {"total_ms": 1.0, "emb": 1.0, "blocks": [entry] * len(query.blocks)}
    return Response(json.dumps(body), media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-access-log", action="store_true", help="accepted for symmetry; never logs requests")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    config = log_config(args.log_level, access_log=False)
    logging.config.dictConfig(config)
    uvicorn.run(
        "server_bare_app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=config,
        access_log=False,
        server_header=False,
        app_dir="bench",
    )


if __name__ == "__main__":
    main()
