"""Hessian-based unit importance I_S = (Σ_{s∈S} ∂L/∂w_s · w_s)², accumulated so that every batch counts.

Each `add` squares one batch's gate gradients (NViT Eq. 6 for that batch). Without momentum the importance is the
plain average over all batches since the last reset (every batch weighs the same, unlike an importance that keeps
only the last sample); with momentum β it is the exponential average I ← β·I + (1−β)·g², bias-corrected, and it
is carried across pruning steps.
"""

from __future__ import annotations

import torch

from lut_server.dims import WIDTH_AXES
from pruner.gates import BlockGates, Gates


class ImportanceAccumulator:
    """Running per-unit importance; `value()` returns it as a Gates-shaped structure of float64 tensors."""

    def __init__(self, template: Gates, momentum: float | None = None):
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self._sum = template.zeros_like()
        self.batches = 0  # batches since the last reset
        self.total_batches = 0

    def add(self, gate_grads: Gates) -> None:
        """Fold one batch's gate gradients in (squared per unit)."""
        beta = self.momentum
        for (_, _, acc), (_, _, grad) in zip(self._sum.vectors(), gate_grads.vectors(), strict=True):
            squared = grad.detach().to(torch.float64).cpu().square()
            if beta is None:
                acc.add_(squared)
            else:
                acc.mul_(beta).add_(squared, alpha=1.0 - beta)
        self.batches += 1
        self.total_batches += 1

    def value(self) -> Gates:
        """Average squared gate gradient per unit (bias-corrected with momentum)."""
        if (self.batches if self.momentum is None else self.total_batches) == 0:
            raise RuntimeError("no batch accumulated yet: call accumulate() after loss.backward()")
        if self.momentum is None:
            scale = 1.0 / max(self.batches, 1)
        else:
            scale = 1.0 / (1.0 - self.momentum**self.total_batches)
        return Gates(
            self._sum.emb * scale,
            [BlockGates(*(b.get(a) * scale for a in WIDTH_AXES)) for b in self._sum.blocks],
        )

    def reset(self) -> None:
        """Start a new average after a pruning step (kept as is with momentum)."""
        if self.momentum is None:
            for _, _, acc in self._sum.vectors():
                acc.zero_()
            self.batches = 0
