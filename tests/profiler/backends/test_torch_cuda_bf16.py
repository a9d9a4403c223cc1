"""torch-cuda refuses bf16 below Ampere in one line naming the GPU's capability, instead of timing emulated bf16
(issue 11, defect 10: no capability checks)."""

from __future__ import annotations

import pytest

from profiler.backends.base import BackendUnavailable
from profiler.backends.cuda_device import require_bf16


@pytest.mark.parametrize("capability", [(6, 1), (7, 0), (7, 5)])  # Pascal, Volta (V100), Turing (T4)
def test_bf16_below_compute_capability_8_is_refused_naming_bf16_and_the_capability(
    capability: tuple[int, int],
) -> None:
    """Defect 10: bf16 on a GPU without bf16 tensor cores is refused."""
    with pytest.raises(BackendUnavailable) as refused:
        require_bf16("torch-cuda", capability)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("torch-cuda bf16 ")
    assert "8.0" in message and f"this GPU is {capability[0]}.{capability[1]}" in message
    assert "fp16 or fp32" in message  # what can be profiled on it instead


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)])
def test_bf16_from_compute_capability_8_on_is_accepted(capability: tuple[int, int]) -> None:
    """Defect 10: Ampere (A100, sm 8.0) and every later GPU passes the bf16 check."""
    assert require_bf16("torch-cuda", capability) is None
