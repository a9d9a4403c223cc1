"""Eager PyTorch on an NVIDIA GPU, timed with CUDA events on the stream; optionally replayed as a CUDA graph."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from profiler.backends.base import Backend, BackendUnavailable
from profiler.fingerprint import gpu_device, software, torch_software
from profiler.timing import Runner


def nvidia_smi_facts() -> dict[str, Any]:
    """Driver and clocks as nvidia-smi reports them (empty where nvidia-smi is absent)."""
    fields = "driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.limit,pstate"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    values = [v.strip() for v in out.split(",")]
    return dict(zip(fields.split(","), values, strict=False))


def cuda_device(device: torch.device | int | None = None) -> dict[str, Any]:
    """The fingerprint of the GPU a CUDA backend times on (every CUDA backend records it this way)."""
    props = torch.cuda.get_device_properties(device if device is not None else torch.cuda.current_device())
    identity = {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_mib": int(props.total_memory // 2**20),
        "sm_count": props.multi_processor_count,
    }
    return gpu_device(identity, nvidia_smi_facts())


def cuda_software() -> dict[str, Any]:
    """CUDA, cuDNN and the TF32 math modes: each changes which kernels run and what fp32 means."""
    return {
        **torch_software(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


class TorchCudaBackend(Backend):
    name = "torch-cuda"
    precisions = ("fp32", "fp16", "bf16")
    stage_timing = "in-context"

    def __init__(self, precision: str = "fp16", threads: int | None = None, cuda_graphs: bool = False, **options):
        super().__init__(precision, threads, cuda_graphs=bool(cuda_graphs), **options)
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch-cuda needs an NVIDIA GPU and a CUDA build of torch; none is available")
        self.device = torch.device("cuda")
        self.cuda_graphs = bool(cuda_graphs)

    def prepare(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Runner:
        module = module.eval().to(device=self.device, dtype=self.dtype)
        inputs = tuple(x.to(device=self.device, dtype=self.dtype if x.is_floating_point() else x.dtype) for x in inputs)
        step = self._graph_step(module, inputs) if self.cuda_graphs else (lambda: module(*inputs))
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run(iterations: int) -> float:
            with torch.inference_mode():
                start.record()
                for _ in range(iterations):
                    step()
                end.record()
                end.synchronize()
            return float(start.elapsed_time(end))

        return run

    def prepare_pipeline(self, stages: Sequence[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        """CUDA events recorded between stages on the stream time each stage inside the running pipeline.

        (CUDA graphs are not used here: a graph replays the whole pipeline as one launch.)
        """
        stages = [stage.eval().to(device=self.device, dtype=self.dtype) for stage in stages]
        inputs = tuple(x.to(device=self.device, dtype=self.dtype if x.is_floating_point() else x.dtype) for x in inputs)
        events: list[torch.cuda.Event] = []

        def run(iterations: int) -> np.ndarray:
            needed = iterations * (len(stages) + 1)
            while len(events) < needed:
                events.append(torch.cuda.Event(enable_timing=True))
            with torch.inference_mode():
                k = 0
                for _ in range(iterations):
                    state = inputs
                    events[k].record()
                    for stage in stages:
                        state = stage(*state)
                        k += 1
                        events[k].record()
                    k += 1
                events[k - 1].synchronize()
            totals = np.zeros(len(stages))
            for it in range(iterations):
                base = it * (len(stages) + 1)
                for i in range(len(stages)):
                    totals[i] += events[base + i].elapsed_time(events[base + i + 1])
            return totals

        return run

    @staticmethod
    def _graph_step(module: nn.Module, inputs: tuple[Tensor, ...]):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):  # warm up allocations outside the capture
                module(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            module(*inputs)
        return graph.replay

    def environment(self) -> dict[str, dict[str, Any]]:
        return {"device": cuda_device(self.device), "software": software(cuda_software())}
