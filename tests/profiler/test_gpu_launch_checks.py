"""The GPU paths' GPU-free parts: TensorRT's refusals are checked, and runners own what their launches read.

TensorRT returns False from `set_tensor_address` and `execute_async_v3` instead of raising; the functions the
backend passes its execution context's methods to are exercised here with plain callables. Runners hold their
resources: the CPU runners (the same `resources` structure the CUDA-event runner has) are checked with real modules
whose only remaining reference is the runner's.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from lut_server.dims import BlockDims
from profiler.backends import create_backend
from profiler.backends.runners import CudaEventRunner
from profiler.backends.tensorrt_io import checked_launch, set_addresses
from profiler.workload import Workload, build_pipeline


def test_every_address_is_set_and_the_first_refused_one_raises() -> None:
    calls: list[tuple[str, int]] = []

    def accept_all_but_misaligned(name: str, address: int) -> bool:
        calls.append((name, address))
        return address % 256 == 0

    set_addresses(accept_all_but_misaligned, {"input0": 0x1000, "output0": 0x2000})
    assert calls == [("input0", 0x1000), ("output0", 0x2000)]
    with pytest.raises(RuntimeError, match=r"refused the address 0x2010 of tensor output0"):
        set_addresses(accept_all_but_misaligned, {"input0": 0x1000, "output0": 0x2010})


def test_a_failed_launch_raises_and_the_stream_is_the_one_given() -> None:
    streams: list[int] = []

    def launch(stream: int) -> bool:
        streams.append(stream)
        return len(streams) == 1

    step = checked_launch(launch, 0xBEEF)
    step()
    with pytest.raises(RuntimeError, match="execute_async_v3 failed"):
        step()
    assert streams == [0xBEEF, 0xBEEF]


def test_a_pipeline_runner_is_what_keeps_its_stages_alive() -> None:
    backend = create_backend("torch-cpu", "fp32", 1)
    _, stages, inputs = build_pipeline(BlockDims(32, 2, 8, 8, 64), Workload(1, 5), with_model_parts=False)
    refs = [weakref.ref(stage) for stage in stages]
    run = backend.prepare_pipeline(stages, inputs)
    del stages, inputs
    gc.collect()
    assert all(ref() is not None for ref in refs)
    totals = np.asarray(run(2))
    assert totals.shape == (3,) and (totals > 0).all()
    del run
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_an_onnxruntime_runner_holds_its_sessions_bindings_and_every_bound_buffer() -> None:
    backend = create_backend("onnxruntime", "fp32", 1, provider="cpu")
    _, stages, inputs = build_pipeline(BlockDims(32, 2, 8, 8, 64), Workload(1, 5), with_model_parts=False)
    run = backend.prepare_pipeline(stages, inputs)
    sessions, bindings, state = run.resources
    assert len(sessions) == len(bindings) == 3 and {"x", "h", "probs"} <= set(state)
    assert np.asarray(run(2)).shape == (3,)


def test_the_cuda_event_runner_owns_its_resources() -> None:
    class Buffer:
        """Stands for a device buffer bound by address."""

    buffer = Buffer()
    ref = weakref.ref(buffer)
    runner = CudaEventRunner([lambda: None], stream=None, resources=([buffer],))  # no CUDA call until it runs
    del buffer
    gc.collect()
    assert ref() is not None
    del runner
    gc.collect()
    assert ref() is None
