"""The onnxruntime backend: sessions built as recorded, runners that time real work, sweeps that fill tables.

Each test asks for the CPU provider where it times or records the CPU: on a GPU machine the automatic provider is
CUDA (or a refusal, where only the CPU package is installed; tests/profiler/test_onnxruntime_provider.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lut_server.dims import BlockDims
from lut_server.table_format import read_table
from profiler.backends import BackendUnavailable, backend_names, create_backend
from profiler.backends.onnxruntime_backend import OnnxRuntimeBackend, session_options
from profiler.cli import main
from profiler.timing import Protocol, measure
from profiler.workload import Workload, build_block


def test_registered_and_created_with_recorded_settings() -> None:
    assert "onnxruntime" in backend_names()
    backend = create_backend("onnxruntime", "fp32", provider="cpu")
    assert isinstance(backend, OnnxRuntimeBackend)
    settings = backend.settings()
    assert settings["backend"] == "onnxruntime"
    assert settings["threads"] == 1  # default, recorded
    assert settings["options"] == {"provider": "cpu", "exporter": "torchscript", "opset": 17}
    env = backend.environment()
    assert env["device"]["kind"] == "cpu" and env["device"]["recorded"]["ort_intra_op_threads"] == 1
    import onnxruntime as ort

    assert env["software"]["match"]["onnxruntime"] == ort.__version__  # whichever package installed it
    assert "CPUExecutionProvider" in env["software"]["recorded"]["onnxruntime_providers"]
    assert env["software"]["recorded"]["onnxruntime_distribution"].startswith("onnxruntime")


def test_session_options_pin_threads_and_optimizations() -> None:
    import onnxruntime as ort

    options = session_options(3)
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_refusals_name_the_problem() -> None:
    with pytest.raises(ValueError, match="fp32 only"):
        OnnxRuntimeBackend("fp16", provider="cpu")
    with pytest.raises(ValueError, match="provider"):
        OnnxRuntimeBackend("fp32", provider="tpu")
    with pytest.raises(ValueError, match="precisions"):
        OnnxRuntimeBackend("int4", provider="cpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
            OnnxRuntimeBackend("fp32", provider="cuda")


def test_runner_time_grows_with_iterations_and_with_the_block() -> None:
    backend = OnnxRuntimeBackend("fp32", threads=1, provider="cpu")
    workload = Workload(batch=1, tokens=50)
    small = backend.prepare(*build_block(BlockDims(64, 1, 8, 8, 64), workload))
    large = backend.prepare(*build_block(BlockDims(384, 6, 64, 64, 1536), workload))
    small(20)  # the first runs allocate and plan memory
    one, ten = min(small(2) for _ in range(5)), small(20)
    assert one > 0 and ten > 3 * one
    protocol = Protocol.quick()
    t_small = measure(small, protocol).median_ms
    t_large = measure(large, protocol).median_ms
    assert t_large > 5 * t_small  # ~60x the FLOPs; a runner that skipped the work would not show it


@pytest.mark.slow
def test_tiny_sweep_then_validate_with_onnxruntime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny-ort.json"
    argv = ["profile", "--backend", "onnxruntime", "--provider", "cpu", "--grid", "tiny", "--quick", "--batch", "1"]
    argv += ["--tokens", "17"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["complete"] and summary["blocks"] == 8
    doc = read_table(out)
    assert doc["workload"]["backend"] == "onnxruntime" and doc["workload"]["options"]["provider"] == "cpu"
    assert set(doc["parts"]) == {"attn_qk", "attn_v", "mlp", "stem", "head"}
    assert (
        main(["validate", str(out), "--points", "6", "--models", "2", "--depth", "2", "--quick", "--no-progress"]) == 0
    )
    validation = read_table(out)["validation"]
    assert validation["points"] == 6 and validation["models"]["count"] == 2
    assert validation["block_stack"] == 2  # a v2 (pairs) table: blocks timed as a stack of two, as swept
    assert validation["median_ape_pct"] >= 0 and validation["measurements"] >= 6 + 2 + 6


def test_a_session_that_fell_back_to_another_provider_is_refused():
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from profiler.backends.base import BackendUnavailable
    from profiler.backends.onnxruntime_backend import require_provider, session_options

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    require_provider(session, "CPUExecutionProvider")
    with pytest.raises(BackendUnavailable, match="did not start CUDAExecutionProvider"):
        require_provider(session, "CUDAExecutionProvider")
