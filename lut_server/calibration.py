"""Whole-model calibration: a correction of a table's parts fitted to measured whole models.

The sum of a table's parts is not the model: a block inside a deep stack runs with other weights in the caches and
other work before it than the pipeline that filled the table, and the stem and head see a different memory state.
Measured whole models give the correction. The fitted form keeps the table's structure so group deltas stay
meaningful:

    Lat(model) = level · (Σ_parts f_part · Σ_blocks part(block) + f_stem · stem + f_head · head
                          + depth · block_ms + model_ms)

Several forms are fitted (one overall scale; one factor per part; factors plus constants), each by least squares
on relative error with a ridge pull of every factor towards 1 and every constant towards 0 (a few dozen models do
not pin down six free parameters on their own), and the simplest form within one standard error of the lowest
leave-one-out mean absolute relative error is kept: the absolute error is the figure a table is judged by, and
one model timed in a burst of load does not outweigh a bias every other model shows, as its square does. The raw
medians in the table are never changed; a reader applies the factors on top.
A constant fitted on models of one depth cannot tell a cost per block from a cost per model; it is kept per block,
so a model shallower than those fitted gets its share, not the whole of it (a 4-block model read from a table
calibrated on 12-block models would otherwise carry the constant of 12 blocks, 9% of its latency on the shipped
torch-cpu table). The factors are fitted at the sweep's speed; `level`, the machine's typical speed relative to
the sweep, is not fitted here but taken from the sessions the table recorded (`profiler/level_history.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

METHOD = "part-factors+constants/loo-1se-v1"
RIDGE = 0.05
"""Pull towards no correction, relative to the data's own weight (the rows are relative errors of about 1)."""

CONSTANT_KEYS = ("block_ms", "model_ms")


@dataclass(frozen=True)
class CalibrationRow:
    """One measured model: the raw table's contribution of each part, its depth, and the measured latency."""

    parts: Mapping[str, float]
    depth: int
    measured_ms: float


@dataclass(frozen=True)
class Correction:
    """Per-part factors and constants fitted at the sweep's speed, and `level`: the machine's typical speed relative
    to the sweep, which scales the whole answer (a sweep is minutes of a machine that may wander for hours)."""

    factors: dict[str, float]
    block_ms: float = 0.0
    model_ms: float = 0.0
    level: float = 1.0

    def predict(self, row: CalibrationRow) -> float:
        total = sum(self.factors.get(part, 1.0) * value for part, value in row.parts.items())
        return self.level * (total + row.depth * self.block_ms + self.model_ms)

    def as_dict(self) -> dict[str, Any]:
        """The table's `calibration` keys for this correction (`level` only when it moves answers)."""
        out: dict[str, Any] = {"factors": dict(self.factors), "block_ms": self.block_ms, "model_ms": self.model_ms}
        return out | ({"level": self.level} if self.level != 1.0 else {})


IDENTITY = Correction({})


def _form_columns(form: str, parts: Sequence[str], rows: Sequence[CalibrationRow]) -> list[str]:
    if form == "scale":
        return ["scale"]
    columns = list(parts)
    if form == "parts+constants":
        columns.append("block_ms")
        if len({r.depth for r in rows}) > 1:
            columns.append("model_ms")
    return columns


def _design(columns: list[str], rows: Sequence[CalibrationRow]) -> np.ndarray:
    matrix = np.zeros((len(rows), len(columns)))
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            if column == "scale":
                matrix[i, j] = sum(row.parts.values())
            elif column == "block_ms":
                matrix[i, j] = row.depth
            elif column == "model_ms":
                matrix[i, j] = 1.0
            else:
                matrix[i, j] = row.parts.get(column, 0.0)
    return matrix


