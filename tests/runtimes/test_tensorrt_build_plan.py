"""How TensorRT engines are configured, decided without a GPU; and a clear refusal where no GPU exists."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from profiler.backends import BackendUnavailable, backend_names, create_backend
from profiler.backends.tensorrt_backend import TensorRtBackend, build_plan, trt_major_version


def test_fp16_on_tensorrt_10_is_a_strongly_typed_fp16_graph() -> None:
    plan = build_plan("fp16", trt_major=10)
    assert plan.onnx_precision == "fp16" and plan.strongly_typed_flag
    assert plan.set_flags == () and plan.clear_flags == () and not plan.prune_2_4


def test_tensorrt_11_needs_no_strongly_typed_flag() -> None:
    assert not build_plan("fp16", trt_major=11).strongly_typed_flag  # always strongly typed, flag deprecated


def test_fp32_is_strict_unless_tf32_is_allowed() -> None:
    assert build_plan("fp32", trt_major=10).clear_flags == ("TF32",)
    assert build_plan("fp32", trt_major=10, allow_tf32=True).clear_flags == ()
    assert build_plan("bf16", trt_major=10).clear_flags == ()


def test_2_4_sparsity_prunes_and_sets_sparse_weights() -> None:
    plan = build_plan("fp16", "2:4", trt_major=10)
    assert plan.prune_2_4 and plan.set_flags == ("SPARSE_WEIGHTS",)


def test_workspace_and_optimization_level() -> None:
    plan = build_plan("fp16", workspace_gib=1.5, optimization_level=5)
    assert plan.workspace_bytes == 1536 * 2**20 and plan.optimization_level == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int4"}, "precision"),
        ({"precision": "fp16", "sparsity": "1:8"}, "sparsity"),
        ({"precision": "fp16", "trt_major": 8}, "TensorRT 8"),
        ({"precision": "fp16", "optimization_level": 7}, "optimization_level"),
        ({"precision": "fp16", "workspace_gib": 0}, "workspace_gib"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_plan(**kwargs)


def test_major_version_parsing() -> None:
    assert trt_major_version("10.13.3.9") == 10 and trt_major_version("11.4.0") == 11
    with pytest.raises(ValueError, match="major version"):
        trt_major_version("unknown")


def test_registered() -> None:
    assert "tensorrt" in backend_names()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the refusal on a machine without a GPU")
def test_without_a_gpu_the_backend_says_so() -> None:
    with pytest.raises(BackendUnavailable, match="NVIDIA GPU"):
        create_backend("tensorrt", "fp16")
    with pytest.raises(ValueError, match="sparsity"):  # bad settings are reported before the missing GPU
        TensorRtBackend("fp16", sparsity="3:4")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt not installed")
def test_plan_flag_names_exist_in_the_installed_tensorrt() -> None:
    try:
        import tensorrt as trt
    except ImportError as exc:  # bindings present without libnvinfer: nothing to check against
        pytest.skip(f"tensorrt bindings do not load here: {exc}")
    plan = build_plan("fp32", "2:4", trt_major=trt_major_version(trt.__version__))
    for name in (*plan.set_flags, *plan.clear_flags):
        assert hasattr(trt.BuilderFlag, name)
    assert hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    assert hasattr(trt.MemoryPoolType, "WORKSPACE")
