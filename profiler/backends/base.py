"""The small interface every timing backend implements (torch-cpu, torch-cuda, onnxruntime, tensorrt)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from profiler.timing import Runner

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (no GPU, library missing); the message says what is missing."""


class Backend(ABC):
    """Turns a module plus example inputs into a Runner, and describes the device and software it runs on."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, precision: str = "fp32", threads: int | None = None, **options: Any):
        if precision not in self.precisions:
            raise ValueError(f"backend {self.name} supports precisions {list(self.precisions)}, not {precision!r}")
        self.precision = precision
        self.threads = threads
        self.options = options

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @abstractmethod
    def prepare(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Runner:
        """Compile/move the module and inputs as this backend deploys them; return a runner that times them."""

    def prepare_pipeline(self, stages: Sequence[nn.Module], inputs: tuple[Tensor, ...]) -> Runner:
        """A runner for stages run back to back (each stage's outputs are the next one's inputs) that returns one
        elapsed total per stage.

        Backends that can time inside a running pipeline (torch: host clock or CUDA events between stages)
        override this; this fallback times each stage on its own, which loses what one stage's cache state does
        to the next. `stage_timing` says which a backend does, and is recorded in the table.
        """
        states = [tuple(inputs)]
        with torch.inference_mode():
            for stage in stages[:-1]:
                states.append(tuple(t.clone() for t in stage(*states[-1])))
        runners = [self.prepare(stage, state) for stage, state in zip(stages, states, strict=True)]
        return lambda iterations: np.array([run(iterations) for run in runners])

    stage_timing: ClassVar[str] = "isolated"

    @abstractmethod
    def environment(self) -> dict[str, dict[str, Any]]:
        """{"device": {...}, "software": {...}} — recorded in every table; `device.name` identifies the device."""

    def settings(self) -> dict[str, Any]:
        """What a resumed or merged sweep must share with the original (besides batch and tokens)."""
        return {
            "backend": self.name,
            "precision": self.precision,
            "threads": self.threads,
            "options": self.options,
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device resources (engines, sessions)."""
