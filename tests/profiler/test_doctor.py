"""`profiler doctor`: every backend is listed as usable or with the reason it is not; usable ones get figures."""

from __future__ import annotations

import pytest
import torch

from profiler.backends import backend_names, create_backend
from profiler.doctor import diagnose, render, time_backend


def test_every_backend_is_usable_or_says_why() -> None:
    report = diagnose(deadline_s=-1.0)  # list only, no timing
    assert set(report["backends"]) == set(backend_names())
    assert {"torch-cpu", "onnxruntime"} <= set(report["usable"])
    for name, entry in report["backends"].items():
        assert entry["usable"] or entry["reason"], name
    if not torch.cuda.is_available():
        assert "NVIDIA GPU" in report["backends"]["torch-cuda"]["reason"]
        assert "NVIDIA GPU" in report["backends"]["tensorrt"]["reason"]
        assert "torch-cuda: not usable here" in render(report)


@pytest.mark.slow
def test_a_usable_backend_gets_parts_block_and_model_figures() -> None:
    for _ in range(2):  # the same block timed twice agrees on a quiet machine; a burst of load gets one more try
        timing = time_backend(create_backend("torch-cpu", "fp32", 1))
        if timing["timer_noise_pct"] < 50 and abs(timing["parts_vs_block_pct"]) < 50:
            break
    assert list(timing["parts_ms"]) == ["attn_qk", "attn_v", "mlp"]
    assert timing["parts_sum_ms"] > 0 and timing["block_ms"] > 0 and timing["model_ms"] > 0
    assert abs(timing["parts_vs_block_pct"]) < 50 and abs(timing["blocks_vs_model_pct"]) < 50
    # the percentages are the printed figures' own ratios (to the rounding of the figures)
    parts_vs_block = 100 * (timing["parts_sum_ms"] / timing["block_ms"] - 1)
    blocks_vs_model = 100 * (timing["blocks_sum_ms"] / timing["model_ms"] - 1)
    assert timing["parts_vs_block_pct"] == pytest.approx(parts_vs_block, abs=0.1)
    assert timing["blocks_vs_model_pct"] == pytest.approx(blocks_vs_model, abs=0.1)
    assert timing["timer_noise_pct"] < 50  # the same block timed twice
