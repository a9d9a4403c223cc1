"""On a GPU machine with only the CPU `onnxruntime` package, `doctor` times onnxruntime's CPU provider and says why
the CUDA provider is not used, instead of listing onnxruntime as unusable.

`profile` refuses that automatic choice (a GPU machine's table must not be timed on the CPU by accident) and tells
the user to pass `--provider cpu`; `doctor` takes no options, so it does that itself. The GPU is made visible to
the provider choice by faking what it sees: a GPU present and an onnxruntime without the CUDA provider.
"""

from __future__ import annotations

import pytest

from profiler import doctor
from profiler.backends import GpuProviderMissing, create_backend
from profiler.backends import onnxruntime_backend as ort_backend


@pytest.fixture
def gpu_without_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_backend, "gpu_visible", lambda: True)
    monkeypatch.setattr(ort_backend.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


def test_the_automatic_provider_is_still_refused_with_the_cpu_as_the_way_out(gpu_without_cuda_provider) -> None:
    with pytest.raises(GpuProviderMissing) as refused:
        create_backend("onnxruntime", "fp32", 1)
    assert "CUDAExecutionProvider" in str(refused.value) and refused.value.cpu_options == {"provider": "cpu"}


def test_doctor_times_the_cpu_provider_and_reports_why_the_cuda_one_is_not_used(
    gpu_without_cuda_provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor, "backend_names", lambda: ["onnxruntime"])
    report = doctor.diagnose(deadline_s=1.0)  # time for the first measurement (the parts), not all eight
    entry = report["backends"]["onnxruntime"]
    assert report["usable"] == ["onnxruntime"] and entry["usable"]
    assert entry["settings"]["options"]["provider"] == "cpu"
    assert "has no CUDAExecutionProvider" in entry["gpu_unusable"]
    parts = entry["timing"]["parts_ms"]
    assert list(parts) == ["attn_qk", "attn_v", "mlp"] and all(ms > 0 for ms in parts.values())
    text = doctor.render(report)
    assert "onnxruntime: not usable on the GPU: an NVIDIA GPU is here" in text and "timed on the CPU" in text
    assert "onnxruntime: usable (fp32, batch 1, 197 tokens" in text


def test_without_a_gpu_nothing_is_reported_about_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_backend, "gpu_visible", lambda: False)
    backend, reason, gpu_reason = doctor._create("onnxruntime")
    assert backend is not None and reason is None and gpu_reason is None
    assert backend.settings()["options"]["provider"] == "cpu"
