"""The protocol's statistics and re-measure rules, driven by a scripted runner: the elapsed times must be known to
check the arithmetic (tests/profiler/backends/ time the real backends)."""

import itertools

import pytest

from profiler.timing import Protocol, measure


class ScriptedRunner:
    """Returns per-iteration times from a script; the clock advances by what it returns."""

    def __init__(self, per_iteration_ms):
        self.script = itertools.cycle(per_iteration_ms)
        self.now = 0.0
        self.calls: list[int] = []

    def __call__(self, iterations: int) -> float:
        self.calls.append(iterations)
        elapsed = sum(next(self.script) for _ in range(iterations))
        self.now += elapsed / 1e3
        return elapsed

    def clock(self) -> float:
        return self.now


def test_warmup_by_time_then_minimum_count_and_duration():
    runner = ScriptedRunner([2.0])
    p = Protocol(warmup_s=0.1, min_repeats=10, min_duration_s=0.2, min_sample_ms=0.5, max_rel_iqr=0.1)
    m = measure(runner, p, clock=runner.clock)
    assert m.median_ms == pytest.approx(2.0) and m.p10_ms == m.p90_ms == pytest.approx(2.0)
    assert m.samples == 100  # 0.2 s of 2 ms samples, more than the minimum 10
    assert m.iterations_per_sample == 1
    warmup_calls = len(runner.calls) - m.samples
    assert warmup_calls == 51  # the cold call, then 0.1 s of warm-up at 2 ms per call
    assert not m.flagged and m.attempts == 1


def test_short_iterations_are_batched_into_samples():
    runner = ScriptedRunner([0.01])
    m = measure(runner, Protocol(warmup_s=0.0, min_repeats=5, min_duration_s=0.0, min_sample_ms=0.5), runner.clock)
    assert m.iterations_per_sample == 50
    assert m.median_ms == pytest.approx(0.01)


def test_wide_points_are_remeasured_then_flagged():
    runner = ScriptedRunner([1.0, 3.0])  # IQR/median = 1.0 on every attempt
    p = Protocol(warmup_s=0.0, min_repeats=20, min_duration_s=0.0, min_sample_ms=0.0, max_rel_iqr=0.1, remeasure=2)
    m = measure(runner, p, clock=runner.clock)
    assert m.attempts == 3 and m.flagged
    assert m.p10_ms == pytest.approx(1.0) and m.p90_ms == pytest.approx(3.0)


def test_max_duration_bounds_a_slow_point():
    runner = ScriptedRunner([1000.0])
    p = Protocol(warmup_s=0.0, min_repeats=50, min_duration_s=0.1, max_duration_s=2.0, min_sample_ms=0.0)
    m = measure(runner, p, clock=runner.clock)
    assert m.samples == 3  # stopped by max_duration_s after the 3-sample floor


class ColdStartRunner(ScriptedRunner):
    """The first iteration pays a one-time cost (library initialisation), every later one is fast."""

    def __init__(self, cold_ms: float, warm_ms: float):
        super().__init__([warm_ms])
        self.cold_ms = cold_ms

    def __call__(self, iterations: int) -> float:
        if not self.calls:
            self.calls.append(iterations)
            self.now += self.cold_ms / 1e3
            return self.cold_ms + super().__call__(iterations - 1) if iterations > 1 else self.cold_ms
        return super().__call__(iterations)


def test_a_cold_first_call_longer_than_the_warmup_neither_ends_it_nor_sizes_the_samples():
    runner = ColdStartRunner(cold_ms=500.0, warm_ms=0.01)
    p = Protocol(warmup_s=0.1, min_repeats=5, min_duration_s=0.0, min_sample_ms=0.5)
    m = measure(runner, p, clock=runner.clock)
    warmup = runner.calls[: len(runner.calls) - m.samples]
    assert len(warmup) >= 3  # the cold call and warm calls after it
    assert m.iterations_per_sample == 50  # sized from a warm call (0.5 ms / 0.01 ms), not the 500 ms cold one
    assert m.median_ms == pytest.approx(0.01)
