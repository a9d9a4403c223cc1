"""The Volta image installs only a TensorRT that builds for Volta, the same releases tensorrt_support accepts for a
V100: TensorRT 10.5 dropped compute capability 7.0, and an unpinned install resolves to a newer release."""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from profiler.backends.base import BackendUnavailable
from profiler.backends.tensorrt_support import SUPPORT, check_target, newest_release_for, parse_version
from tests.profiler.dockerfiles import DOCKER, build_checks, instructions

VOLTA_IMAGE = DOCKER / "profiler-gpu-volta.Dockerfile"
VOLTA = (7, 0)
# tensorrt-cu12 10 and later (the image's floor), either side of the Volta cut, with pre- and post-releases of 10.5
RELEASES = ["10.0.1", "10.3.0", "10.4.0", "10.5.0.dev0", "10.5.0rc1", "10.5.0", "10.5.0.post1", "10.6.0", "10.13.3.9",
            "11.0.0"]  # fmt: skip


def first_release_without_volta() -> tuple[int, int]:
    return min(first for first, lowest in SUPPORT if lowest > VOLTA)


def tensorrt_requirement() -> Requirement:
    """The one TensorRT requirement the image's RUN instructions hand to pip."""
    installs = " ".join(i for i in instructions(VOLTA_IMAGE) if i.startswith("RUN "))
    requirements = [Requirement(r) for r in re.findall(r'"(tensorrt[^"]*)"', installs)]
    assert len(requirements) == 1, requirements
    return requirements[0]


def test_the_volta_image_cannot_install_a_tensorrt_release_that_dropped_volta() -> None:
    """Defect 10: the V100 image's TensorRT pin cannot resolve to 10.5 or later."""
    requirement = tensorrt_requirement()
    assert requirement.name == "tensorrt-cu12" and not requirement.marker
    cut = first_release_without_volta()
    assert cut == (10, 5)
    admitted = [v for v in RELEASES if requirement.specifier.contains(v, prereleases=True)]
    assert admitted and all(Version(v) < Version(f"{cut[0]}.{cut[1]}.dev0") for v in admitted), admitted
    newest = newest_release_for(VOLTA)
    assert newest is not None and parse_version(newest.split()[0]) == (10, 4)
    assert requirement.specifier.contains("10.4.0"), "the newest release that builds for Volta must be installable"


@pytest.mark.parametrize("release", RELEASES)
def test_the_pin_admits_exactly_the_releases_tensorrt_support_accepts_for_a_v100(release: str) -> None:
    """Defect 10: the image's pin and the backend's release/architecture table agree on Volta."""
    try:
        check_target(release, VOLTA, "fp16")
        accepted = True
    except BackendUnavailable as refused:
        assert "does not build for compute capability 7.0" in str(refused)
        accepted = False
    assert tensorrt_requirement().specifier.contains(release, prereleases=True) is accepted


def test_the_build_fails_where_a_tensorrt_without_volta_got_installed() -> None:
    """Defect 10: the image's build-time check stops at the same release as its pin."""
    checks = [p for p in build_checks(VOLTA_IMAGE) if "tensorrt-cu12" in p]
    assert len(checks) == 1, checks
    bound = re.search(r"major_minor\('tensorrt-cu12'\) < \((\d+), (\d+)\)", checks[0])
    assert bound is not None and (int(bound.group(1)), int(bound.group(2))) == first_release_without_volta()
