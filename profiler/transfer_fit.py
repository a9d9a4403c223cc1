"""The ratio new/old of one part, fitted to a transfer's measurements and applied to the source table's cells.

A table moved to another machine keeps most of its shape: a new ISA or a bigger cache changes how fast each part
runs, and mostly by a similar factor across sizes. The ratio is fitted in log space per part, as a quadratic in the
scaled log widths of the part's own axes, ridge-pulled towards a constant ratio. How hard the pull is (down to a
constant ratio alone) is chosen per part by leave-one-out error on the measurements, the strongest pull within one
standard error of the lowest: with noisy single-pass stage times the constant ratio often predicts held-out
points as well as any curve, and a source table whose shape does not carry over shows up as a clearly lower
held-out error for a curved ratio.

The fit is a median fit (least absolute deviations), not least squares. On a shared machine a burst of load only
ever slows a run, and a run hit by one the reference re-times did not see stays slow after levelling: the noise
is one-sided and heavy, and a mean follows it where a median does not (the sweep's cells are medians of passes for
the same reason).
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


LAD_SMOOTHING = 0.1
"""Residuals below this fraction of their robust spread are weighed as in least squares (a Huber loss this close to
absolute deviations keeps the reweighting iterations from dividing by residuals near zero)."""
LAD_ITERATIONS = 50


def _solve(design: np.ndarray, target: np.ndarray, weights: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and leave-one-out residuals of the weighted ridge fit (the intercept is never pulled)."""
    if math.isinf(ridge):
        design = design[:, :1]
    penalty = (0.0 if math.isinf(ridge) else ridge) * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    inverse = np.linalg.inv(design.T @ (weights[:, None] * design) + penalty)
    coef = inverse @ (design.T @ (weights * target))
    hat = weights * np.einsum("ij,jk,ik->i", design, inverse, design)
    loo = (target - design @ coef) / np.clip(1.0 - hat, 1e-6, None)
    return coef, loo


def _solve_lad(design: np.ndarray, target: np.ndarray, ridge: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The median fit at one pull, by iteratively reweighted least squares; the weights are kept at a mean of one, so a
    pull weighs against the data as much as in a least-squares fit."""
    weights = np.ones(len(target))
    for _ in range(LAD_ITERATIONS):
        coef, loo = _solve(design, target, weights, ridge)
        residual = np.abs(target - design[:, : len(coef)] @ coef)
        updated = np.minimum(1.0, threshold / np.maximum(residual, 1e-12))
        updated /= updated.mean()
        if np.max(np.abs(updated - weights)) < 1e-6:
            break
        weights = updated
    return coef, loo


def fit_ratio(
    grid: Mapping[str, list[int]], part: str, points: Sequence[RatioPoint], ridges: Sequence[float] = RIDGES
) -> dict[str, Any]:
    """Median-fit log(new/old) of one part at each pull in `ridges`; keep the strongest pull whose mean absolute
    leave-one-out error is within one standard error of the lowest (a curve must earn its place against the noise
    of single runs)."""
    if len(points) < 2:
        raise ValueError(f"{part}: a ratio fit needs at least 2 measurements, got {len(points)}")
    design = np.array([ratio_features(grid, part, values) for values, _ in points])
    target = np.log(np.array([ratio for _, ratio in points], dtype=float))
    spread = 1.4826 * float(np.median(np.abs(target - np.median(target))))
    threshold = max(LAD_SMOOTHING * spread, 1e-9)
    tried = {}
    for ridge in ridges:
        coef, loo = _solve_lad(design, target, ridge, threshold)
        tried[ridge] = (np.abs(loo), coef)
    lowest = min(tried, key=lambda r: float(np.mean(tried[r][0])))
    errors = tried[lowest][0]
    bound = float(np.mean(errors) + np.std(errors, ddof=1) / np.sqrt(len(points)))
    best = max(r for r in ridges if float(np.mean(tried[r][0])) <= bound)  # the flattest within one standard error
    coef = np.zeros(design.shape[1])
    coef[: len(tried[best][1])] = tried[best][1]
    return {
        "coef": [round(float(c), 6) for c in coef],
        "ridge": "constant" if math.isinf(best) else best,
        "points": len(points),
        "loss": "absolute",
        "median_ratio": round(float(np.exp(np.median(target))), 4),
        "mean_ratio": round(float(np.exp(np.mean(target))), 4),
        "loo_mae_pct": round(100.0 * float(np.mean(tried[best][0])), 3),
        "loo_mae_pct_by_ridge": {
            ("constant" if math.isinf(r) else str(r)): round(100.0 * float(np.mean(v[0])), 3) for r, v in tried.items()
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
