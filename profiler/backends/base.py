"""The narrow interface every timing backend implements (torch-cpu, torch-cuda, onnxruntime, tensorrt).

A backend is created from a precision, a thread count and options checked against its declared option table
(options.py); `apply_process_settings` then sets what is process-wide (threads, allocator, math modes) explicitly,
and `environment()` records what was set. `prepare_pipeline` turns stages into a runner that owns its resources and
returns one elapsed total per stage; `prepare` is the one-stage case (a whole block or model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from profiler.backends.options import OptionSpec, recorded_options, resolve_options
from profiler.timing import Runner
from profiler.workload import SCORES_VALUES

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (no GPU, library missing, GPU too old); the message says what is missing."""


class GpuProviderMissing(BackendUnavailable):
    """A GPU is here but the installed package cannot use it, so the backend refuses to pick the CPU by itself; it
    still runs on the CPU with `cpu_options`, which `doctor` (that takes no options) uses, showing this reason."""

    def __init__(self, message: str, cpu_options: dict[str, Any]):
        super().__init__(message)
        self.cpu_options = cpu_options


class Backend(ABC):
    """Turns stages plus example inputs into a Runner, and describes the device and software it runs on."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    option_specs: ClassVar[tuple[OptionSpec, ...]] = ()
    default_threads: ClassVar[int | None] = None
    takes_threads: ClassVar[bool] = False
    """Whether the backend sets a CPU thread count (and records it). One that does not refuses a thread count, so
    a table never records threads that were not applied."""

    def __init__(self, precision: str = "fp32", threads: int | None = None, **options: Any):
        if precision not in self.precisions:
            raise ValueError(f"backend {self.name} supports precisions {list(self.precisions)}, not {precision!r}")
        if threads is not None and not self.takes_threads:
            raise ValueError(f"backend {self.name} sets no CPU thread count: drop --threads ({threads})")
        threads = threads if threads is not None else self.default_threads
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.precision = precision
        self.threads = threads
        self.options = resolve_options(self.name, self.option_specs, options)

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def stage_timing(self) -> str:
        """How stages are timed, recorded in the table's protocol (e.g. "in-context": inside the running pipeline)."""
        return "in-context"

    @property
    def block_stages(self) -> tuple[str, ...]:
        """How a block is split into timed stages: attn_qk | attn_v | mlp, or attn | mlp where the runtime fuses
        attention (scores, softmax and values in one kernel), which a split at the probabilities would prevent."""
        return SCORES_VALUES

    def apply_process_settings(self) -> None:  # noqa: B027 - backends without process-wide settings keep this
        """Set the process-wide state this backend times under (threads, allocator, math modes). Idempotent; called
        by `create_backend` and before every runner is prepared, so a runner never inherits another backend's."""

    def prepare(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Runner:
        """A runner for one module (a block, a stack of blocks, a model): a pipeline of one stage."""
        return self.prepare_pipeline([module], inputs)

    def prepare_pipeline(self, stages: Sequence[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        """A runner for stages run back to back, routed by what each reads and writes (workload.stage_io), that
        returns one elapsed total per stage, timed inside the running pipeline."""
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.apply_process_settings()
        return self._pipeline_runner(list(stages), tuple(inputs))

    @abstractmethod
    def _pipeline_runner(self, stages: list[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        """Compile/move the stages and inputs as this backend deploys them; return a runner that times them."""

    @abstractmethod
    def environment(self) -> dict[str, dict[str, Any]]:
        """{"device": {...}, "software": {...}} — recorded in every table; `device.name` identifies the device."""

    def settings(self) -> dict[str, Any]:
        """What a resumed or merged sweep must share with the original (besides batch and tokens)."""
        return {
            "backend": self.name,
            "precision": self.precision,
            "threads": self.threads,
            "options": recorded_options(self.option_specs, self.options),
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device resources (engines, sessions)."""
