"""torch and onnxruntime-gpu built for different CUDA majors are refused in one line, naming the torch to install."""

from __future__ import annotations

import pytest

from profiler.backends.base import BackendUnavailable
from profiler.backends.onnxruntime_backend import check_cuda_majors, onnxruntime_cuda_version


def test_different_cuda_majors_are_refused() -> None:
    with pytest.raises(BackendUnavailable) as refused:
        check_cuda_majors("13.0", "12.8")
    message = str(refused.value)
    assert "\n" not in message and "13.0" in message and "12.8" in message
    assert "https://download.pytorch.org/whl/cu126" in message


@pytest.mark.parametrize(
    ("torch_cuda", "ort_cuda"), [("12.6", "12.8"), ("12.8", "12.2"), (None, "12.8"), ("13.0", None)]
)
def test_same_major_or_unknown_is_accepted(torch_cuda: str | None, ort_cuda: str | None) -> None:
    check_cuda_majors(torch_cuda, ort_cuda)


def test_the_cpu_package_records_no_cuda_version() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    assert onnxruntime_cuda_version() is None
