"""How TensorRT engines are configured for each release and GPU, decided without a GPU; clear refusals."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from profiler.backends import BackendUnavailable, create_backend
from profiler.backends.tensorrt_backend import TensorRtBackend, build_plan
from profiler.backends.tensorrt_support import check_sparsity, check_target, newest_release_for, parse_version


def test_fp16_on_tensorrt_10_is_a_strongly_typed_fp16_graph() -> None:
    plan = build_plan("fp16", trt_version="10.13.3")
    assert plan.onnx_precision == "fp16" and plan.typing == "strong"
    assert plan.network_flags == ("STRONGLY_TYPED",) and plan.set_flags == () and not plan.prune_2_4


def test_tensorrt_11_needs_no_network_flag() -> None:
    plan = build_plan("fp16", trt_version="11.4.0")
    assert plan.typing == "strong" and plan.network_flags == ()  # always strongly typed, flag deprecated
    with pytest.raises(ValueError, match="removed the precision builder flags"):
        build_plan("fp16", trt_version="11.4.0", typing="flags")


def test_tensorrt_8_6_takes_precision_by_builder_flags() -> None:
    plan = build_plan("fp16", trt_version="8.6.1")
    assert plan.typing == "flags" and plan.set_flags == ("FP16",)
    assert plan.network_flags == ("EXPLICIT_BATCH",)  # no STRONGLY_TYPED before TensorRT 9
    with pytest.raises(ValueError, match="no strongly typed"):
        build_plan("fp16", trt_version="8.6.1", typing="strong")
    with pytest.raises(ValueError, match="no bf16"):
        build_plan("bf16", trt_version="8.6.1")


def test_tensorrt_10_4_can_use_builder_flags_for_volta_images() -> None:
    plan = build_plan("fp16", trt_version="10.4.0", typing="flags")
    assert plan.network_flags == () and plan.set_flags == ("FP16",)


def test_tf32_is_set_or_cleared_explicitly() -> None:
    assert build_plan("fp32").clear_flags == ("TF32",) and "TF32" not in build_plan("fp32").set_flags
    on = build_plan("fp32", tf32=True)
    assert "TF32" in on.set_flags and on.clear_flags == ()


def test_2_4_sparsity_prunes_and_sets_sparse_weights() -> None:
    plan = build_plan("fp16", "2:4")
    assert plan.prune_2_4 and plan.set_flags == ("SPARSE_WEIGHTS",)


def test_workspace_and_optimization_level() -> None:
    plan = build_plan("fp16", workspace_gib=1.5, optimization_level=5)
    assert plan.workspace_bytes == 1536 * 2**20 and plan.optimization_level == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int4"}, "precision"),
        ({"precision": "fp16", "sparsity": "1:8"}, "sparsity"),
        ({"precision": "fp16", "trt_version": "8.5.3"}, "TensorRT 8.5.3"),
        ({"precision": "fp16", "optimization_level": 7}, "optimization_level"),
        ({"precision": "fp16", "workspace_gib": 0}, "workspace_gib"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_plan(**kwargs)


def test_version_parsing() -> None:
    assert parse_version("10.13.3.9") == (10, 13) and parse_version("11.4") == (11, 4)
    with pytest.raises(ValueError, match="TensorRT version"):
        parse_version("unknown")


@pytest.mark.parametrize(
    ("trt", "capability", "names"),
    [
        ("10.13.3", (7, 0), ["10.4", "8.6", "7.0"]),  # V100 with a current TensorRT
        ("11.4.0", (7, 0), ["10.4", "8.6"]),
        ("10.5.0", (6, 1), ["8.6"]),  # Pascal
        ("10.4.0", (6, 0), ["8.6"]),
    ],
)
def test_a_gpu_the_installed_tensorrt_cannot_target_is_refused_naming_the_release(trt, capability, names) -> None:
    with pytest.raises(BackendUnavailable) as info:
        check_target(trt, capability, "fp16")
    for name in names:
        assert name in str(info.value)


def test_supported_targets_pass_and_bf16_needs_ampere() -> None:
    check_target("10.4.0", (7, 0), "fp16")  # the last release with Volta
    check_target("8.6.1", (7, 0), "fp32")
    check_target("11.4.0", (9, 0), "bf16")
    check_target("10.13.3", (7, 5), "fp16")
    with pytest.raises(BackendUnavailable, match=r"bf16 needs compute capability 8\.0"):
        check_target("10.13.3", (7, 5), "bf16")
    assert newest_release_for((9, 0)) is None and newest_release_for((7, 0)).startswith("10.4")


@pytest.mark.parametrize(
    ("precision", "trt_version", "asked", "typing", "network_flags", "set_flags"),
    [
        ("fp32", "8.6.1", "auto", "flags", ("EXPLICIT_BATCH",), ()),
        ("fp16", "9.3.0", "auto", "strong", ("EXPLICIT_BATCH", "STRONGLY_TYPED"), ()),
        ("bf16", "10.13.3", "auto", "strong", ("STRONGLY_TYPED",), ()),
        ("bf16", "10.4.0", "flags", "flags", (), ("BF16",)),
        ("fp32", "10.13.3", "flags", "flags", (), ()),
        ("fp32", "11.4.0", "auto", "strong", (), ()),
    ],
)
def test_plan_for_each_precision_and_release(precision, trt_version, asked, typing, network_flags, set_flags) -> None:
    plan = build_plan(precision, trt_version=trt_version, typing=asked)
    assert plan.as_dict() == {
        "onnx_precision": precision,  # exported in the table's precision, whatever the typing
        "typing": typing,
        "network_flags": network_flags,
        "set_flags": set_flags,
        "clear_flags": ("TF32",),
        "workspace_bytes": 4 * 2**30,
        "optimization_level": 3,
        "prune_2_4": False,
    }


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
    plan = build_plan("fp32", "2:4", trt_version=trt.__version__, tf32=True)
    for name in (*plan.set_flags, *plan.clear_flags):
        assert hasattr(trt.BuilderFlag, name)
    for name in plan.network_flags:
        assert hasattr(trt.NetworkDefinitionCreationFlag, name)
    assert hasattr(trt.MemoryPoolType, "WORKSPACE")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the refusal on a machine without a GPU")
def test_profile_with_tensorrt_here_fails_in_one_line(tmp_path, capsys) -> None:
    from profiler.cli import main

    assert main(["profile", "--backend", "tensorrt", "--grid", "tiny", "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "NVIDIA GPU" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("capability", "precision", "tf32", "error", "refused"),
    [((7, 0), "fp16", False, BackendUnavailable, "8.0"), ((7, 5), "fp16", False, BackendUnavailable, "8.0"),
     ((8, 0), "fp32", False, ValueError, "strict fp32"), ((8, 6), "fp16", False, None, None),
     ((9, 0), "fp32", True, None, None)],
)  # fmt: skip
def test_sparsity_is_refused_where_sparse_kernels_cannot_run(capability, precision, tf32, error, refused):
    # a GPU without sparse kernels cannot run the backend; strict fp32 is a setting the user can change
    check_sparsity("none", capability, precision, tf32)  # dense is always fine
    if error is None:
        check_sparsity("2:4", capability, precision, tf32)
    else:
        with pytest.raises(error, match=refused):
            check_sparsity("2:4", capability, precision, tf32)
