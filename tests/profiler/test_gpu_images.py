"""What the GPU images fix at build time, checked without Docker: their build-time checks are valid Python that pass
only for the pinned packages, and the NVIDIA image does not force TF32 on the fp32 tables torch-cuda times."""

from __future__ import annotations

import re

import pytest

from profiler.backends.tf32_environment import TORCH_OVERRIDE, check_tf32_environment, torch_forces_tf32
from tests.profiler.dockerfiles import DOCKER, GPU_IMAGES, build_checks, instructions


@pytest.mark.parametrize("image", GPU_IMAGES)
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
