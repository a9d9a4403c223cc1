"""Math modes are set explicitly by each backend and recorded in what a table must match."""

from __future__ import annotations

import pytest
import torch

from profiler.backends import create_backend
from profiler.backends.onnxruntime_backend import cuda_provider_options
from profiler.backends.torch_cuda import (
    apply_torch_cuda_math_modes,
    cuda_software,
    fp32_precision_api,
    torch_cuda_math_modes,
)

PER_BACKEND_MODES = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul")
"""Where torch has the per-backend API, the modes the tests below change (the generic ones follow them)."""


def _mode_holder(path: str):
    holder = torch.backends
    for name in path.split("."):
        holder = getattr(holder, name, None)
    return holder


@pytest.fixture
def restore_math_modes():
    """Put the math modes back as they were. With the per-backend API, through it: once it has set cuDNN's conv and
    RNN modes apart (a torch-cuda backend created by an earlier test), reading `cudnn.allow_tf32` raises."""
    if fp32_precision_api():
        holders = [_mode_holder(path) for path in PER_BACKEND_MODES]
        saved = [(h, h.fp32_precision) for h in holders if h is not None and hasattr(h, "fp32_precision")]
        yield
        for holder, mode in saved:
            holder.fp32_precision = mode
        return
    legacy = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    yield
    torch.set_float32_matmul_precision(legacy[0])
    torch.backends.cudnn.allow_tf32 = legacy[1]


def test_torch_cuda_turns_tf32_off_whatever_the_container_preset(restore_math_modes: None) -> None:
    torch.set_float32_matmul_precision("high")  # as NVIDIA's PyTorch images may preset it
    torch.backends.cudnn.allow_tf32 = True  # cuDNN's default
    apply_torch_cuda_math_modes(torch_cuda_math_modes(tf32=False))
    recorded = cuda_software()
    if fp32_precision_api():  # torch 2.9 and later: the per-backend API (test_fp32_precision_api.py)
        assert recorded["cuda_matmul_fp32_precision"] == recorded["cudnn_conv_fp32_precision"] == "ieee"
        apply_torch_cuda_math_modes(torch_cuda_math_modes(tf32=True))
        assert cuda_software()["cuda_matmul_fp32_precision"] == cuda_software()["cudnn_conv_fp32_precision"] == "tf32"
        return
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


def test_each_gpu_backend_matches_only_on_the_math_modes_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.backends import torch_cuda
    from profiler.backends.onnxruntime_backend import cuda_provider_match
    from profiler.backends.tensorrt_backend import build_plan, tensorrt_software_match

    in_force = set(torch_cuda.torch_cuda_math_flags())
    assert in_force and in_force <= set(cuda_software())  # torch-cuda's tables match on torch's math modes
    torch_modes = set(in_force)
    for new_api in (True, False):  # what torch-cuda sets under either API, whichever this torch has
        monkeypatch.setattr(torch_cuda, "fp32_precision_api", lambda new_api=new_api: new_api)
        torch_modes |= set(torch_cuda_math_modes(tf32=True))
    assert {"cuda_matmul_fp32_precision", "float32_matmul_precision", "cudnn_allow_tf32"} <= torch_modes
    trt = tensorrt_software_match("10.13.0", build_plan("fp32", tf32=True))
    assert not torch_modes & set(trt)  # torch's TF32 flags do not choose TensorRT's kernels
    assert trt["tensorrt_tf32"] is True and trt["tensorrt_builder_flags"] == ["TF32"]
    assert trt["tensorrt"] == "10.13.0" and trt["torch"] == torch.__version__  # torch exports the graph
    assert tensorrt_software_match("10.13.0", build_plan("fp32"))["tensorrt_tf32"] is False
    ort = cuda_provider_match(tf32=False)
    assert not torch_modes & set(ort) and ort["ort_cuda_use_tf32"] is False


def test_torch_override_of_tf32_refuses_a_strict_fp32_torch_cuda_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1")
    with pytest.raises(ValueError, match="TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 forces TF32") as refused:
        create_backend("torch-cuda", "fp32")
    assert "\n" not in str(refused.value)
    from profiler.backends.base import BackendUnavailable

    for precision, options in (("fp32", {"tf32": True}), ("fp16", {})):  # TF32 asked for, or no fp32 matmuls
        if torch.cuda.is_available():
            create_backend("torch-cuda", precision, **options).close()
        else:
            with pytest.raises(BackendUnavailable):  # past the override check, stopped by the missing GPU
                create_backend("torch-cuda", precision, **options)
    monkeypatch.setenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "0")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable):
            create_backend("torch-cuda", "fp32")


def test_nvidia_override_refuses_tf32_where_it_would_be_disabled() -> None:
    from profiler.backends.tf32_environment import check_tf32_environment

    for backend, torch_matmuls in (("torch-cuda", True), ("onnxruntime", False), ("tensorrt", False)):
        with pytest.raises(ValueError, match="NVIDIA_TF32_OVERRIDE=0 disables TF32"):
            check_tf32_environment(backend, "fp32", True, {"NVIDIA_TF32_OVERRIDE": "0"}, torch_matmuls)
        check_tf32_environment(backend, "fp32", False, {"NVIDIA_TF32_OVERRIDE": "0"}, torch_matmuls)
    # torch's override does not reach TensorRT's or onnxruntime's kernels
    check_tf32_environment("tensorrt", "fp32", False, {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"}, False)
    with pytest.raises(ValueError, match="TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=true"):
        check_tf32_environment("torch-cuda", "fp32", False, {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "true"}, True)
