"""`doctor` keeps its time budget inside a backend: no measurement (nor the engine build that prepares it) starts
after the deadline, what was not timed says so, and the backend slowest to prepare (TensorRT) is timed last."""

from __future__ import annotations

import time

from profiler.backends import create_backend
from profiler.doctor import STOPPED, TIMING_ORDER, TimeBudget, diagnose, render, time_backend


def test_a_backend_is_stopped_between_measurements_at_the_deadline() -> None:
    backend = create_backend("torch-cpu", "fp32", 1)
    started = time.perf_counter()
    timing = time_backend(backend, TimeBudget(started + 0.2))  # one measurement takes >= 0.35 s (warm-up + 0.25 s)
    took = time.perf_counter() - started
    assert timing["parts_ms"] is not None and timing["parts_sum_ms"] > 0  # started before the deadline
    assert timing["block_ms"] is None and timing["model_ms"] is None and timing["parts_vs_block_pct"] is None
    assert timing["stopped"].startswith(STOPPED) and "block" in timing["stopped"] and "model" in timing["stopped"]
    assert took < 3.0  # the one measurement under way, not the eight
    report = {
        "fingerprint": {"cpu": {"name": "cpu"}, "gpu": None, "packages": {}, "torch_cuda_build": None},
        "backends": {"torch-cpu": {"usable": True, "timing": timing}},
        "usable": ["torch-cpu"],
        "wall_s": round(took, 1),
    }
    assert STOPPED in render(report)


def test_nothing_is_timed_past_the_deadline() -> None:
    timing = time_backend(create_backend("torch-cpu", "fp32", 1), TimeBudget(time.perf_counter() - 1.0))
    assert timing["parts_ms"] is None and timing["block_ms"] is None and timing["blocks_sum_ms"] is None
    assert timing["stopped"].count(",") == 7  # parts, block, block again, four blocks alone, model


def test_tensorrt_is_timed_last() -> None:
    assert TIMING_ORDER[-1] == "tensorrt"
    order = list(diagnose(deadline_s=-1.0)["backends"])
    assert order[-1] == "tensorrt" and order[:2] == ["torch-cpu", "onnxruntime"]
