"""The measurement protocol: warm up by time, repeat to a minimum count and duration, keep median and spread.

Backends only supply a `Runner` — run n iterations back to back and return the elapsed milliseconds measured
the backend's own way (CUDA events on the stream, perf_counter_ns on the CPU). Everything statistical lives here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

Runner = Callable[[int], float]
"""run(n) executes n iterations back to back and returns their total elapsed time in milliseconds."""


@dataclass(frozen=True)
class Protocol:
    """Settings recorded with every table, so a reader knows how its numbers were taken."""

    warmup_s: float = 0.15
    min_repeats: int = 10
    min_duration_s: float = 0.25
    max_repeats: int = 2000
    max_duration_s: float = 4.0
    min_sample_ms: float = 0.5  # iterations are batched into samples of at least this long (timer overhead)
    max_rel_iqr: float = 0.08  # a point whose IQR/median exceeds this is re-measured, then flagged
    remeasure: int = 2
    reference_every: int = 40  # sweep points between re-times of the reference configuration

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Protocol:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def quick(cls) -> Protocol:
        """A cheap protocol for tests and the tiny preset."""
        return cls(warmup_s=0.02, min_repeats=5, min_duration_s=0.03, max_duration_s=0.5, remeasure=1)


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

    @property
    def rel_iqr(self) -> float:
        return (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else math.inf

    def as_dict(self) -> dict:
        return asdict(self)


def _sample(run: Runner, protocol: Protocol, clock: Callable[[], float]) -> Measurement:
    start = clock()
    per_iteration = run(1)
    warm_iterations = 1
    while clock() - start < protocol.warmup_s:
        per_iteration = run(1)
        warm_iterations += 1
    inner = max(1, math.ceil(protocol.min_sample_ms / max(per_iteration, 1e-6)))
    times: list[float] = []
    begin = clock()
    while True:
        times.append(run(inner) / inner)
        elapsed = clock() - begin
        enough = len(times) >= protocol.min_repeats and elapsed >= protocol.min_duration_s
        too_long = len(times) >= protocol.max_repeats or (
            elapsed >= protocol.max_duration_s and len(times) >= min(3, protocol.min_repeats)
        )
        if enough or too_long:
            break
    q = np.percentile(np.asarray(times), [10, 25, 50, 75, 90])
    return Measurement(
        median_ms=float(q[2]),
        p10_ms=float(q[0]),
        p90_ms=float(q[4]),
        q1_ms=float(q[1]),
        q3_ms=float(q[3]),
        samples=len(times),
        iterations_per_sample=inner,
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
