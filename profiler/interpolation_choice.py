"""Which axes a table reads as a staircase, chosen on the blocks its latest validation timed between grid values.

A GPU matrix product pads a width to its tile size, so a width just above a grid value costs what the next grid
value costs, and linear interpolation between the two predicts it low; on a CPU the cost grows with the width and
linear interpolation fits. Which it is depends on the device and the grid, so it is measured, not assumed: every
set of axes is tried on the validation's blocks (raw table, machine drift taken out), and the fewest axes whose
mean error exceeds the best set's by at most one standard error of the per-block difference are kept (linear
everywhere unless a staircase is clearly better). The difference is paired, block by block: every candidate is
judged on the same blocks, so their shared noise cancels.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from lut_server.dims import AXES, BlockDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import PART_AXES

MIN_BLOCKS = 10
"""Fewer timed blocks than this say too little to change how a table is read."""
RULE = (
    "the fewest staircase axes whose mean APE exceeds the lowest by at most one standard error of the paired "
    "per-block difference (level-normalised blocks, raw table)"
)


def timed_blocks(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The latest validation's blocks that carry a measurement."""
    return [b for b in (doc.get("validation") or {}).get("blocks") or [] if b.get("measured_ms")]


def _between(values: list[int], widths: np.ndarray) -> bool:
    """Whether some width lies strictly between two grid values (there a staircase answers otherwise)."""
    return bool(np.any(~np.isin(widths, values) & (widths > values[0]) & (widths < values[-1])))


def _ape(doc: Mapping[str, Any], steps: tuple[str, ...], blocks: list[BlockDims], measured: np.ndarray) -> np.ndarray:
    candidate = {**doc, "interpolation": {"steps": list(steps)} if steps else None}
    predicted = LatencyTable(candidate, calibrated=False).block_latency(blocks)
    return 100.0 * np.abs(predicted / measured - 1.0)


def choose_steps(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The table's `interpolation` as the latest validation's blocks choose it ({"steps": [], ...} keeps every axis
    linear), or None where the validation holds too few blocks to choose by."""
    validation = doc.get("validation") or {}
    recorded = timed_blocks(doc)
    if len(recorded) < MIN_BLOCKS:
        return None
    blocks = [BlockDims(*(int(b[a]) for a in AXES)) for b in recorded]
    measured = np.array([float(b.get("level_normalised_ms") or b["measured_ms"]) for b in recorded])
    grid = doc["grid"]
    used = {a for part in doc["parts"] for a in PART_AXES[part]}
    axes = [
        a
        for a in AXES
        if a in used and len(grid[a]) > 1 and _between(grid[a], np.array([getattr(b, a) for b in blocks]))
    ]
    candidates = [c for k in range(len(axes) + 1) for c in itertools.combinations(axes, k)]
    errors = {c: _ape(doc, c, blocks, measured) for c in candidates}
    best = min(candidates, key=lambda c: float(errors[c].mean()))
    n = len(blocks)

    excess = {c: float((errors[c] - errors[best]).mean()) for c in candidates}
    excess_se = {c: float((errors[c] - errors[best]).std(ddof=1)) / np.sqrt(n) for c in candidates}
    within = [c for c in candidates if excess[c] <= excess_se[c]]  # the best itself: 0 <= 0
    chosen = min(within, key=lambda c: (len(c), excess[c]))

    def name(c: tuple[str, ...]) -> str:
        return "+".join(c) if c else "linear"

    return {
        "steps": list(chosen),
        "chosen": {
            "validation": validation.get("created"),
            "seed": validation.get("seed"),
            "blocks": n,
            "rule": RULE,
            "best": name(best),
            "mean_ape_pct": {name(c): round(float(errors[c].mean()), 3) for c in candidates},
            "median_ape_pct": {name(c): round(float(np.median(errors[c])), 3) for c in candidates},
            "excess_over_best_pct": {name(c): round(excess[c], 3) for c in candidates},
            "excess_standard_error_pct": {name(c): round(excess_se[c], 3) for c in candidates},
        },
    }
