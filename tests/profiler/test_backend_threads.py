"""A thread count is taken only by backends that apply it (torch-cpu, onnxruntime); the GPU backends refuse it, so
no table records threads that were never set."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.backends import create_backend
from profiler.backends.tensorrt_backend import TensorRtBackend
from profiler.backends.torch_cuda import TorchCudaBackend
from profiler.cli import main


@pytest.mark.parametrize("backend", [TorchCudaBackend, TensorRtBackend])
def test_gpu_backends_refuse_a_thread_count_before_looking_for_a_gpu(backend: type) -> None:
    assert not backend.takes_threads
    with pytest.raises(ValueError, match="sets no CPU thread count"):
        backend("fp16", threads=4)


@pytest.mark.parametrize("name", ["torch-cuda", "tensorrt"])
def test_profile_refuses_threads_on_a_gpu_backend_in_one_line(name: str, tmp_path: Path, capsys) -> None:
    code = main(
        ["profile", "--backend", name, "--precision", "fp16", "--threads", "8", "--out", str(tmp_path / "t.json")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--threads" in err and name in err


@pytest.mark.parametrize(("name", "options"), [("torch-cpu", {}), ("onnxruntime", {"provider": "cpu"})])
def test_cpu_backends_apply_and_record_their_threads(name: str, options: dict) -> None:
    backend = create_backend(name, "fp32", 2, **options)
    assert backend.settings()["threads"] == 2
