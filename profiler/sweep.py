"""A resumable sweep over a grid: every finished point is persisted atomically before the next one starts.

Points are visited in a shuffled order (so slow drift of a shared machine spreads as noise, not as a slope along
an axis) and a reference block is re-timed periodically to record that drift.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lut_server.table_format import FORMAT_NAME, FORMAT_VERSION, PART_AXES, read_table, write_table
from profiler.backends import Backend
from profiler.environment import utc_now
from profiler.grids import GridSpec
from profiler.timing import Measurement, Protocol, measure
from profiler.workload import Workload, build_part

Cell = tuple[str, tuple[int, ...]]


class SweepMismatch(ValueError):
    """A partial table whose settings differ from the requested sweep; mixing them would corrupt the table."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like i/n (e.g. 0/3), got {text!r}") from None
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"--shard {text}: need 0 <= i < n")
        return cls(i, n)

    def as_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def plan_cells(spec: GridSpec) -> list[Cell]:
    """Every cell of every part, in a fixed order (shards slice this order)."""
    cells: list[Cell] = []
    for part in spec.parts:
        shape = [len(spec.grid[a]) for a in PART_AXES[part]]
        cells.extend((part, index) for index in itertools.product(*(range(n) for n in shape)))
    return cells


def cell_dims(spec: GridSpec, cell: Cell) -> dict[str, int]:
    part, index = cell
    return {axis: spec.grid[axis][i] for axis, i in zip(PART_AXES[part], index, strict=True)}


