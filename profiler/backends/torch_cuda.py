"""Eager PyTorch on an NVIDIA GPU, timed with CUDA events on the stream; optionally replayed as CUDA graphs.

With `cuda_graphs`, every stage of a pipeline is captured as its own graph (in order, from one memory pool, each
reading the previous graphs' output tensors), and the graphs are replayed back to back with events between them:
the stages are timed as graph replays inside the running pipeline, as the option says. A single module is one graph.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from profiler.backends.base import Backend, BackendUnavailable
from profiler.backends.cuda_device import (
    compute_capability,
    cuda_device,
    nvidia_smi_facts,
    require_bf16,
    require_supported_gpu,
)
from profiler.backends.options import OptionSpec
from profiler.backends.runners import CudaEventRunner
from profiler.backends.tf32_environment import check_tf32_environment
from profiler.fingerprint import software, torch_software
from profiler.timing import Runner
from profiler.workload import initial_state, run_stage

__all__ = [
    "TorchCudaBackend",
    "cuda_device",
    "cuda_software",
    "cuda_versions",
    "nvidia_smi_facts",
    "torch_cuda_math_flags",
]

GRAPH_WARMUP_RUNS = 3
"""Eager runs before capture, on a side stream, so lazy initialisation and allocations happen outside the graph."""


def fp32_precision_api() -> bool:
    """Whether torch sets TF32 per backend and operation (`fp32_precision`, torch 2.9 and later). Once that API
    has been used, reading the legacy flags raises ("mix of the legacy and new APIs") or returns a value cuBLAS no
    longer follows, so torch-cuda uses one API only: this one where it exists, the legacy flags before it."""
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def torch_cuda_math_modes(tf32: bool) -> dict[str, Any]:
    """The math modes a torch-cuda table is timed under: TF32 for fp32 matmuls and cuDNN convolutions (the stem)
    only when asked for, in the API this torch has; reduced-precision reductions in fp16/bf16 matmuls as torch
    defaults them."""
    if fp32_precision_api():
        mode = "tf32" if tf32 else "ieee"
        return {"cuda_matmul_fp32_precision": mode, "cudnn_conv_fp32_precision": mode}
    return {"float32_matmul_precision": "high" if tf32 else "highest", "cudnn_allow_tf32": tf32}


def apply_torch_cuda_math_modes(modes: dict[str, Any]) -> None:
    """Set them process-wide (NVIDIA's containers may preset TF32 on; cuDNN's TF32 is on by default). A leaf of the
    new API set explicitly overrides whatever the generic `torch.backends.fp32_precision` says."""
    if "cuda_matmul_fp32_precision" in modes:
        torch.backends.cuda.matmul.fp32_precision = modes["cuda_matmul_fp32_precision"]
        torch.backends.cudnn.conv.fp32_precision = modes["cudnn_conv_fp32_precision"]
        return
    torch.set_float32_matmul_precision(modes["float32_matmul_precision"])
    torch.backends.cudnn.allow_tf32 = modes["cudnn_allow_tf32"]


def cuda_versions() -> dict[str, Any]:
    """torch (every GPU backend exports or launches through it), the CUDA runtime and cuDNN it carries."""
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def torch_cuda_math_flags() -> dict[str, Any]:
    """The torch math modes in force (TF32, reduced-precision reductions), read through the API they are set with.
    They choose torch's own kernels only, so only torch-cuda's tables match on them."""
    matmul = torch.backends.cuda.matmul
    reductions = {
        "cuda_matmul_fp16_reduced_precision_reduction": matmul.allow_fp16_reduced_precision_reduction,
        "cuda_matmul_bf16_reduced_precision_reduction": matmul.allow_bf16_reduced_precision_reduction,
    }
    if fp32_precision_api():
        return {
            "cuda_matmul_fp32_precision": matmul.fp32_precision,
            "cudnn_conv_fp32_precision": torch.backends.cudnn.conv.fp32_precision,
            **reductions,
        }
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": matmul.allow_tf32,
        **reductions,
    }


def cuda_software() -> dict[str, Any]:
    """What a torch-cuda table must match: torch and its libraries, CUDA, cuDNN and torch's math modes in force
    (the CPU's fp32 matmul mode is left out: it chooses no CUDA kernel, and under the new API it may be stale)."""
    return {**torch_software(matmul_precision=False), **cuda_versions(), **torch_cuda_math_flags()}


class TorchCudaBackend(Backend):
    name = "torch-cuda"
    precisions = ("fp32", "fp16", "bf16")
    option_specs = (
        OptionSpec("cuda_graphs", bool, False, "replay each stage (or the whole module) as a CUDA graph"),
        OptionSpec("tf32", bool, False, "let fp32 matmuls and convolutions use TF32 tensor cores"),
    )

    def __init__(self, precision: str = "fp16", threads: int | None = None, **options: Any):
        super().__init__(precision, threads, **options)
        check_tf32_environment(self.name, precision, self.options["tf32"], os.environ, torch_matmuls=True)
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch-cuda needs an NVIDIA GPU and a CUDA build of torch; none is available here")
        self.device = torch.device("cuda", torch.cuda.current_device())
        require_supported_gpu(self.name, self.device)
        if precision == "bf16":
            require_bf16(self.name, compute_capability(self.device))
        self.math_modes = torch_cuda_math_modes(self.options["tf32"])

    @property
    def stage_timing(self) -> str:
        return "in-context-cuda-graph-per-stage" if self.options["cuda_graphs"] else "in-context"

    def apply_process_settings(self) -> None:
        apply_torch_cuda_math_modes(self.math_modes)

    def _pipeline_runner(self, stages: list[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        stages = [stage.eval().to(device=self.device, dtype=self.dtype) for stage in stages]
        inputs = tuple(x.to(device=self.device, dtype=self.dtype if x.is_floating_point() else x.dtype) for x in inputs)
        start = initial_state(stages, inputs)
        stream = torch.cuda.current_stream(self.device)
        if self.options["cuda_graphs"]:
            return self._graph_runner(stages, start, stream)
        state: dict[str, Tensor] = {}

        def reset() -> None:
            state.clear()
            state.update(start)

        steps = [lambda stage=stage: run_stage(stage, state) for stage in stages]
        return CudaEventRunner(
            steps, stream, resources=(stages, start, state), reset=reset, context=torch.inference_mode
        )

    def _graph_runner(self, stages: list[nn.Module], start: dict[str, Tensor], stream: torch.cuda.Stream) -> Runner:
        """One CUDA graph per stage, captured in pipeline order from one memory pool; replayed in that order (which
        a shared pool requires). The runner keeps the modules (weights), the inputs and every graph's outputs."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(stream)
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_RUNS):
                state = dict(start)
                for stage in stages:
                    run_stage(stage, state)
        stream.wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        state = dict(start)
        graphs = []
        with torch.inference_mode():
            for stage in stages:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    run_stage(stage, state)
                graphs.append(graph)
        torch.cuda.synchronize(self.device)
        return CudaEventRunner([g.replay for g in graphs], stream, resources=(stages, start, state, graphs, pool))

    def environment(self) -> dict[str, dict[str, Any]]:
        return {"device": cuda_device(self.device), "software": software(cuda_software())}
