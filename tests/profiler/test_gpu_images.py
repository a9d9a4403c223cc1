"""What the GPU images fix at build time, checked without Docker: their build-time checks are valid Python that pass
only for the pinned packages, and the NVIDIA image does not force TF32 on the fp32 tables torch-cuda times."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from profiler.backends.tf32_environment import TORCH_OVERRIDE, check_tf32_environment, torch_forces_tf32

DOCKER = Path(__file__).resolve().parents[2] / "docker"
IMAGES = ("profiler-gpu.Dockerfile", "profiler-gpu-volta.Dockerfile")


def instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions as Docker reads them: comments dropped, continued lines joined."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    return [i.strip() for i in "\n".join(lines).replace("\\\n", "").splitlines() if i.strip()]


def build_checks(dockerfile: Path) -> list[str]:
    """The `python -c` programs its RUN instructions execute, as the shell passes them."""
    programs = []
    for instruction in instructions(dockerfile):
        if instruction.startswith("RUN "):
            words = shlex.split(instruction[4:])
            programs += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-c" and "python" in words[i - 1]]
    return programs


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_checks_its_onnxruntime_is_a_cuda_12_build_alone(image: str) -> None:
    checks = [p for p in build_checks(DOCKER / image) if "onnxruntime-gpu" in p]
    assert len(checks) == 1, checks
    compile(checks[0], image, "exec")  # a syntax error would only show in a docker build
    assert "(1, 19) <= major_minor('onnxruntime-gpu') < (1, 27)" in checks[0] and "'cu12'" in checks[0]
    assert "'onnxruntime' not in installed" in checks[0]
    installs = " ".join(i for i in instructions(DOCKER / image) if i.startswith("RUN "))
    assert re.findall(r'"onnxruntime-gpu[^"]*"', installs) == ['"onnxruntime-gpu>=1.19,<1.27"']


def test_the_nvidia_image_gives_the_tf32_choice_back_to_the_table() -> None:
    env = " ".join(i for i in instructions(DOCKER / "profiler-gpu.Dockerfile") if i.startswith("ENV "))
    value = re.search(rf"{TORCH_OVERRIDE}=(\S+)", env)
    assert value is not None and not torch_forces_tf32({TORCH_OVERRIDE: value.group(1)})
    check_tf32_environment("torch-cuda", "fp32", False, {TORCH_OVERRIDE: value.group(1)}, torch_matmuls=True)
    with pytest.raises(ValueError, match=TORCH_OVERRIDE):  # the NGC images' own setting
        check_tf32_environment("torch-cuda", "fp32", False, {TORCH_OVERRIDE: "1"}, torch_matmuls=True)
