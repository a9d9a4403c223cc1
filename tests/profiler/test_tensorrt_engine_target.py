"""A TensorRT engine is cached per GPU down to its SM count and memory, not only its name and compute capability,
and names the GPU as the table's device does, so the two cannot disagree on which GPU it is."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from profiler.backends import cuda_device as cuda_device_module
from profiler.backends.tensorrt_backend import engine_target
from profiler.engine_cache import cache_key


def _props(sm: int, memory: int) -> SimpleNamespace:
    return SimpleNamespace(name="NVIDIA A100-SXM4", major=8, minor=0, multi_processor_count=sm, total_memory=memory)


def test_target_names_sm_count_and_memory() -> None:
    target = engine_target("10.13.0", _props(108, 80 * 2**30))
    assert target == {
        "tensorrt": "10.13.0",
        "gpu": {"name": "NVIDIA A100-SXM4", "compute_capability": "8.0", "memory_mib": 80 * 1024, "sm_count": 108},
    }


def test_target_names_the_gpu_as_the_tables_device_does(monkeypatch: pytest.MonkeyPatch) -> None:
    props = _props(108, 80 * 2**30)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(cuda_device_module, "nvidia_smi_facts", lambda uuid, ordinal: {})
    assert engine_target("10.13.0", props)["gpu"] == cuda_device_module.cuda_device()["match"]["gpu"]


def test_same_name_and_capability_with_other_sms_or_memory_get_other_keys() -> None:
    full = cache_key("graph", {"precision": "fp16"}, engine_target("10.13.0", _props(108, 80 * 2**30)))
    mig = cache_key("graph", {"precision": "fp16"}, engine_target("10.13.0", _props(42, 20 * 2**30)))
    small = cache_key("graph", {"precision": "fp16"}, engine_target("10.13.0", _props(108, 40 * 2**30)))
    assert len({full, mig, small}) == 3
