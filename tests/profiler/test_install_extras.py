"""What each install of the profiler brings, read from pyproject.toml's extras as pip resolves them: a GPU install
gets onnxruntime-gpu for CUDA 12 and not the CPU onnxruntime (both write the `onnxruntime` module, and the CPU one
has no CUDA provider), a CPU install gets the CPU package, and no extra pins torch to one release (which would make
pip replace the CUDA build of torch a GPU machine or image already has)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.profiler.dockerfiles import DOCKER, GPU_IMAGES, instructions

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PYPROJECT["optional-dependencies"]


def install(*extras: str) -> dict[str, Requirement]:
    """The requirements `pip install '.[extras]'` adds to the base ones, by name, following `vitlut[...]` extras."""
    found: dict[str, Requirement] = {}
    for extra in extras:
        assert extra in EXTRAS, f"no extra {extra!r}"
        for requirement in map(Requirement, EXTRAS[extra]):
            if requirement.name == PYPROJECT["name"]:
                found |= install(*sorted(requirement.extras))
            else:
                found[requirement.name] = requirement
    return found


@pytest.mark.parametrize("extras", [("profiler", "gpu"), ("pruner", "gpu")])
def test_a_gpu_install_gets_onnxruntime_gpu_for_cuda_12_and_not_the_cpu_package(extras: tuple[str, ...]) -> None:
    """Defect 12: the `gpu` extra carries onnxruntime-gpu's CUDA 12 builds, and nothing beside it the CPU one."""
    requirements = install(*extras)
    assert "onnxruntime" not in requirements
    cuda_12 = requirements["onnxruntime-gpu"].specifier
    assert all(cuda_12.contains(v) for v in ("1.19.0", "1.20.1", "1.26.0"))
    assert not any(cuda_12.contains(v) for v in ("1.18.1", "1.27.0", "1.31.1"))  # CUDA 11 default; CUDA 13


def test_the_gpu_extra_and_the_gpu_images_install_the_same_onnxruntime_gpu_releases() -> None:
    """Defect 12: a pip install and an image time with the same onnxruntime-gpu range."""
    extra = install("gpu")["onnxruntime-gpu"].specifier
    for image in GPU_IMAGES:
        installs = " ".join(i for i in instructions(DOCKER / image) if i.startswith("RUN "))
        pinned = [Requirement(r).specifier for r in re.findall(r'"(onnxruntime-gpu[^"]*)"', installs)]
        assert pinned == [extra], image


@pytest.mark.parametrize("extras", [("profiler", "cpu"), ("demo",)])
def test_a_cpu_install_gets_the_cpu_onnxruntime(extras: tuple[str, ...]) -> None:
    """Defect 12: the `cpu` extra, not `profiler` itself, brings the CPU onnxruntime."""
    requirements = install(*extras)
    assert "onnxruntime" in requirements and "onnxruntime-gpu" not in requirements
    assert "onnxruntime" not in install("profiler") and "onnxruntime" in install("cpu")


def test_no_extra_pins_torch_to_one_release() -> None:
    """Defect 12: an installed CUDA build of torch in range is kept (the NVIDIA image's, the Volta image's <2.8)."""
    torch_requirements = [
        Requirement(r) for requirements in EXTRAS.values() for r in requirements if Requirement(r).name == "torch"
    ]
    assert torch_requirements and all(
        spec.operator not in ("==", "===") for requirement in torch_requirements for spec in requirement.specifier
    )
    profiler_torch = install("profiler")["torch"].specifier
    for build in ("2.5.0", "2.7.1+cu126", "2.13.0", "2.13.0+cpu"):
        assert profiler_torch.contains(build), build
    assert "torch" not in {Requirement(r).name for r in PYPROJECT["dependencies"]}  # the server needs none
