"""Eager PyTorch on the CPU, timed with perf_counter_ns under inference_mode at a fixed thread count."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from profiler.backends.base import Backend
from profiler.backends.glibc_malloc import ALLOCATORS, make_malloc_steady, malloc_state
from profiler.fingerprint import cpu_device, software, torch_software
from profiler.timing import Runner


class TorchCpuBackend(Backend):
    name = "torch-cpu"
    precisions = ("fp32", "bf16")
    stage_timing = "in-context"

    def __init__(self, precision: str = "fp32", threads: int | None = None, **options: Any):
        """Option `allocator`: "steady" fixes glibc's malloc thresholds (glibc_malloc.py); absent or "system" leaves
        them, which is how tables made before the option were measured."""
        unknown = set(options) - {"allocator"}
        if unknown:
            raise ValueError(f"backend torch-cpu has no option(s) {sorted(unknown)}; it takes 'allocator'")
        allocator = options.get("allocator", "system")
        if allocator not in ALLOCATORS:
            raise ValueError(f"allocator must be one of {list(ALLOCATORS)}, not {allocator!r}")
        super().__init__(precision, threads if threads is not None else 1, **options)
        if allocator == "steady":
            make_malloc_steady()
        torch.set_num_threads(self.threads)

    def prepare(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Runner:
        torch.set_num_threads(self.threads)
        module = module.eval().to(dtype=self.dtype)
        inputs = tuple(x.to(dtype=self.dtype) if x.is_floating_point() else x for x in inputs)

        def run(iterations: int) -> float:
            with torch.inference_mode():
                start = time.perf_counter_ns()
                for _ in range(iterations):
                    module(*inputs)
                return (time.perf_counter_ns() - start) / 1e6

        return run

    def prepare_pipeline(self, stages: Sequence[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        """CPU execution is synchronous, so host timestamps between stages time each stage inside the pipeline."""
        torch.set_num_threads(self.threads)
        stages = [stage.eval().to(dtype=self.dtype) for stage in stages]
        inputs = tuple(x.to(dtype=self.dtype) if x.is_floating_point() else x for x in inputs)
        clock = time.perf_counter_ns

        def run(iterations: int) -> np.ndarray:
            totals = [0] * len(stages)
            with torch.inference_mode():
                for _ in range(iterations):
                    state = inputs
                    before = clock()
                    for i, stage in enumerate(stages):
                        state = stage(*state)
                        after = clock()
                        totals[i] += after - before
                        before = after
            return np.array(totals, dtype=float) / 1e6

        return run

    def environment(self) -> dict[str, dict[str, Any]]:
        return {
            "device": cpu_device(self.threads, {"torch_threads": torch.get_num_threads(), "malloc": malloc_state()}),
            "software": software(torch_software()),
        }
