"""The onnxruntime version a table must match is the imported module's, whichever distribution installed it:
with onnxruntime-gpu alone there is no `onnxruntime` distribution, and looking that name up recorded None."""

from __future__ import annotations

import importlib.metadata

import onnxruntime as ort
import pytest

from profiler.backends import create_backend


@pytest.fixture
def only_onnxruntime_gpu_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Package metadata as onnxruntime-gpu alone leaves it: the module is there, the `onnxruntime` name is not."""
    installed = importlib.metadata.version

    def version(name: str) -> str:
        if name == "onnxruntime":
            raise importlib.metadata.PackageNotFoundError(name)
        return ort.__version__ if name == "onnxruntime-gpu" else installed(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_with_onnxruntime_gpu_alone_the_recorded_version_is_the_modules(only_onnxruntime_gpu_installed: None) -> None:
    """Defect 12: the recorded onnxruntime version is never null when another distribution provides the module."""
    assert importlib.metadata.version("onnxruntime-gpu") == ort.__version__
    software = create_backend("onnxruntime", "fp32", 1, provider="cpu").environment()["software"]
    assert ort.__version__ and software["match"]["onnxruntime"] == ort.__version__
    assert software["recorded"]["onnxruntime_distribution"] == f"onnxruntime-gpu {ort.__version__}"
