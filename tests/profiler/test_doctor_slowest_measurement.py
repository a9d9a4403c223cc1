"""`doctor` does not start a measurement that would overrun its budget: one is skipped when the time left is less
than the slowest measurement so far, not only once the deadline has passed."""

from __future__ import annotations

import time

from profiler.backends import create_backend
from profiler.doctor import STOPPED, TimeBudget, time_backend


def test_a_measurement_fits_while_the_time_left_covers_the_slowest_so_far() -> None:
    assert TimeBudget(None, 5.0).fits(100.0)
    assert TimeBudget(10.0, 6.0).fits(4.0)  # 6 s left, slowest 6 s
    assert not TimeBudget(10.0, 6.0).fits(4.5)  # 5.5 s left: the next one would overrun by up to 0.5 s
    assert not TimeBudget(10.0).fits(11.0)  # past the deadline
    assert TimeBudget(10.0).fits(9.0)  # nothing timed yet
    budget = TimeBudget(10.0)
    budget.took(2.0)
    budget.took(1.0)
    assert budget.slowest_s == 2.0 and budget.fits(8.0) and not budget.fits(8.5)


def test_a_measurement_that_would_overrun_is_not_started() -> None:
    backend = create_backend("torch-cpu", "fp32", 1)
    started = time.perf_counter()
    # The first measurement takes >= 0.35 s (warm-up + 0.25 s), so less than that is left of 0.6 s after it.
    timing = time_backend(backend, TimeBudget(started + 0.6))
    took = time.perf_counter() - started
    assert timing["parts_ms"] is not None and timing["parts_sum_ms"] > 0
    assert timing["block_ms"] is None and timing["model_ms"] is None
    assert timing["stopped"].startswith(STOPPED) and "block" in timing["stopped"]
    assert took < 3.0
