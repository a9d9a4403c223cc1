"""Builds valid table documents directly (no torch, no timing) with latencies from a known formula."""

from __future__ import annotations

import itertools
from typing import Any

from lut_server.table_format import FORMAT_NAME, PART_AXES

SMALL_GRID: dict[str, list[int]] = {
    "emb": [64, 128, 192],
    "heads": [1, 2, 4],
    "qk": [8, 16, 32],
    "v": [8, 16, 32],
    "mlp": [64, 256, 512],
}


def part_value(part: str, point: dict[str, int], scale: float) -> float:
    """A latency (ms) that grows with every width, so that monotone envelopes leave it unchanged."""
    emb = point.get("emb", 1)
    if part == "attn_qk":
        value = 0.01 + 1e-5 * emb * point["heads"] * point["qk"]
    elif part == "attn_v":
        value = 0.02 + 2e-5 * emb * point["heads"] * point["v"]
    elif part == "mlp":
        value = 0.03 + 1e-6 * emb * point["mlp"]
    else:  # stem, head
        value = 0.05 + 1e-4 * emb
    return value * scale


def make_table(grid: dict[str, list[int]] | None = None, scale: float = 1.0, device: str = "test-cpu") -> dict:
    """A complete table with attn_qk/attn_v/mlp block parts and stem/head; every latency is multiplied by scale."""
    grid = grid or SMALL_GRID
    parts: dict[str, Any] = {}
    for name in ("attn_qk", "attn_v", "mlp", "stem", "head"):
        axes = PART_AXES[name]

        def nested(level: int, fixed: dict[str, int], axes: tuple[str, ...] = axes, name: str = name) -> Any:
            if level == len(axes):
                return part_value(name, fixed, scale)
            return [nested(level + 1, {**fixed, axes[level]: v}) for v in grid[axes[level]]]

        parts[name] = {"axes": list(axes), "median_ms": nested(0, {})}
    return {
        "format": FORMAT_NAME,
        "version": 1,  # a version 1 document: old files must keep loading and serving
        "complete": True,
        "created": "2026-01-01T00:00:00Z",
        "workload": {"backend": "torch-cpu", "precision": "fp32", "batch": 1, "tokens": 197, "threads": 1},
        "device": {"name": device},
        "software": {"python": "3.11"},
        "protocol": {"quick": True},
        "grid": {k: list(v) for k, v in grid.items()},
        "parts": parts,
        "validation": {"median_ape_pct": 1.5, "p95_ape_pct": 4.0, "max_ape_pct": 7.0, "retest_noise_pct": 1.1},
    }


def grid_points(grid: dict[str, list[int]]) -> list[dict[str, int]]:
    axes = list(grid)
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*(grid[a] for a in axes))]
