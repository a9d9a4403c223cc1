"""Latency queries on a loaded table: vectorised multilinear interpolation of blocks, models and group deltas."""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.optimize import isotonic_regression

from lut_server.calibration import IDENTITY, correction_of
from lut_server.dims import AXES, WIDTH_AXES, BlockDims, ModelDims
from lut_server.group_size import DEFAULT_GROUP_SIZE, check_group_size, group_size_argument
from lut_server.query_error import QueryError
from lut_server.table_format import (
    BLOCK_PARTS,
    MODEL_PARTS,
    PART_AXES,
    TableFormatError,
    incomplete_reason,
    part_median,
    read_table,
    validate_table,
)
from lut_server.table_identity import cached_content_hash

__all__ = ["GroupDeltas", "LatencyTable", "QueryError", "monotone_fit"]

OVERFLOW = (
    "overflows the float range: the table's calibration (factors, level, constants) scales latencies beyond "
    "what a number can hold; refit or remove the calibration"
)


@dataclass(frozen=True)
class GroupDeltas:
    """Lat(model) − Lat(model with one dimension of one block reduced by its group size), for every such group.

    A delta is None where the reduced width would drop below 1 (the group cannot be removed).
    """

    total_ms: float
    emb: float | None
    blocks: list[dict[str, float | None]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"total_ms": self.total_ms, "emb": self.emb, "blocks": self.blocks}


def monotone_fit(values: np.ndarray, sweeps: int = 3) -> np.ndarray:
    """Values made non-decreasing along every axis, pooling violators rather than raising them.

    Timing noise can make a wider grid point look faster than a narrower one, and a pruning criterion must never
    be told that removing units slows a block down. Isotonic regression along each axis in turn (pool adjacent
    violators) averages a noisy cell with its neighbours; a running maximum afterwards guarantees monotonicity
    on every axis at once. A running maximum alone would copy one slow outlier into every wider cell.
    """
    out = values.astype(float, copy=True)
    if out.ndim == 0:
        return out
    for _ in range(sweeps):
        for axis in range(out.ndim):
            moved = np.moveaxis(out, axis, -1)
            flat = moved.reshape(-1, moved.shape[-1])
            fitted = np.array([isotonic_regression(row).x for row in flat]).reshape(moved.shape)
            out = np.moveaxis(fitted, -1, axis)
    for axis in range(out.ndim):
        out = np.maximum.accumulate(out, axis=axis)
    return out


SMALL_QUERY_POINTS = 4
"""Up to this many points a part is evaluated point by point in Python; above, by one vectorised scipy call."""


def next_grid_value(grid: Sequence[int], column: np.ndarray) -> np.ndarray:
    """Each width inside the grid's range moved up to the grid value at or above it (a staircase axis); widths below
    the grid, which only a group delta asks for, stay where they are and are extrapolated linearly."""
    values = np.asarray(grid, dtype=float)
    index = np.minimum(np.searchsorted(values, column, side="left"), len(values) - 1)
    return np.where(column >= values[0], values[index], column)


class _PartInterpolator:
    """Multilinear interpolation of one part, with singleton axes handled as exact-match axes and staircase axes
    (`interpolation.steps`) moved up to the next grid value first."""

    def __init__(self, axes: tuple[str, ...], grid: Mapping[str, list[int]], values: np.ndarray, steps: frozenset[str]):
        self.axes = axes
        self.steps = {a: list(grid[a]) for a in axes if a in steps and len(grid[a]) > 1}
        self.free = [i for i, a in enumerate(axes) if len(grid[a]) > 1]
        points = tuple(np.asarray(grid[axes[i]], dtype=float) for i in self.free)
        squeezed = values.reshape([len(grid[axes[i]]) for i in self.free]) if self.free else values.reshape(())
        self.constant = float(squeezed) if not self.free else None
        self.interp = (
            RegularGridInterpolator(points, squeezed, method="linear", bounds_error=False, fill_value=None)
            if self.free
            else None
        )
        self._grid_lists = [p.tolist() for p in points]
        self._corners = list(itertools.product((0, 1), repeat=len(self.free)))

    def __call__(self, columns: Mapping[str, np.ndarray], stepped: bool = True) -> np.ndarray:
        n = len(next(iter(columns.values())))
        if self.interp is None:
            return np.full(n, self.constant)
        if self.steps and stepped:
            columns = {a: next_grid_value(self.steps[a], c) if a in self.steps else c for a, c in columns.items()}
        if n <= SMALL_QUERY_POINTS:
            rows = [[float(columns[self.axes[i]][k]) for i in self.free] for k in range(n)]
            return np.array([self._point(row) for row in rows], dtype=float)
        xi = np.column_stack([columns[self.axes[i]] for i in self.free]).astype(float)
        return self.interp(xi)

    def _point(self, x: list[float]) -> float:
        """The same multilinear formula as RegularGridInterpolator (linear extrapolation from the edge cell), for
        one point without numpy's per-call overhead, which dominates single-block server queries."""
        lower: list[int] = []
        frac: list[float] = []
        for g, value in zip(self._grid_lists, x, strict=True):
            i = min(max(bisect_right(g, value) - 1, 0), len(g) - 2)
            lower.append(i)
            frac.append((value - g[i]) / (g[i + 1] - g[i]))
        item = self.interp.values.item
        total = 0.0
        for corner in self._corners:
            weight = 1.0
            index = []
            for k, bit in enumerate(corner):
                t = frac[k]
                weight *= t if bit else 1.0 - t
                index.append(lower[k] + bit)
            total += weight * item(*index)
        return total


