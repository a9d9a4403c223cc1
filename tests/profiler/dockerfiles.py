"""The profiler images' Dockerfiles read as Docker reads them, for tests of what an image does without Docker."""

from __future__ import annotations

import shlex
from pathlib import Path

DOCKER = Path(__file__).resolve().parents[2] / "docker"
GPU_IMAGES = ("profiler-gpu.Dockerfile", "profiler-gpu-volta.Dockerfile")


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