def fit_form(form: str, parts: Sequence[str], rows: Sequence[CalibrationRow], ridge: float = RIDGE) -> Correction:
    """Least squares on relative error, ridge-pulled towards factors 1 and constants 0."""
    columns = _form_columns(form, parts, rows)
    measured = np.array([r.measured_ms for r in rows])
    design = _design(columns, rows) / measured[:, None]
    target = np.ones(len(rows))
    prior = np.array([0.0 if c in CONSTANT_KEYS else 1.0 for c in columns])
    # Constants are scaled by the typical latency (per block for `block_ms`) so one ridge weight means the same pull
    # for every column.
    typical = float(np.median(measured))
    depth = float(np.median([r.depth for r in rows]))
    scale = np.array([{"block_ms": typical / depth, "model_ms": typical}.get(c, 1.0) for c in columns])
    weight = np.sqrt(ridge * len(rows))
    penalty = weight * np.diag(1.0 / scale)
    stacked_target = np.concatenate([target, weight * prior / scale])
    coef, *_ = np.linalg.lstsq(np.vstack([design, penalty]), stacked_target, rcond=None)
    values = dict(zip(columns, (float(c) for c in coef), strict=True))
    if form == "scale":
        return Correction({part: values["scale"] for part in parts})
    return Correction(
        {part: values[part] for part in parts},
        block_ms=values.get("block_ms", 0.0),
        model_ms=values.get("model_ms", 0.0),
    )


def ape_stats(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    errors = 100.0 * np.abs(predicted - measured) / measured
    return {
        "median_ape_pct": round(float(np.median(errors)), 3),
        "p95_ape_pct": round(float(np.percentile(errors, 95)), 3),
        "max_ape_pct": round(float(errors.max()), 3),
        "signed_median_pct": round(float(np.median(100.0 * (predicted - measured) / measured)), 3),
    }


def leave_one_out(form: str, parts: Sequence[str], rows: Sequence[CalibrationRow]) -> np.ndarray:
    """Each row predicted by the form fitted on all the other rows."""
    predictions = np.empty(len(rows))
    for i in range(len(rows)):
        held_in = [r for k, r in enumerate(rows) if k != i]
        predictions[i] = fit_form(form, parts, held_in).predict(rows[i])
    return predictions


FORMS = ("none", "scale", "parts", "parts+constants")
MIN_ROWS = 6


def fit_calibration(rows: Sequence[CalibrationRow]) -> dict[str, Any]:
    """Fit every form; keep the simplest whose leave-one-out mean absolute relative error is within one standard
    error of the lowest.

    Returns the table's `calibration` object: method, the chosen form and its correction, and the error before
    (raw table) and after (leave-one-out predictions, so the figure is for models the fit did not see).
    """
    if len(rows) < MIN_ROWS:
        raise ValueError(f"calibration needs at least {MIN_ROWS} measured models, got {len(rows)}")
    parts = sorted({p for r in rows for p in r.parts})
    measured = np.array([r.measured_ms for r in rows])
    raw = np.array([IDENTITY.predict(r) for r in rows])
    scores: dict[str, tuple[float, np.ndarray]] = {}
    errors: dict[str, np.ndarray] = {}
    for form in FORMS:
        predicted = raw if form == "none" else leave_one_out(form, parts, rows)
        errors[form] = np.abs(predicted - measured) / measured
        scores[form] = (float(np.mean(errors[form])), predicted)
    lowest = min(FORMS, key=lambda f: scores[f][0])
    # The simplest form within one standard error of the lowest: with a few noisy models the richer forms win
    # leave-one-out by amounts the noise alone produces, and then fit that noise into every later answer.
    bound = scores[lowest][0] + float(np.std(errors[lowest], ddof=1) / np.sqrt(len(rows)))
    best = next(f for f in FORMS if scores[f][0] <= bound)
    correction = IDENTITY if best == "none" else fit_form(best, parts, rows)
    return {
        "method": METHOD,
        "form": best,
        **correction.as_dict(),
        "before": ape_stats(raw, measured),
        "after": ape_stats(scores[best][1], measured),
        "cross_validation": {form: round(100.0 * score, 3) for form, (score, _) in scores.items()},
        "cross_validation_bound": round(100.0 * bound, 3),
    }


def correction_of(calibration: Mapping[str, Any] | None) -> Correction:
    """The correction stored in a table (identity when the table is not calibrated)."""
    if not calibration:
        return IDENTITY
    return Correction(
        {str(k): float(v) for k, v in (calibration.get("factors") or {}).items()},
        block_ms=float(calibration.get("block_ms") or 0.0),
        model_ms=float(calibration.get("model_ms") or 0.0),
        level=float(calibration.get("level") or 1.0),
    )
