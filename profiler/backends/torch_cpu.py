"""Eager PyTorch on the CPU, timed with perf_counter_ns under inference_mode at a fixed thread count."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from profiler.backends.base import Backend
from profiler.backends.glibc_malloc import ALLOCATORS, make_malloc_steady, malloc_state
from profiler.backends.options import OptionSpec
from profiler.backends.runners import HostClockRunner
from profiler.fingerprint import cpu_device, software, torch_software
from profiler.timing import Runner
from profiler.workload import initial_state, run_stage

FP32_MATMUL_PRECISION = "highest"
"""torch's fp32 matmul mode, set explicitly: "high"/"medium" let oneDNN use bf16 internally on CPUs that have it."""


class TorchCpuBackend(Backend):
    name = "torch-cpu"
    precisions = ("fp32", "bf16")
    default_threads = 1
    takes_threads = True
    option_specs = (
        OptionSpec(
            "allocator", str, "system", "'steady' fixes glibc's malloc thresholds (glibc_malloc.py); 'system' leaves "
            "them, as tables made before the option were measured", allowed=ALLOCATORS,
        ),
    )  # fmt: skip

    def apply_process_settings(self) -> None:
        torch.set_num_threads(self.threads)
        torch.set_float32_matmul_precision(FP32_MATMUL_PRECISION)
        if self.options["allocator"] == "steady":
            make_malloc_steady()

    def _pipeline_runner(self, stages: list[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        """CPU execution is synchronous, so host timestamps between stages time each stage inside the pipeline."""
        stages = [stage.eval().to(dtype=self.dtype) for stage in stages]
        inputs = tuple(x.to(dtype=self.dtype) if x.is_floating_point() else x for x in inputs)
        if len(stages) == 1:
            module = stages[0]
            return HostClockRunner([lambda: module(*inputs)], resources=(module, inputs), context=torch.inference_mode)
        start = initial_state(stages, inputs)
        state: dict[str, Tensor] = {}

        def reset() -> None:
            state.clear()
            state.update(start)

        steps = [lambda stage=stage: run_stage(stage, state) for stage in stages]
        return HostClockRunner(steps, resources=(stages, start, state), reset=reset, context=torch.inference_mode)

    def environment(self) -> dict[str, dict[str, Any]]:
        return {
            "device": cpu_device(self.threads, {"torch_threads": torch.get_num_threads(), "malloc": malloc_state()}),
            "software": software(torch_software()),
        }
