"""The one builder of table documents for tests and benchmarks: complete tables from known latency functions,
without torch or timing, so every number a table serves is known in closed form."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import numpy as np

from lut_server.table_format import FORMAT_NAME, PART_AXES, new_table_document

SMALL_GRID: dict[str, list[int]] = {
    "emb": [64, 128, 256],
    "heads": [1, 2, 4],
    "qk": [8, 16, 32],
    "v": [8, 16, 32],
    "mlp": [64, 256, 512],
}


def multilinear_parts(
    grid: Mapping[str, list[int]], parts: tuple[str, ...] = ("attn_qk", "attn_v", "mlp", "stem", "head")
) -> dict[str, Callable[..., float]]:
    """Latency functions that are multilinear in each part's axes (so interpolation must be exact)."""
    funcs: dict[str, Callable[..., float]] = {
        "attn_qk": lambda emb, heads, qk: 0.01 + 1e-5 * emb * heads * qk + 1e-3 * heads,
        "attn_v": lambda emb, heads, v: 0.02 + 2e-5 * emb * heads * v + 1e-4 * emb,
        "mlp": lambda emb, mlp: 0.03 + 3e-6 * emb * mlp,
        "block": lambda emb, heads, qk, v, mlp: 0.05 + 1e-6 * emb * heads * (qk + v) + 3e-6 * emb * mlp,
        "stem": lambda emb: 0.1 + 1e-4 * emb,
        "head": lambda emb: 0.05 + 2e-5 * emb,
    }
    return {p: funcs[p] for p in parts}


VALIDATION: dict = {"median_ape_pct": 1.5, "p95_ape_pct": 4.0, "max_ape_pct": 7.0, "retest_noise_pct": 1.1}
"""The headline figures of the validation section every table built here carries, as `profiler validate` writes
them (the server's summary and page show them)."""


def make_table(
    grid: Mapping[str, list[int]] | None = None,
    functions: Mapping[str, Callable[..., float]] | None = None,
    device: str = "test-cpu",
    scale: float = 1.0,
) -> dict:
    """A complete version 1 table over `grid` whose latencies are `functions` (multilinear by default), each
    multiplied by `scale`; every latency grows with every width, so the served monotone fit leaves it unchanged."""
    grid = {axis: list(values) for axis, values in (grid or SMALL_GRID).items()}  # a test may change its copy
    functions = dict(functions or multilinear_parts(grid))
    parts = {}
    for name, func in functions.items():
        axes = PART_AXES[name]
        shape = [len(grid[a]) for a in axes]
        values = np.zeros(shape)
        for index in itertools.product(*(range(n) for n in shape)):
            values[index] = scale * func(*(grid[a][i] for a, i in zip(axes, index, strict=True)))
        parts[name] = {"axes": list(axes), "median_ms": values.tolist()}
    return {
        "format": FORMAT_NAME,
        "version": 1,  # a version 1 document: old files must keep loading and serving
        "complete": True,
        "created": "2026-01-01T00:00:00Z",
        "workload": {"backend": "torch-cpu", "precision": "fp32", "batch": 1, "tokens": 197, "threads": 1},
        "model": None,
        "device": {"name": device},
        "software": {},
        "protocol": {},
        "grid": grid,
        "parts": parts,
        "validation": dict(VALIDATION),
    }


FINGERPRINT: dict = {
    "name": "Test CPU",
    "kind": "cpu",
    "match": {
        "cpu": {
            "vendor": "AuthenticAMD",
            "family": 26,
            "model": 2,
            "stepping": 1,
            "model_name": "AMD EPYC",
            "isa": {"avx2": True, "avx512f": True, "avx512_bf16": True},
            "l2_kib": 1024,
            "l3_kib": 32768,
        },
        "threads": 1,
    },
    "recorded": {"cpu_count": 2, "os": "Linux"},
}
SOFTWARE: dict = {"match": {"torch": "2.13.0+cpu", "onednn": "3.9"}, "recorded": {"python": "3.11", "numpy": "2.4"}}


def make_table_v2(grid: Mapping[str, list[int]] | None = None, device: dict | None = None) -> dict:
    """A complete version 2 table with a device fingerprint, built by the table format's own builder."""
    v1 = make_table(grid)
    return new_table_document(
        workload=v1["workload"],
        model=None,
        device=device or FINGERPRINT,
        software=SOFTWARE,
        protocol={"passes": 2, "min_repeats": 15},
        grid=v1["grid"],
        parts=v1["parts"],
        sweep={"layout": "in-context-pairs/v2", "records": [], "shard": None},
        complete=True,
        created="2026-01-01T00:00:00Z",
    )


def calibration(factors: Mapping[str, float] | None = None) -> dict:
    """A calibration section as `profiler calibrate` writes it."""
    figures = {"median_ape_pct": 3.0, "p95_ape_pct": 6.0, "max_ape_pct": 9.0}
    return {
        "method": "least-squares/v1",
        "factors": dict(factors or {"attn_qk": 1.05, "attn_v": 1.02, "mlp": 0.98, "stem": 1.0, "head": 1.0}),
        "block_ms": 0.01,
        "model_ms": 0.2,
        "fitted": {"created": "2026-01-02T00:00:00Z", "models": 20, "blocks": 12},
        "before": figures,
        "after": {**figures, "median_ape_pct": 1.0},
    }
