"""onnxruntime's provider: chosen by the GPU that is here, never silently the CPU on a GPU machine.

The CPU `onnxruntime` package and `onnxruntime-gpu` install the same module; with the CPU one in place on a GPU
machine, the CUDA provider is missing. The automatic choice then refuses in one line naming what to install;
`--provider cpu` still times the CPU on purpose. The GPU is seen through `nvidia-smi -L` (a CPU build of torch sees
none), here a script on PATH that prints what nvidia-smi prints; torch is made to see no GPU, as a CPU build's does,
so the tests hold on a GPU machine too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from profiler.backends import BackendUnavailable, create_backend
from profiler.backends.onnxruntime_backend import choose_provider, gpu_visible
from profiler.cli import main

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def put_nvidia_smi(directory: Path, monkeypatch: pytest.MonkeyPatch, listing: str, status: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what a CPU build of torch answers
    script = directory / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{listing}'\nexit {status}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{Path('/usr/bin')}:{Path('/bin')}")


def test_the_automatic_provider_follows_the_gpu_and_refuses_a_gpu_without_the_cuda_provider() -> None:
    assert choose_provider([CPU], gpu=False) == "cpu"
    assert choose_provider([CUDA, CPU], gpu=False) == "cpu"
    assert choose_provider([CUDA, CPU], gpu=True) == "cuda"
    with pytest.raises(BackendUnavailable) as refused:
        choose_provider([CPU], gpu=True)
    message = str(refused.value)
    assert "\n" not in message and "onnxruntime-gpu>=1.19,<1.27" in message and "--provider cpu" in message


def test_a_gpu_listed_by_nvidia_smi_is_seen_without_a_cuda_torch(tmp_path: Path, monkeypatch) -> None:
    listing = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5c1e0f7a-0000-0000-0000-000000000000)"
    put_nvidia_smi(tmp_path, monkeypatch, listing)
    assert gpu_visible()
    put_nvidia_smi(tmp_path, monkeypatch, "NVIDIA-SMI has failed because it couldn't communicate with the driver", 9)
    assert not gpu_visible()


@pytest.mark.parametrize("visible", ["", "-1", " -1,0"])
def test_gpus_hidden_by_cuda_visible_devices_leave_onnxruntime_on_the_cpu(tmp_path: Path, monkeypatch, visible) -> None:
    put_nvidia_smi(tmp_path, monkeypatch, "GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-0)")  # nvidia-smi lists them all
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert not gpu_visible()
    assert create_backend("onnxruntime", "fp32", 1).settings()["options"]["provider"] == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu_visible()


def test_profile_on_a_gpu_machine_with_the_cpu_package_refuses_unless_cpu_is_asked_for(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    put_nvidia_smi(tmp_path, monkeypatch, "GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-0)")
    out = tmp_path / "t.json"
    code = main(["profile", "--backend", "onnxruntime", "--grid", "tiny", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "onnxruntime-gpu" in err and "--provider cpu" in err
    backend = create_backend("onnxruntime", "fp32", 1, provider="cpu")  # the CPU on purpose
    assert backend.settings()["options"]["provider"] == "cpu"


def test_provider_is_an_onnxruntime_option_only(tmp_path: Path, capsys) -> None:
    code = main(["profile", "--backend", "torch-cpu", "--provider", "cpu", "--out", str(tmp_path / "t.json")])
    assert code == 2 and "provider" in capsys.readouterr().err
