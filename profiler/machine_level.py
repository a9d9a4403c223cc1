"""The machine's speed level while measuring, from a reference configuration re-timed between the measurements.

A shared VM changes speed by several percent over minutes (its sweep's reference re-times wander that much). A
measurement taken in a slow minute compared with a table profiled in a fast one mixes two things: the table's
error and the machine's drift. Re-timing the table's reference configuration (two reference blocks between stem
and head, exactly as the sweep ran it) every few measurements gives the level at each moment — measured reference
over the table's own cells for it — and dividing a measurement by the level around it separates the two. Both
figures are reported; `profiler check` reports the drift itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lut_server.dims import BlockDims
from lut_server.table_format import part_median
from profiler.backends import Backend
from profiler.timing import Protocol, Runner, combine_passes, measure, passes_disagree
from profiler.workload import Workload, block_stages_of, build_pipeline

REFERENCE_EVERY = 8
"""Measurements between two re-times of the reference (about 10% more time for a level every few seconds)."""


def running_median_of_three(values: list[float] | np.ndarray) -> np.ndarray:
    """Each re-time replaced by the median of it and its neighbours (two at the ends).

    A burst of load that hits one re-time of the reference is outvoted by the two around it; dividing the jobs
    next to it by that re-time would move them by as much as the burst did, though they did not run in it.
    """
    ms = np.asarray(values, dtype=float)
    return np.array([np.median(ms[max(0, i - 1) : i + 2]) for i in range(len(ms))])


def _cell_index(grid: Mapping[str, list[int]], axes: list[str], dims: BlockDims) -> tuple[int, ...]:
    return tuple(grid[axis].index(getattr(dims, axis)) for axis in axes)


def predicted_pair_ms(doc: Mapping[str, Any], dims: BlockDims) -> float:
    """Two blocks of `dims` (on the grid) between the stem and the head, from the table's raw cells."""
    grid, parts = doc["grid"], doc["parts"]
    total = 0.0
    for name in block_stages_of(parts):
        total += 2 * float(part_median(doc, name)[_cell_index(grid, parts[name]["axes"], dims)])
    for name in ("stem", "head"):
        if name in parts:
            total += float(part_median(doc, name)[grid["emb"].index(dims.emb)])
    return total


def reference_runner(doc: Mapping[str, Any], backend: Backend, workload: Workload) -> Callable[[], Runner]:
    """A factory of the runner that times the table's reference pair the way its sweep did."""
    reference = BlockDims(**doc["sweep"]["reference"]["dims"])
    with_model = bool({"stem", "head"} & set(doc["parts"]))

    def make() -> Runner:
        _, stages, inputs = build_pipeline(
            [reference, reference], workload, with_model, block_stages=block_stages_of(doc["parts"])
        )
        return backend.prepare_pipeline(stages, inputs)

    return make


def has_reference(doc: Mapping[str, Any]) -> bool:
    sweep = doc.get("sweep") or {}
    dims = (sweep.get("reference") or {}).get("dims")
    if not dims:
        return False
    try:
        predicted_pair_ms(doc, BlockDims(**dims))
    except (KeyError, ValueError, IndexError):
        return False
    return True


@dataclass
class LevelledMeasurements:
    """Per job: its measurements (one per pass) and the machine level around each; the reference series."""

    values: list[list[float]]
    levels: list[list[float]]
    series: list[dict[str, float]] = field(default_factory=list)
    count: int = 0
    stages: list[list[tuple[float, ...]]] = field(default_factory=list)
    """Per job and pass: the per-stage medians, for runners that time a pipeline of stages."""
    reference_stages: list[tuple[float, ...]] = field(default_factory=list)
    """Per re-time of the reference, in the order of `series`: its per-stage medians."""

    def raw(self) -> list[float]:
        return [combine_passes(v) for v in self.values]

    def normalised(self) -> list[float]:
        pairs = zip(self.values, self.levels, strict=True)
        return [combine_passes([x / lv for x, lv in zip(v, lvs, strict=True)]) for v, lvs in pairs]

    def normalised_stages(self) -> list[np.ndarray]:
        """Per job: its per-stage medians divided by the level around each pass, combined over the passes."""
        out = []
        for stages, levels in zip(self.stages, self.levels, strict=True):
            scaled = np.array([np.asarray(s) / lv for s, lv in zip(stages, levels, strict=True)])
            out.append(scaled.mean(axis=0) if len(scaled) <= 2 else np.median(scaled, axis=0))
        return out

    def level_stats(self) -> dict[str, float]:
        levels = np.array([s["level"] for s in self.series])
        return {
            "median_pct": round(100.0 * (float(np.median(levels)) - 1.0), 3),
            "min_pct": round(100.0 * (float(levels.min()) - 1.0), 3),
            "max_pct": round(100.0 * (float(levels.max()) - 1.0), 3),
            "reference_times": len(levels),
        }


def measure_tracking_level(
    jobs: list[Callable[[], Runner]],
    reference: Callable[[], Runner],
    reference_ms: float,
    protocol: Protocol,
    rng: random.Random,
    on_measured: Callable[[], None] = lambda: None,
    every: int = REFERENCE_EVERY,
) -> LevelledMeasurements:
    """Like `timing.measure_in_passes` (shuffled passes, one more for jobs whose passes disagree), with the reference
    re-timed before the first job, every `every` jobs and after the last; each job's level is the running median of
    three consecutive re-times (`running_median_of_three`), interpolated at the job's position, as the sweep's."""
    events: list[tuple[int, float]] = []  # (job index or -1 for the reference, median ms), in time order
    stage_events: list[tuple[float, ...]] = []
    count = 0

    def time_once(make: Callable[[], Runner]) -> float:
        nonlocal count
        m = measure(make(), protocol)
        count += m.attempts
        stage_events.append(m.stage_median_ms)
        return m.median_ms

    def run_pass(indices: list[int]) -> None:
        rng.shuffle(indices)
        for k, i in enumerate(indices):
            if k % every == 0:
                events.append((-1, time_once(reference)))
            events.append((i, time_once(jobs[i])))
            on_measured()

    values: list[list[float]] = [[] for _ in jobs]
    for _ in range(max(1, protocol.passes)):
        run_pass(list(range(len(jobs))))
    if protocol.passes >= 2:
        seen: list[list[float]] = [[] for _ in jobs]
        for i, v in events:
            if i >= 0:
                seen[i].append(v)
        run_pass([i for i, v in enumerate(seen) if passes_disagree(v, protocol.max_pass_gap)])
    events.append((-1, time_once(reference)))

    levels: list[list[float]] = [[] for _ in jobs]
    stages: list[list[tuple[float, ...]]] = [[] for _ in jobs]
    reference_positions = [k for k, (i, _) in enumerate(events) if i < 0]
    series = [
        {"order": k, "median_ms": events[k][1], "level": events[k][1] / reference_ms} for k in reference_positions
    ]
    smooth = running_median_of_three([events[k][1] for k in reference_positions]) / reference_ms
    for k, (i, v) in enumerate(events):
        if i < 0:
            continue
        values[i].append(v)
        stages[i].append(stage_events[k])
        levels[i].append(float(np.interp(k, reference_positions, smooth)))
    reference_stages = [stage_events[k] for k in reference_positions]
    return LevelledMeasurements(values, levels, series, count, stages, reference_stages)
