"""`python -m profiler upload tables/ID.json --server URL [--id ID]`: publish a table to a latency service.

The write token comes from LUT_SERVER_TOKEN in the environment, never from a flag (flags show in process lists).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lut_server.client import LatencyClient, LatencyServiceError
from lut_server.table_format import check_table_id, read_table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("upload", help="upload a table to a latency server (token from LUT_SERVER_TOKEN)")
    p.add_argument("table", type=Path, help="tables/ID.json")
    p.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--id", default=None, help="table id on the server (default: the file name without .json)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.set_defaults(handler=cmd_upload)


def cmd_upload(args: argparse.Namespace) -> int:
    token = os.environ.get("LUT_SERVER_TOKEN")
    if not token:
        print("error: set LUT_SERVER_TOKEN to the server's write token", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if not args.server.lower().startswith(("http://", "https://")):
        raise ValueError(f"--server takes a base URL such as http://127.0.0.1:8000, got {args.server!r}")
    table_id = check_table_id(args.id or args.table.stem)
    data = read_table(args.table)  # validate locally first: a clear error without a round trip
    try:
        with LatencyClient(args.server, table_id, token=token, timeout=args.timeout, retries=2) as client:
            summary = client.upload(data)
    except LatencyServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"uploaded": table_id, "server": args.server, "summary": summary}))
    return 0
