"""The ratio new/old of one part, fitted to a transfer's measurements and applied to the source table's cells.

A table moved to another machine keeps most of its shape: a new ISA or a bigger cache changes how fast each part
runs, and mostly by a similar factor across sizes. The ratio is fitted in log space per part, as a quadratic in the
scaled log widths of the part's own axes, ridge-pulled towards a constant ratio. How hard the pull is (down to a
constant ratio alone) is chosen per part by leave-one-out error on the measurements, the strongest pull within one
standard error of the lowest: with noisy single-pass stage times the constant ratio often predicts held-out
points as well as any curve, and a source table whose shape does not carry over shows up as a clearly lower
held-out error for a curved ratio.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lut_server.table_format import PART_AXES

RIDGES: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, math.inf)
"""The pulls tried, on features scaled to [-1, 1]; infinity keeps the constant ratio alone."""

RatioPoint = tuple[Sequence[float], float]
"""The part's axis values where a ratio was measured, and the ratio measured/source there."""


def _scaled_logs(grid: Mapping[str, list[int]], axes: Sequence[str], values: Sequence[float]) -> list[float]:
    out = []
    for axis, value in zip(axes, values, strict=True):
        lo, hi = math.log(grid[axis][0]), math.log(grid[axis][-1])
        out.append(0.0 if hi == lo else 2 * (math.log(value) - lo) / (hi - lo) - 1)
    return out


def ratio_features(grid: Mapping[str, list[int]], part: str, values: Sequence[float]) -> np.ndarray:
    """1, the scaled log widths of the part's axes, their squares and pairwise products."""
    x = _scaled_logs(grid, PART_AXES[part], values)
    squares = [v * v for v in x]
    products = [a * b for a, b in itertools.combinations(x, 2)]
    return np.array([1.0, *x, *squares, *products])


def _solve(design: np.ndarray, target: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and leave-one-out residuals of the ridge fit (the intercept is never pulled)."""
    if math.isinf(ridge):
        design = design[:, :1]
    penalty = np.sqrt(0.0 if math.isinf(ridge) else ridge) * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    gram = design.T @ design + penalty.T @ penalty
    coef = np.linalg.solve(gram, design.T @ target)
    hat = np.einsum("ij,jk,ik->i", design, np.linalg.inv(gram), design)
    loo = (target - design @ coef) / np.clip(1.0 - hat, 1e-6, None)
    return coef, loo


def fit_ratio(
    grid: Mapping[str, list[int]], part: str, points: Sequence[RatioPoint], ridges: Sequence[float] = RIDGES
) -> dict[str, Any]:
    """Fit log(new/old) of one part at each pull in `ridges`; keep the strongest pull whose leave-one-out error is
    within one standard error of the lowest (a curve must earn its place against the noise of single runs)."""
    if len(points) < 2:
        raise ValueError(f"{part}: a ratio fit needs at least 2 measurements, got {len(points)}")
    design = np.array([ratio_features(grid, part, values) for values, _ in points])
    target = np.log(np.array([ratio for _, ratio in points], dtype=float))
    tried = {}
    squared = {}
    for ridge in ridges:
        coef, loo = _solve(design, target, ridge)
        squared[ridge] = loo**2
        tried[ridge] = (float(np.sqrt(np.mean(loo**2))), coef)
    lowest = min(tried, key=lambda r: tried[r][0])
    bound = float(np.mean(squared[lowest]) + np.std(squared[lowest], ddof=1) / np.sqrt(len(points)))
    best = max(r for r in ridges if float(np.mean(squared[r])) <= bound)  # the flattest within one standard error
    coef = np.zeros(design.shape[1])
    coef[: len(tried[best][1])] = tried[best][1]
    return {
        "coef": [round(float(c), 6) for c in coef],
        "ridge": "constant" if math.isinf(best) else best,
        "points": len(points),
        "mean_ratio": round(float(np.exp(np.mean(target))), 4),
        "loo_rms_pct": round(100.0 * tried[best][0], 3),
        "loo_rms_pct_by_ridge": {
            ("constant" if math.isinf(r) else str(r)): round(100.0 * v[0], 3) for r, v in tried.items()
        },
    }


def ratio_at(grid: Mapping[str, list[int]], part: str, coef: Sequence[float], values: Sequence[float]) -> float:
    return math.exp(float(ratio_features(grid, part, values) @ np.asarray(coef)))


def apply_ratio(doc: dict[str, Any], part: str, coef: Sequence[float]) -> None:
    """Scale a part's cells (median and spread) by the fitted ratio at each cell."""
    grid = doc["grid"]
    entry = doc["parts"][part]
    axes = PART_AXES[part]
    shape = tuple(len(grid[a]) for a in axes)
    ratio = np.empty(shape)
    for index in itertools.product(*(range(n) for n in shape)):
        ratio[index] = ratio_at(grid, part, coef, [grid[a][i] for a, i in zip(axes, index, strict=True)])
    for key in ("median_ms", "p10_ms", "p90_ms"):
        if key in entry and entry[key] is not None:
            entry[key] = (np.array(entry[key], dtype=float) * ratio).round(6).tolist()
    entry["samples"] = np.zeros(shape, dtype=int).tolist()
