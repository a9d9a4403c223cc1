"""The level a validation divides each measurement by follows the machine, and not a burst on one re-time."""

from __future__ import annotations

import random

import pytest

from profiler.machine_level import measure_tracking_level, running_median_of_three
from profiler.timing import Protocol

PROTOCOL = Protocol(warmup_s=0.0, min_repeats=3, min_duration_s=0.0, max_duration_s=0.05, passes=1)
REFERENCE_MS = 10.0
JOB_MS = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 11.0, 12.0, 13.0, 14.0]


class Machine:
    """Runs jobs and reference re-times in order; `slowdown(reference, event)` says how slow the `event`-th run
    (jobs and re-times counted alike) ran, `reference` being the re-time's index, or None for a job."""

    def __init__(self, slowdown) -> None:
        self.slowdown = slowdown
        self.events = 0
        self.references = 0

    def runner(self, ms: float, is_reference: bool):
        factor = self.slowdown(self.references if is_reference else None, self.events)
        self.events += 1
        self.references += is_reference
        return lambda n: n * ms * factor

    def measure(self, every: int = 3):
        jobs = [lambda ms=ms: self.runner(ms, False) for ms in JOB_MS]
        return measure_tracking_level(
            jobs, lambda: self.runner(REFERENCE_MS, True), REFERENCE_MS, PROTOCOL, random.Random(4), every=every
        )


def test_running_median_of_three_outvotes_one_burst_and_keeps_a_lasting_change():
    assert running_median_of_three([10, 10, 15, 10, 10]).tolist() == [10, 10, 10, 10, 10]
    assert running_median_of_three([10, 10, 10, 15, 15, 15]).tolist() == [10, 10, 10, 15, 15, 15]
    assert running_median_of_three([10, 16]).tolist() == [13, 13]  # two: their mean


def test_a_burst_on_one_reference_re_time_leaves_the_jobs_around_it_as_measured():
    # the third re-time ran 1.5x slow, nothing else did: the jobs beside it were not slowed and must not be scaled
    machine = Machine(lambda reference, event: 1.5 if reference == 2 else 1.0)
    levelled = machine.measure()
    assert max(s["level"] for s in levelled.series) == pytest.approx(1.5)  # the burst is still reported
    assert sorted(levelled.normalised()) == pytest.approx(JOB_MS)


def test_a_machine_that_slows_down_for_good_is_followed():
    # from the 9th event on (jobs and re-times alike), everything runs 1.3x slower
    machine = Machine(lambda reference, event: 1.3 if event >= 8 else 1.0)
    levelled = machine.measure()
    raw, normalised = levelled.raw(), levelled.normalised()
    slowed = [i for i, (r, ms) in enumerate(zip(raw, JOB_MS, strict=True)) if r == pytest.approx(1.3 * ms)]
    assert len(slowed) >= 6  # most of the jobs ran after the change
    settled = [i for i in slowed if min(levelled.levels[i]) > 1.29]  # past the re-time that straddles the change
    assert len(settled) >= 4
    for i in settled:
        assert normalised[i] == pytest.approx(JOB_MS[i])
