"""The measurement protocol: warm up by time, repeat to a minimum count and duration, keep median and spread.

Backends only supply a `Runner` — run n iterations back to back and return the elapsed milliseconds measured
the backend's own way (CUDA events on the stream, perf_counter_ns on the CPU). Everything statistical lives here.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

Runner = Callable[[int], "float | np.ndarray"]
"""run(n) executes n iterations back to back and returns their elapsed milliseconds: a float, or one total per
stage when the runner times a pipeline of stages (the stages of a block, timed inside the running block)."""


@dataclass(frozen=True)
class Protocol:
    """Settings recorded with every table, so a reader knows how its numbers were taken."""

    warmup_s: float = 0.3
    min_repeats: int = 15
    min_duration_s: float = 0.5
    max_repeats: int = 2000
    max_duration_s: float = 4.0
    min_sample_ms: float = 0.5  # iterations are batched into samples of at least this long (timer overhead)
    max_rel_iqr: float = 0.10  # a run whose IQR/median exceeds this is re-measured (in a later pass), then flagged
    remeasure: int = 0  # immediate re-measurements of a wide run; the sweep defers them to an extra pass instead
    reference_every: int = 40  # blocks timed between re-times of the reference pair
    passes: int = 2  # each sweep run is measured in this many separately shuffled passes
    max_pass_gap: float = 0.10  # passes further apart than this (relative) get one more pass

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Protocol:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def quick(cls) -> Protocol:
        """A cheap protocol for tests and the tiny preset."""
        return cls(warmup_s=0.02, min_repeats=5, min_duration_s=0.03, max_duration_s=0.5, remeasure=0, passes=1)


@dataclass(frozen=True)
class Measurement:
    median_ms: float
    p10_ms: float
    p90_ms: float
    q1_ms: float
    q3_ms: float
    samples: int
    iterations_per_sample: int
    attempts: int = 1
    flagged: bool = False
    stage_median_ms: tuple[float, ...] = ()
    stage_p10_ms: tuple[float, ...] = ()
    stage_p90_ms: tuple[float, ...] = ()

    @property
    def rel_iqr(self) -> float:
        return (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else math.inf

    def as_dict(self) -> dict:
        return asdict(self)


WARM_CALLS = 2
"""Calls after the first that warm-up always makes: the first call of a runner pays one-time costs (cuBLAS/cuDNN
handles, lazy module loading, autotuning) that can outlast warmup_s, and must neither end the warm-up nor size the
samples."""


def _sample(run: Runner, protocol: Protocol, clock: Callable[[], float]) -> Measurement:
    run(1)  # the cold call: one-time costs, not timed for anything
    start = clock()
    warm_calls = 0
    per_iteration = math.inf
    while warm_calls < WARM_CALLS or clock() - start < protocol.warmup_s:
        per_iteration = float(np.sum(run(1)))
        warm_calls += 1
    inner = max(1, math.ceil(protocol.min_sample_ms / max(per_iteration, 1e-6)))
    rows: list[np.ndarray] = []
    begin = clock()
    while True:
        rows.append(np.atleast_1d(np.asarray(run(inner), dtype=float)) / inner)
        elapsed = clock() - begin
        enough = len(rows) >= protocol.min_repeats and elapsed >= protocol.min_duration_s
        too_long = len(rows) >= protocol.max_repeats or (
            elapsed >= protocol.max_duration_s and len(rows) >= min(3, protocol.min_repeats)
        )
        if enough or too_long:
            break
    stages = np.vstack(rows)
    q = np.percentile(stages.sum(axis=1), [10, 25, 50, 75, 90])
    per_stage = np.percentile(stages, [10, 50, 90], axis=0)
    return Measurement(
        median_ms=float(q[2]),
        p10_ms=float(q[0]),
        p90_ms=float(q[4]),
        q1_ms=float(q[1]),
        q3_ms=float(q[3]),
        samples=len(rows),
        iterations_per_sample=inner,
        stage_median_ms=tuple(float(x) for x in per_stage[1]),
        stage_p10_ms=tuple(float(x) for x in per_stage[0]),
        stage_p90_ms=tuple(float(x) for x in per_stage[2]),
    )


def measure(run: Runner, protocol: Protocol, clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Measure, re-measure while the spread is too wide, keep the tightest attempt and flag it if still wide."""
    best = _sample(run, protocol, clock)
    attempts = 1
    while best.rel_iqr > protocol.max_rel_iqr and attempts <= protocol.remeasure:
        attempts += 1
        again = _sample(run, protocol, clock)
        if again.rel_iqr < best.rel_iqr:
            best = again
    return Measurement(**{**best.as_dict(), "attempts": attempts, "flagged": best.rel_iqr > protocol.max_rel_iqr})


def combine_passes(values: list[float]) -> float:
    """One value from a run's passes: the mean of two that agree, the median of three or more."""
    return float(np.mean(values)) if len(values) <= 2 else float(np.median(values))


def passes_disagree(values: list[float], max_gap: float) -> bool:
    return len(values) >= 2 and (max(values) - min(values)) / min(values) > max_gap


def measure_in_passes(
    jobs: list[Callable[[], Runner]],
    protocol: Protocol,
    rng: random.Random,
    on_measured: Callable[[], None] = lambda: None,
) -> tuple[list[float], int]:
    """Median latency of each job, measured in `protocol.passes` separately shuffled passes over all jobs (so a
    burst of load hits one pass of a few jobs, not every pass of one), plus one more pass for jobs whose passes
    disagree or whose spread was too wide.

    Returns the combined medians in job order and the number of measurements taken.
    """
    results: list[list[float]] = [[] for _ in jobs]
    wide = [False] * len(jobs)
    count = 0

    def run_pass(indices: list[int]) -> None:
        nonlocal count
        rng.shuffle(indices)
        for i in indices:
            m = measure(jobs[i](), protocol)
            results[i].append(m.median_ms)
            wide[i] = wide[i] or m.rel_iqr > protocol.max_rel_iqr
            count += m.attempts
            on_measured()

    for _ in range(max(1, protocol.passes)):
        run_pass(list(range(len(jobs))))
    if protocol.passes >= 2:
        run_pass([i for i, v in enumerate(results) if wide[i] or passes_disagree(v, protocol.max_pass_gap)])
    return [combine_passes(values) for values in results], count
