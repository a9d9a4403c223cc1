"""Math modes are set explicitly by each backend and recorded in what a table must match."""

from __future__ import annotations

import pytest
import torch

from profiler.backends import create_backend
from profiler.backends.onnxruntime_backend import cuda_provider_options
from profiler.backends.torch_cuda import apply_torch_cuda_math_modes, cuda_software, torch_cuda_math_modes


@pytest.fixture
def restore_math_modes():
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]


def test_torch_cuda_turns_tf32_off_whatever_the_container_preset(restore_math_modes: None) -> None:
    torch.set_float32_matmul_precision("high")  # as NVIDIA's PyTorch images may preset it
    torch.backends.cudnn.allow_tf32 = True  # cuDNN's default
    apply_torch_cuda_math_modes(torch_cuda_math_modes(tf32=False))
    recorded = cuda_software()
    assert recorded["cuda_matmul_allow_tf32"] is False and recorded["cudnn_allow_tf32"] is False
    assert recorded["float32_matmul_precision"] == "highest"
    apply_torch_cuda_math_modes(torch_cuda_math_modes(tf32=True))
    assert cuda_software()["cuda_matmul_allow_tf32"] is True and cuda_software()["cudnn_allow_tf32"] is True


def test_torch_cpu_sets_its_fp32_matmul_mode_and_records_it(restore_math_modes: None) -> None:
    torch.set_float32_matmul_precision("medium")  # would let oneDNN use bf16 internally
    backend = create_backend("torch-cpu", "fp32", 1)
    assert torch.get_float32_matmul_precision() == "highest"
    assert backend.environment()["software"]["match"]["float32_matmul_precision"] == "highest"


def test_onnxruntime_cuda_provider_sets_tf32_explicitly() -> None:
    assert cuda_provider_options(0, 1234, tf32=False)["use_tf32"] == "0"  # the provider's own default is on
    options = cuda_provider_options(1, 1234, tf32=True)
    assert options["use_tf32"] == "1" and options["device_id"] == "1" and options["user_compute_stream"] == "1234"