def reference_dims(spec: GridSpec) -> dict[str, int]:
    """A mid-grid whole block, re-timed through the sweep to record drift."""
    return {axis: values[len(values) // 2] for axis, values in spec.grid.items()}


def workload_settings(backend: Backend, workload: Workload) -> dict[str, Any]:
    return {**backend.settings(), "batch": workload.batch, "tokens": workload.tokens}


def _empty(shape: list[int]) -> list:
    return np.full(shape, None, dtype=object).tolist()


def new_table(backend: Backend, workload: Workload, spec: GridSpec, protocol: Protocol, shard: Shard | None) -> dict:
    env = backend.environment()
    parts = {}
    for part in spec.parts:
        shape = [len(spec.grid[a]) for a in PART_AXES[part]]
        parts[part] = {
            "axes": list(PART_AXES[part]),
            "median_ms": _empty(shape),
            "p10_ms": _empty(shape),
            "p90_ms": _empty(shape),
            "samples": _empty(shape),
        }
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "complete": False,
        "created": utc_now(),
        "workload": workload_settings(backend, workload),
        "model": workload.model.as_dict() if workload.model and {"stem", "head"} & set(spec.parts) else None,
        "device": env["device"],
        "software": env["software"],
        "protocol": protocol.as_dict(),
        "grid": spec.grid,
        "parts": parts,
        "sweep": {
            "measurements": 0,
            "points_done": 0,
            "points_total": len(plan_cells(spec)),
            "wall_s": 0.0,
            "shard": shard.as_dict() if shard else None,
            "seed": None,
            "reference": {"dims": reference_dims(spec), "series": []},
            "flagged": [],
        },
        "validation": None,
    }


def check_resumable(doc: dict, fresh: dict) -> None:
    """Refuse to continue a partial table measured with other settings, on another device or grid."""
    checks = {
        "workload": (doc.get("workload"), fresh["workload"]),
        "device": ((doc.get("device") or {}).get("name"), fresh["device"].get("name")),
        "model": (doc.get("model"), fresh["model"]),
        "grid": (doc.get("grid"), fresh["grid"]),
        "parts": (sorted(doc.get("parts", {})), sorted(fresh["parts"])),
        "shard": ((doc.get("sweep") or {}).get("shard"), fresh["sweep"]["shard"]),
    }
    for name, (old, new) in checks.items():
        if old != new:
            raise SweepMismatch(f"cannot resume: the partial table's {name} is {old!r}, this sweep's is {new!r}")


def is_measured(doc: dict, cell: Cell) -> bool:
    part, index = cell
    value = doc["parts"][part]["median_ms"]
    for i in index:
        value = value[i]
    return value is not None


def _store(doc: dict, cell: Cell, m: Measurement) -> None:
    part, index = cell
    entry = doc["parts"][part]
    for key, value in (
        ("median_ms", m.median_ms),
        ("p10_ms", m.p10_ms),
        ("p90_ms", m.p90_ms),
        ("samples", m.samples),
    ):
        target = entry[key]
        for i in index[:-1]:
            target = target[i]
        target[index[-1]] = value


class Sweep:
    """Measure the cells a table (or a shard of it) still lacks; persist after each one."""

    def __init__(
        self,
        out: Path,
        backend: Backend,
        workload: Workload,
        spec: GridSpec,
        protocol: Protocol,
        resume: bool = False,
        shard: Shard | None = None,
        seed: int = 0,
    ):
        self.out = Path(out)
        self.backend, self.workload, self.spec, self.protocol = backend, workload, spec, protocol
        self.shard = shard
        self.seed = seed
        fresh = new_table(backend, workload, spec, protocol, shard)
        if self.out.exists():
            if not resume:
                raise FileExistsError(f"{self.out} exists; pass --resume to continue it or remove it first")
            self.doc = read_table(self.out)
            check_resumable(self.doc, fresh)
        else:
            self.doc = fresh
            self.doc["sweep"]["seed"] = seed

    def todo(self) -> list[Cell]:
        cells = plan_cells(self.spec)
        if self.shard:
            cells = cells[self.shard.index :: self.shard.count]
        remaining = [c for c in cells if not is_measured(self.doc, c)]
        random.Random(self.doc["sweep"].get("seed") or self.seed).shuffle(remaining)
        return remaining

    def _persist(self) -> None:
        write_table(self.out, self.doc)

    def _time_reference(self, elapsed_before: float, started: float) -> None:
        module, inputs = build_part("block", self.doc["sweep"]["reference"]["dims"], self.workload)
        m = measure(self.backend.prepare(module, inputs), self.protocol)
        sweep = self.doc["sweep"]
        sweep["measurements"] += m.attempts
        sweep["reference"]["series"].append(
            {
                "at_s": round(elapsed_before + time.perf_counter() - started, 2),
                "median_ms": m.median_ms,
                "points_done": sweep["points_done"],
            }
        )
        medians = [p["median_ms"] for p in sweep["reference"]["series"]]
        sweep["reference"]["drift_pct"] = 100 * (max(medians) - min(medians)) / medians[0]

    def run(self, progress: bool = True) -> dict:
        todo = self.todo()
        sweep = self.doc["sweep"]
        elapsed_before = float(sweep.get("wall_s", 0.0))
        started = time.perf_counter()
        every = max(1, self.protocol.reference_every)
        bar = tqdm(
            total=len(todo),
            desc=f"profile {self.out.name}",
            unit="pt",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            if todo:
                self._time_reference(elapsed_before, started)
            for k, cell in enumerate(todo, start=1):
                module, inputs = build_part(cell[0], cell_dims(self.spec, cell), self.workload)
                m = measure(self.backend.prepare(module, inputs), self.protocol)
                _store(self.doc, cell, m)
                sweep["measurements"] += m.attempts
                sweep["points_done"] += 1
                if m.flagged:
                    sweep["flagged"].append(
                        {"part": cell[0], "dims": cell_dims(self.spec, cell), "rel_iqr": round(m.rel_iqr, 4)}
                    )
                if k % every == 0 or k == len(todo):
                    self._time_reference(elapsed_before, started)
                sweep["wall_s"] = round(elapsed_before + time.perf_counter() - started, 2)
                self.doc["complete"] = self.shard is None and sweep["points_done"] == sweep["points_total"]
                self._persist()
                bar.update(1)
        finally:
            bar.close()
        if not todo:
            self.doc["complete"] = self.shard is None and all(is_measured(self.doc, c) for c in plan_cells(self.spec))
            self._persist()
        return self.doc


def grid_step_monotonicity(doc: dict) -> float:
    """Share of neighbouring grid steps that get faster as a width grows (noise indicator), in percent."""
    backwards = total = 0
    for part in doc["parts"].values():
        values = np.array(part["median_ms"], dtype=float)
        for axis in range(values.ndim):
            diff = np.diff(values, axis=axis)
            ok = np.isfinite(diff)
            total += int(ok.sum())
            backwards += int((diff[ok] < 0).sum())
    return 100.0 * backwards / total if total else math.nan
