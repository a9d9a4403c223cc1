"""`doctor`'s slowest measurement is carried from one backend to the next: a backend's first measurement (for
TensorRT, engine builds) is not started when less time is left than the slowest one an earlier backend took.

The clock `doctor` reads is faked, and each measurement (really run) advances it by a fixed 20 s, so the budget's
arithmetic is exact; the backends and their measurements are the real ones.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from profiler import doctor
from profiler.backends import create_backend
from profiler.doctor import TimeBudget, time_backend

MEASUREMENT_S = 20.0


def test_a_backend_starts_nothing_when_an_earlier_backends_slowest_measurement_does_not_fit() -> None:
    timing = time_backend(create_backend("torch-cpu", "fp32", 1), TimeBudget(time.perf_counter() + 3.0, 5.0))
    assert timing["parts_ms"] is None and timing["block_ms"] is None and timing["model_ms"] is None
    assert timing["stopped"].count(",") == 7  # all eight measurements


def test_the_slowest_measurement_is_carried_across_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    real_measure = doctor.measure

    def measure_taking_20_s(runner, protocol):
        measurement = real_measure(runner, protocol)
        now[0] += MEASUREMENT_S
        return measurement

    monkeypatch.setattr(doctor, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(doctor, "measure", measure_taking_20_s)
    # 95 s: torch-cpu's measurements start at 0, 20, 40 and 60 s; at 80 s 15 s are left, less than one takes
    report = doctor.diagnose(deadline_s=95.0)
    torch_cpu, onnxruntime = report["backends"]["torch-cpu"], report["backends"]["onnxruntime"]
    assert torch_cpu["timing"]["parts_ms"] is not None and torch_cpu["timing"]["block_ms"] is not None
    assert torch_cpu["timing"]["model_ms"] is None and "model block 1" in torch_cpu["timing"]["stopped"]
    assert now[0] == 4 * MEASUREMENT_S  # onnxruntime started none with 15 s left (it did with a fresh slowest 0 s)
    assert onnxruntime["usable"] and onnxruntime["timing"] is None
    assert "slowest measurement so far took (20.0 s)" in onnxruntime["note"]
