"""The small interface every timing backend implements (torch-cpu, torch-cuda, onnxruntime, tensorrt)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

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
