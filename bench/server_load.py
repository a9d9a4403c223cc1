"""Load test of the latency server on loopback, beside a bare FastAPI endpoint served the same way.

Scenarios: single-block /latency, 1,000-block /latency and /deltas for a 12-block model. For each, both servers
get the same requests from this process (a separate process from both servers): a throughput run with several
keep-alive connections, and a low-load run with one connection (one request at a time). Each run is bounded by
time and by count. Prints requests/s, p50 and p99 per server, and the ratio lut/bare, all from the same run.

    python -m bench.server_load [--duration 4] [--connections 8] [--workers 1] [--table tables/ID.json]

Without --table it serves a synthetic table on the profiler's `default` grid (the DeiT-B range); the service's
cost depends on the grid's shape, not on the numbers in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lut_server.dims import AXES
from lut_server.table_format import FORMAT_NAME, FORMAT_VERSION, PART_AXES, read_table

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_GRID = {
    "emb": [32, 64, 128, 256, 384, 512, 640, 768],
    "heads": [1, 2, 4, 6, 8, 10, 12],
    "qk": [8, 16, 32, 48, 64],
    "v": [8, 16, 32, 48, 64],
    "mlp": [16, 256, 512, 1024, 1536, 2048, 2560, 3072],
}
"""The profiler's `default` preset grid (profiler/grids.py), repeated here so the benchmark needs no torch."""


def synthetic_table(grid: dict[str, list[int]]) -> dict:
    """A complete table whose latencies grow with each width (a FLOP-like formula plus a fixed overhead). Its
    workload is a torch-cpu one, as a table's backend must be a profiler backend; its device says it is made up."""
    axes_values = {a: np.array(v, dtype=float) for a, v in grid.items()}
    formulas = {
        "attn_qk": lambda e, h, q: 0.02 + 2e-8 * e * h * q * 197,
        "attn_v": lambda e, h, v: 0.02 + 3e-8 * e * h * v * 197,
        "mlp": lambda e, m: 0.03 + 4e-8 * e * m * 197,
        "stem": lambda e: 0.1 + 1e-4 * e,
        "head": lambda e: 0.05 + 1e-5 * e,
    }
    parts = {}
    for name, formula in formulas.items():
        axes = PART_AXES[name]
        mesh = np.meshgrid(*(axes_values[a] for a in axes), indexing="ij")
        parts[name] = {"axes": list(axes), "median_ms": formula(*mesh).tolist()}
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "complete": True,
        "workload": {"backend": "torch-cpu", "precision": "fp32", "batch": 1, "tokens": 197},
        "device": {"name": "synthetic", "kind": "cpu", "match": {}, "recorded": {}},
        "software": {"match": {}, "recorded": {}},
        "protocol": {},
        "grid": grid,
        "parts": parts,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not come up")


def request_bytes(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port: int, request: bytes, stop_at: float, budget: list[int], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter_ns()
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append((time.perf_counter_ns() - start) / 1e6)
            if not status_line.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer {status_line!r}")
    finally:
        writer.close()


async def _load(port: int, request: bytes, connections: int, duration: float, max_requests: int) -> dict:
    latencies: list[float] = []
    budget = [max_requests]
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*(_connection(port, request, stop_at, budget, latencies) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    values = np.array(latencies)
    return {
        "requests": len(values),
        "rps": len(values) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }


def run_load(port: int, request: bytes, connections: int, duration: float, max_requests: int) -> dict:
    asyncio.run(_load(port, request, connections, 0.5, max_requests))  # warm-up: connections, caches, table load
    return asyncio.run(_load(port, request, connections, duration, max_requests))


def scenarios(table_id: str, ranges: dict[str, tuple[int, int]]) -> dict[str, tuple[str, bytes]]:
    rng = np.random.default_rng(0)

    def random_block() -> dict[str, int]:
        return {a: int(rng.integers(ranges[a][0], ranges[a][1] + 1)) for a in AXES}

    one = {"blocks": [random_block()]}
    thousand = {"blocks": [random_block() for _ in range(1000)]}
    emb = min(768, ranges["emb"][1])
    model = {"emb": emb, "blocks": [{k: v for k, v in random_block().items() if k != "emb"} for _ in range(12)]}
    return {
        "latency, 1 block": (f"/v1/tables/{table_id}/latency", json.dumps(one).encode()),
        "latency, 1,000 blocks": (f"/v1/tables/{table_id}/latency", json.dumps(thousand).encode()),
        "deltas, 12-block model": (f"/v1/tables/{table_id}/deltas", json.dumps(model).encode()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=None, help="a table file to serve (default: synthetic)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measured run")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per run")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections in throughput runs")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, for both servers")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="vitlut-bench-"))
    tables = workdir / "tables"
    tables.mkdir()
    data = read_table(args.table) if args.table else synthetic_table(DEFAULT_GRID)
    table_id = "bench"
    (tables / f"{table_id}.json").write_text(json.dumps(data))
    ranges = {a: (min(v), max(v)) for a, v in data["grid"].items()}

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("LUT_SERVER_READ_TOKEN", None)
    ports = {"lut": free_port(), "bare": free_port()}
    same = ["--workers", str(args.workers), "--no-access-log", "--log-level", "warning"]
    commands = {
        "lut": [sys.executable, "-m", "lut_server", "--tables", str(tables), "--port", str(ports["lut"]), *same],
        "bare": [sys.executable, str(BENCH_DIR / "server_bare_app.py"), "--port", str(ports["bare"]), *same],
    }
    procs = {name: subprocess.Popen(cmd, env=env, cwd=BENCH_DIR.parent) for name, cmd in commands.items()}
    results: dict[str, dict] = {}
    try:
        for name, proc in procs.items():
            wait_up(ports[name], proc)
        print(
            f"cpu cores: {os.cpu_count()}, workers per server: {args.workers}, table grid: "
            + " ".join(f"{a}={len(v)}" for a, v in data["grid"].items())
        )
        header = f"{'scenario':24} {'load':14} {'server':6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  ratio lut/bare"
        print(header)
        for scenario, (path, body) in scenarios(table_id, ranges).items():
            for load, connections in (("throughput", args.connections), ("low load (c=1)", 1)):
                row = {}
                for name in ("bare", "lut"):
                    request = request_bytes(ports[name], path, body)
                    row[name] = run_load(ports[name], request, connections, args.duration, args.max_requests)
                for name in ("bare", "lut"):
                    r = row[name]
                    ratio = f"{row['lut']['rps'] / row['bare']['rps']:.2f}x req/s" if name == "lut" else ""
                    figures = f"{r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
                    print(f"{scenario:24} {load:14} {name:6} {figures}  {ratio}")
                results[f"{scenario} | {load}"] = row | {"ratio_rps": row["lut"]["rps"] / row["bare"]["rps"]}
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    single = results["latency, 1 block | throughput"]["ratio_rps"]
    deltas_p50 = results["deltas, 12-block model | low load (c=1)"]["lut"]["p50_ms"]
    print(f"target single-block throughput >= 0.5x bare: {single:.2f}x -> {'met' if single >= 0.5 else 'NOT met'}")
    print(
        f"target /deltas 12 blocks p50 <= 5 ms at low load: {deltas_p50:.2f} ms -> "
        f"{'met' if deltas_p50 <= 5 else 'NOT met'}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
