"""Hessian-based unit importance I_S = (Σ_{s∈S} ∂L/∂w_s · w_s)², accumulated so that every batch counts.

Each `add` squares one batch's gate gradients (NViT Eq. 6 for that batch). Without momentum the importance is the
plain average over all batches since the last reset (every batch weighs the same, unlike an importance that keeps
only the last sample); with momentum β it is the exponential average I ← β·I + (1−β)·g², bias-corrected, and it
is carried across pruning steps. With interval momentum β (NViT's engine) each pruning interval's plain average A
is folded in at the pruning step instead: I ← β·I + (1−β)·A, the first interval's A taken as is.

The running sum is one flat float64 vector on the gradients' device (the layout of `Gates.flat()`), and so are the
batch counts, so a batch costs a few vector operations and never waits for the device: a batch is folded in or
skipped (non-finite fp16 gradients) on the device, and the counts and `value()` are read back once per pruning step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pruner.gates import Gates


class ImportanceAccumulator:
    """Running per-unit importance; `value()` returns it as a Gates-shaped structure of float64 CPU tensors."""

    def __init__(self, template: Gates, momentum: float | None = None, interval_momentum: float | None = None):
        for name, beta in (("momentum", momentum), ("interval_momentum", interval_momentum)):
            if beta is not None and not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        if momentum is not None and interval_momentum is not None:
            raise ValueError("momentum (per batch) and interval_momentum (per pruning interval) exclude each other")
        self.momentum = momentum
        self.interval_momentum = interval_momentum
        self._carried: Tensor | None = None  # the average over past intervals (interval momentum only)
        self._template = template
        self._sum: Tensor = torch.zeros(template.flat().numel(), dtype=torch.float64)
        self._counts: Tensor = torch.zeros(2, dtype=torch.float64)  # batches since the last reset, and in all

    @property
    def batches(self) -> int:
        """Batches folded in since the last reset."""
        return int(self._counts[0])

    @property
    def total_batches(self) -> int:
        """Batches folded in since the start (the momentum's bias correction)."""
        return int(self._counts[1])

    def add(self, gate_grads: Gates) -> None:
        """Fold one batch's gate gradients in (squared per unit)."""
        self.add_flat(gate_grads.flat())

    def add_flat(self, flat_grads: Tensor, counted: Tensor | None = None) -> None:
        """`add` for gate gradients already laid out as `Gates.flat()`; with `counted` (a 0-d bool tensor on their
        device), only where it is true, decided on the device (a skipped batch leaves sum and counts as they were)."""
        if self._sum.device != flat_grads.device:
            self._sum = self._sum.to(flat_grads.device)
            self._counts = self._counts.to(flat_grads.device)
            self._carried = None if self._carried is None else self._carried.to(flat_grads.device)
        squared = flat_grads.detach().to(torch.float64).square()
        weight: Tensor | float = 1.0
        if counted is not None:
            squared = torch.where(counted, squared, 0.0)  # a skipped batch's inf or NaN never reaches the sum
            weight = counted.to(torch.float64)
        beta = self.momentum
        if beta is None:
            self._sum.add_(squared)
        else:  # I <- beta I + (1 - beta) g^2 for a counted batch; I for a skipped one
            self._sum.mul_(1.0 - (1.0 - beta) * weight).add_(squared, alpha=1.0 - beta)
        self._counts.add_(weight)

    def has_value(self) -> bool:
        """Whether `value()` has something to return (otherwise it raises)."""
        if self.interval_momentum is not None:
            return self.batches > 0 or self._carried is not None
        return (self.batches if self.momentum is None else self.total_batches) > 0

    def _flat_value(self) -> Tensor:
        if not self.has_value():
            raise RuntimeError("no batch accumulated yet: call accumulate() after loss.backward()")
        if self.interval_momentum is not None:
            if self.batches == 0:
                return self._carried
            interval = self._sum / self.batches
            if self._carried is None:
                return interval
            beta = self.interval_momentum
            return self._carried * beta + interval * (1.0 - beta)
        if self.momentum is None:
            return self._sum / max(self.batches, 1)
        return self._sum / (1.0 - self.momentum**self.total_batches)

    def value(self) -> Gates:
        """Average squared gate gradient per unit (bias-corrected with momentum)."""
        return self._template.like_flat(self._flat_value().cpu())

    def reset(self) -> None:
        """Start a new average after a pruning step (kept as is with momentum, folded into the carried average with
        interval momentum)."""
        if self.momentum is not None:
            return
        if self.interval_momentum is not None and (self.batches or self._carried is not None):
            self._carried = self._flat_value().clone()
        self._sum.zero_()
        self._counts[0] = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "momentum": self.momentum,
            "interval_momentum": self.interval_momentum,
            "carried": None if self._carried is None else self._carried.cpu().clone(),
            "sum": self._sum.cpu().clone(),
            "batches": self.batches,
            "total_batches": self.total_batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["momentum"] != self.momentum:
            raise ValueError(f"importance momentum {state['momentum']} in the state, {self.momentum} here")
        saved = torch.as_tensor(state["sum"], dtype=torch.float64)
        if saved.shape != self._sum.shape:
            raise ValueError(f"importance of {saved.numel()} units in the state, {self._sum.numel()} here")
        if state.get("interval_momentum") != self.interval_momentum:
            raise ValueError(
                f"interval momentum {state.get('interval_momentum')} in the state, {self.interval_momentum} here"
            )
        self._sum = saved.to(self._sum.device).clone()
        carried = state.get("carried")
        self._carried = None if carried is None else torch.as_tensor(carried, dtype=torch.float64).to(saved.device)
        counts = [float(state["batches"]), float(state["total_batches"])]
        self._counts = torch.tensor(counts, dtype=torch.float64, device=self._sum.device)
