"""Each backend's declared option table: options it cannot honour are refused, not recorded."""

from __future__ import annotations

import pytest

from profiler.backends import create_backend
from profiler.backends.options import OptionSpec, resolve_options
from profiler.backends.tensorrt_backend import TensorRtBackend
from profiler.backends.torch_cuda import TorchCudaBackend
from profiler.cli import main


@pytest.mark.parametrize(
    ("backend", "options", "message"),
    [
        ("onnxruntime", {"provider": "cpu", "cuda_graphs": True}, "no option"),
        ("onnxruntime", {"provider": "cpu", "sparsity": "2:4"}, "no option"),
        ("onnxruntime", {"provider": "cpu", "tf32": True}, "applies only with provider cuda"),
        ("onnxruntime", {"provider": "cpu", "opset": 11}, "opset"),
        ("torch-cpu", {"sparsity": "2:4"}, "no option"),
        ("torch-cpu", {"tf32": True}, "no option"),
    ],
)
def test_options_a_backend_cannot_honour_are_refused(backend: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_backend(backend, "fp32", 1, **options)


def test_gpu_backends_refuse_foreign_options_before_looking_for_a_gpu() -> None:
    with pytest.raises(ValueError, match="no option"):
        TensorRtBackend("fp16", cuda_graphs=True)
    with pytest.raises(ValueError, match="no option"):
        TorchCudaBackend("fp16", sparsity="2:4")
    with pytest.raises(ValueError, match="true or false"):
        TorchCudaBackend("fp16", cuda_graphs="yes")


def test_declared_tables_name_their_options() -> None:
    assert {s.name for s in TorchCudaBackend.option_specs} == {"cuda_graphs", "tf32"}
    assert {"sparsity", "tf32", "typing", "engine_cache"} <= {s.name for s in TensorRtBackend.option_specs}


def test_resolved_options_are_recorded_with_defaults_and_local_ones_are_not() -> None:
    backend = create_backend("onnxruntime", "fp32", 1, provider="cpu")  # the CPU on a GPU machine too
    assert backend.settings()["options"] == {"provider": "cpu", "exporter": "torchscript", "opset": 17}
    specs = (OptionSpec("level", int, 3, "", bounds=(0, 5)), OptionSpec("cache", str, None, "", recorded=False))
    assert resolve_options("x", specs, {"level": 4.0, "cache": "/tmp/e"}) == {"level": 4, "cache": "/tmp/e"}
    with pytest.raises(ValueError, match="integer"):
        resolve_options("x", specs, {"level": 2.5})
    with pytest.raises(ValueError, match=r"in \[0, 5\]"):
        resolve_options("x", specs, {"level": 9})


def test_the_cli_refuses_cuda_graphs_on_onnxruntime(tmp_path, capsys) -> None:
    out = tmp_path / "t.json"
    argv = ["profile", "--backend", "onnxruntime", "--provider", "cpu", "--cuda-graphs", "--grid", "tiny", "--quick"]
    code = main([*argv, "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "cuda_graphs" in capsys.readouterr().err