def fitted_depths(calibration: Mapping[str, Any]) -> list[int] | None:
    """The depths of the models a calibration was fitted on: a model of another depth is answered by extrapolation.

    `fitted` is a free-form record, so a point without a model's blocks is skipped rather than failing the summary."""
    points = (calibration.get("fitted") or {}).get("points")
    depths = {
        len(p["dims"]["blocks"])
        for p in (points if isinstance(points, list) else [])
        if isinstance(p, Mapping) and isinstance(p.get("dims"), Mapping) and isinstance(p["dims"].get("blocks"), list)
    }
    return sorted(depths) or None


class LatencyTable:
    """A validated table that answers latency queries; the local twin of `LatencyClient`.

    Answers are calibrated (the table's whole-model correction applied on top of its parts) unless the table has
    no calibration or `calibrated=False` asks for the raw parts.
    """

    def __init__(self, data: Mapping[str, Any], table_id: str | None = None, calibrated: bool = True):
        self.data = validate_table(data)
        if not self.data["complete"]:
            raise QueryError(incomplete_reason(f"table {table_id!r}" if table_id else "the table"), "complete")
        self.table_id = table_id
        self.grid: dict[str, list[int]] = {a: list(v) for a, v in self.data["grid"].items()}
        self.ranges: dict[str, tuple[int, int]] = {
            axis: (min(self.grid[axis]), max(self.grid[axis]))
            for axis in AXES
            if any(axis in PART_AXES[p] for p in self.data["parts"])
        }
        self.steps = frozenset((self.data.get("interpolation") or {}).get("steps") or ())
        """Axes read as a staircase between grid values (`interpolation.steps`); the rest are multilinear."""
        self._parts = {
            name: _PartInterpolator(PART_AXES[name], self.grid, monotone_fit(part_median(self.data, name)), self.steps)
            for name in self.data["parts"]
        }
        self.calibration = self.data.get("calibration") if calibrated else None
        self.correction = correction_of(self.calibration) if calibrated else IDENTITY
        self.block_parts = [p for p in self._parts if p in BLOCK_PARTS]
        self.model_parts = [p for p in self._parts if p in MODEL_PARTS]
        self._check_largest_answer()

    def _check_largest_answer(self) -> None:
        """Served latencies are monotone in every width, so the narrowest and the widest block bound every answer
        in range: if either overflows, the table answers nothing (cells are bounded; only a calibration gets there)."""
        corners = {axis: np.array([float(lo), float(hi)]) for axis, (lo, hi) in self.ranges.items()}
        with np.errstate(over="ignore", invalid="ignore"):
            bounds = self._block_sum(corners) + self._model_extra(corners["emb"])
        if not np.isfinite(bounds).all():
            raise TableFormatError(
                "calibration scales latencies beyond what a number can hold (factors, level or constants too large); "
                "refit or remove it"
            )

    @classmethod
    def load(cls, path: str | Path, calibrated: bool = True) -> LatencyTable:
        path = Path(path)
        return cls(read_table(path), table_id=path.stem, calibrated=calibrated)

    # ---- metadata -------------------------------------------------------------------------------------------
    @property
    def workload(self) -> dict[str, Any]:
        return dict(self.data["workload"])

    def summary(self) -> dict[str, Any]:
        validation = self.data.get("validation") or {}
        device = self.data.get("device", {})
        return {
            "id": self.table_id,
            "device": device.get("name", "unknown"),
            "backend": self.data["workload"]["backend"],
            "precision": self.data["workload"]["precision"],
            "batch": self.data["workload"]["batch"],
            "tokens": self.data["workload"]["tokens"],
            "threads": self.data["workload"].get("threads"),
            "options": dict(self.data["workload"].get("options") or {}),
            "created": self.data.get("created"),
            "accuracy": {
                k: validation.get(k)
                for k in ("median_ape_pct", "p95_ape_pct", "max_ape_pct", "retest_noise_pct", "points")
                if k in validation
            }
            | ({"models": validation["models"]} if "models" in validation else {}),
            "ranges": {axis: list(r) for axis, r in self.ranges.items()},
            "parts": list(self._parts),
            "interpolation": {"steps": sorted(self.steps, key=AXES.index)} if self.steps else None,
            "fingerprint": {
                "device": dict(device.get("match") or {}),
                "software": dict((self.data.get("software") or {}).get("match") or {}),
            },
            "calibration": (
                {k: self.calibration.get(k) for k in ("method", "form", "before", "after")}
                | {
                    "level": float(self.calibration.get("level") or 1.0),
                    "level_spread_pct": self.calibration.get("level_spread_pct"),
                    "depths": fitted_depths(self.calibration),
                }
                if self.calibration
                else None
            ),
            "content_hash": cached_content_hash(self.data),
        }

    # ---- queries --------------------------------------------------------------------------------------------
    def _columns(self, blocks: Sequence[BlockDims] | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(blocks, np.ndarray):
            array = np.asarray(blocks)
            if array.ndim != 2 or array.shape[1] != len(AXES):
                raise QueryError(f"a block array must have shape (N, {len(AXES)}) in axis order {AXES}", "blocks")
        else:
            array = np.array([[getattr(b, a) for a in AXES] for b in blocks], dtype=float).reshape(-1, len(AXES))
        return {axis: array[:, i].astype(float) for i, axis in enumerate(AXES)}

    def check_in_range(
        self, columns: Mapping[str, np.ndarray], field_prefix: str = "blocks", model_emb: bool = False
    ) -> None:
        """Raise QueryError naming the first value outside the table's range. With `model_emb` the emb column is
        the model's one `emb`, and the error names it so rather than as the first block's."""
        for axis, (lo, hi) in self.ranges.items():
            values = columns[axis]
            bad = np.flatnonzero(~np.isfinite(values) | (values < lo) | (values > hi))
            if bad.size:
                i = int(bad[0])
                shared = model_emb and axis == "emb"
                if shared:
                    name = "emb"
                elif field_prefix == "blocks":
                    name = f"{field_prefix}[{i}].{axis}"
                else:
                    name = f"{field_prefix}.{axis}"
                raise QueryError(
                    f"{name} = {values[i]:g} is outside the table's range for {axis}: [{lo}, {hi}]"
                    + (f" ({bad.size} blocks out of range)" if bad.size > 1 and not shared else ""),
                    name,
                )

    def _model_columns(self, model: ModelDims) -> dict[str, np.ndarray]:
        columns = self._columns(model.block_dims())
        self.check_in_range(columns, model_emb=True)
        return columns

    @staticmethod
    def _finite(values: np.ndarray, what: str) -> np.ndarray:
        """JSON has no number for inf or nan: an answer must be finite or refused (cells are bounded, so only a
        calibration can push a sum past the float range)."""
        if not np.isfinite(values).all():
            raise QueryError(f"{what} {OVERFLOW}", "calibration")
        return values

    def _block_sum(self, columns: Mapping[str, np.ndarray], stepped: bool = True) -> np.ndarray:
        factors = self.correction.factors
        total = np.full(len(columns["emb"]), self.correction.block_ms)
        for name in self.block_parts:
            total += factors.get(name, 1.0) * self._parts[name](columns, stepped)
        return self.correction.level * total

    def _model_extra(self, emb: np.ndarray, stepped: bool = True) -> np.ndarray:
        factors = self.correction.factors
        total = np.full(len(emb), self.correction.model_ms)
        for name in self.model_parts:
            total += factors.get(name, 1.0) * self._parts[name]({"emb": emb}, stepped)
        return self.correction.level * total

    def raw_part_sums(self, model: ModelDims) -> dict[str, float]:
        """Each part's uncorrected contribution to a model's latency: the features a calibration is fitted on."""
        columns = self._model_columns(model)
        sums = {name: float(self._parts[name](columns).sum()) for name in self.block_parts}
        emb = {"emb": np.array([float(model.emb)])}
        return sums | {name: float(self._parts[name](emb)[0]) for name in self.model_parts}

    def part_latency(self, part: str, blocks: Sequence[BlockDims] | np.ndarray) -> np.ndarray:
        """One part's uncorrected latency for each block (stem and head by the block's EMB): what a transfer
        compares a measured stage with."""
        if part not in self._parts:
            raise QueryError(f"the table has no part {part!r}; it has {list(self._parts)}", "part")
        columns = self._columns(blocks)
        self.check_in_range(columns)
        return self._parts[part](columns)

    def block_latency(self, blocks: Sequence[BlockDims] | np.ndarray) -> np.ndarray:
        """Predicted latency in ms of each block, in order; raises QueryError when a block is out of range."""
        columns = self._columns(blocks)
        if len(columns["emb"]) == 0:
            return np.zeros(0)
        self.check_in_range(columns)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, not warned about
            latency = self._block_sum(columns)
        return self._finite(latency, "a block's latency")

    def model_latency(self, model: ModelDims) -> float:
        """Blocks plus patch embedding and head (where the table has them)."""
        columns = self._model_columns(model)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, not warned about
            total = np.array([self._block_sum(columns).sum() + self._model_extra(np.array([float(model.emb)]))[0]])
        return float(self._finite(total, "the model's latency")[0])

    def deltas(
        self,
        model: ModelDims,
        group_size: Mapping[str, int] | None = None,
        *,
        step: Mapping[str, int] | None = None,
    ) -> GroupDeltas:
        """Exact group deltas for one pruning step, all from one vectorised evaluation per part.

        `group_size` overrides the default group size of any axis (`step` is its deprecated name). A reduced width
        below the table's lower bound (but >= 1) is extrapolated linearly from the first grid cell.

        On a table with staircase axes the deltas are the differences of its linear reading, so each group carries
        its share of the step it belongs to, while `total_ms` is the model's latency as the table reads it. A
        staircase's own differences are 0 for every group but the one at a step's edge, and a pruner that removes
        a few groups at a time would never start down a step.
        """
        sizes = {**DEFAULT_GROUP_SIZE, **check_group_size(group_size_argument(group_size, step, "deltas"))}
        base = self._model_columns(model)
        n = len(base["emb"])
        variants = [base]
        for axis in WIDTH_AXES:
            reduced = dict(base)
            reduced[axis] = np.maximum(base[axis] - sizes[axis], 1.0)
            variants.append(reduced)
        emb_reduced = dict(base)
        emb_reduced["emb"] = np.maximum(base["emb"] - sizes["emb"], 1.0)
        variants.append(emb_reduced)
        stacked = {axis: np.concatenate([v[axis] for v in variants]) for axis in AXES}
        embs = np.array([float(model.emb), max(model.emb - sizes["emb"], 1.0)])
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, not warned about
            latency = self._block_sum(stacked, stepped=False).reshape(len(variants), n)
            extra_base, extra_emb = self._model_extra(embs, stepped=False)
            block_total = latency[0]
            saved = block_total - latency[1 : 1 + len(WIDTH_AXES)]  # (axes, blocks): what one group's removal saves
            linear_total = block_total.sum() + extra_base
            emb_delta = linear_total - (latency[-1].sum() + extra_emb) if model.emb - sizes["emb"] >= 1 else None
            total = linear_total
            if self.steps:
                total = self._block_sum(base).sum() + self._model_extra(embs[:1])[0]
        self._finite(latency, "a block's latency")
        self._finite(saved, "a group delta")
        self._finite(np.array([total, 0.0 if emb_delta is None else emb_delta]), "the model's latency")
        removable = [base[axis] - sizes[axis] >= 1 for axis in WIDTH_AXES]
        blocks: list[dict[str, float | None]] = [
            {axis: float(saved[k, i]) if removable[k][i] else None for k, axis in enumerate(WIDTH_AXES)}
            for i in range(n)
        ]
        return GroupDeltas(total_ms=float(total), emb=None if emb_delta is None else float(emb_delta), blocks=blocks)
