"""A GPU the installed torch has no kernels for is refused in one line before any kernel runs, naming what to
install, instead of failing at the first kernel with "no kernel image is available"."""

from __future__ import annotations

import pytest

from profiler.backends.base import BackendUnavailable
from profiler.backends.cuda_device import require_torch_kernels, torch_runs_on

CU128_LIST = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # no Volta
CU126_LIST = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize(
    ("capability", "arch_list", "runs"),
    [
        ((7, 0), CU126_LIST, True),  # its own cubin
        ((7, 0), CU128_LIST, False),  # V100 on a CUDA 12.8 wheel: sm_75 is above it, compute_120 too
        ((8, 9), CU128_LIST, True),  # L4/Ada: sm_86 cubin, same major, below it
        ((9, 0), ["sm_80", "sm_86"], False),  # Hopper has no cubin of major 9 and no PTX
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX at or below it is compiled by the driver
        ((8, 0), ["sm_86", "compute_86"], False),  # A100 cannot run sm_86 cubins nor newer PTX
        ((9, 0), ["sm_90a"], True),  # arch-specific suffix
        ((10, 0), ["sm_100f", "sm_120"], True),
        ((7, 0), [], False),  # a CPU build lists nothing
    ],
)
def test_torch_runs_on(capability: tuple[int, int], arch_list: list[str], runs: bool) -> None:
    assert torch_runs_on(capability, arch_list) is runs


def test_volta_on_a_wheel_without_sm70_is_refused_naming_what_to_install() -> None:
    with pytest.raises(BackendUnavailable) as refused:
        require_torch_kernels("torch-cuda", (7, 0), CU128_LIST)
    message = str(refused.value)
    assert "\n" not in message and "7.0" in message and "sm_75" in message
    assert "torch<2.8" in message and "cu126" in message and "profiler-gpu-volta" in message
    require_torch_kernels("torch-cuda", (7, 0), CU126_LIST)  # accepted: no exception
