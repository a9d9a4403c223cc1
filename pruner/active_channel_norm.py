"""LayerNorm over the open EMB channels only, computed in place over all channels with a 0/1 channel mask.

Once EMB channels are removed, the gated model must normalise over the open channels alone, as the compacted model
does. Gathering the open channels, normalising and scattering them back costs an index, a zero fill and an
index_put in both passes for every norm of every block (about 10% of a DeiT-Small training step on the CPU). Here
the statistics are masked sums instead, and the backward pass is LayerNorm's closed form restricted to the open
channels, so a norm costs a few elementwise passes over its input like `F.layer_norm`:

    μ = Σ_c m_c·x_c / n,  x̂ = m·(x − μ) / sqrt(Σ_c m_c·(x_c − μ)² / n + ε),  y = x̂·w + m·b

with n the number of open channels. Closed channels get y = 0 and no gradient (not to x, w or b).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _leading_sum(t: Tensor) -> Tensor:
    """Sum over every dimension but the last (the per-channel reduction of a weight or bias gradient)."""
    return t.reshape(-1, t.shape[-1]).sum(0)


class _MaskedLayerNorm(torch.autograd.Function):
    """y = LayerNorm over the channels where `mask` is 1, zero elsewhere; float math in `mask`'s dtype.

    Channel sums that need no elementwise product are matrix-vector products with the mask (no temporary), so a
    forward pass is four elementwise passes and a backward pass five.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, mask: Tensor, inv_count: float, eps: float):
        xf = x.to(mask.dtype)
        mean = (xf @ mask).mul_(inv_count).unsqueeze(-1)
        xhat = (xf - mean).mul_(mask)  # centred, zero on closed channels
        std = torch.linalg.vector_norm(xhat, dim=-1, keepdim=True).mul_(inv_count**0.5)
        rstd = std.square_().add_(eps).rsqrt_()
        xhat.mul_(rstd)
        w = weight.to(mask.dtype)
        ctx.save_for_backward(xhat, rstd, w, mask)
        ctx.inv_count = inv_count
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        return torch.addcmul(bias.to(mask.dtype) * mask, xhat, w)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        xhat, rstd, w, mask = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        dy = grad_out.to(mask.dtype)
        wm = w * mask
        grad_x = grad_w = grad_b = None
        dy_xhat = dy * xhat if ctx.needs_input_grad[0] or ctx.needs_input_grad[1] else None
        if ctx.needs_input_grad[0]:
            # dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) on open channels, with g = dy·w; means over open channels
            mean_g = (dy @ wm).mul_(ctx.inv_count).unsqueeze(-1)
            mean_gx = (dy_xhat @ wm).mul_(ctx.inv_count).unsqueeze(-1)
            grad_x = (dy * wm).addcmul_(mean_g, mask, value=-1.0).addcmul_(xhat, mean_gx, value=-1.0)
            grad_x = grad_x.mul_(rstd).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = _leading_sum(dy_xhat).to(w_dtype)
        if ctx.needs_input_grad[2]:
            grad_b = _leading_sum(dy).mul_(mask).to(b_dtype)
        return grad_x, grad_w, grad_b, None, None, None


class ActiveChannelLayerNorm(nn.LayerNorm):
    """A LayerNorm whose statistics use only the open channels (all channels until `set_active` closes some)."""

    channel_mask: Tensor | None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.register_buffer("channel_mask", None, persistent=False)
        self.active_count = self.normalized_shape[-1]

    @classmethod
    def replacing(cls, norm: nn.LayerNorm) -> ActiveChannelLayerNorm:
        """A drop-in for `norm` that shares its Parameter objects (optimizers holding them stay valid)."""
        new = cls(norm.normalized_shape, eps=norm.eps, elementwise_affine=True, device=norm.weight.device)
        new.weight, new.bias = norm.weight, norm.bias
        return new

    def set_active(self, open_channels: Tensor | None) -> None:
        """Normalise over the channels where `open_channels` (bool, one per channel) is true; None: all of them."""
        if open_channels is not None and open_channels.shape != self.weight.shape:
            raise ValueError(f"{open_channels.numel()} channel flags for a LayerNorm of {self.weight.numel()}")
        if open_channels is None or bool(open_channels.all()):
            self.channel_mask, self.active_count = None, self.normalized_shape[-1]
            return
        # kept as bool so that `.half()` on the model cannot lower the precision of the statistics
        self.channel_mask = open_channels.to(self.weight.device, torch.bool)
        self.active_count = int(open_channels.count_nonzero())

    def forward(self, x: Tensor) -> Tensor:
        if self.channel_mask is None:
            return super().forward(x)
        mask = self.channel_mask.to(torch.promote_types(self.weight.dtype, torch.float32))  # statistics in fp32+
        device = x.device.type
        out_dtype = _layer_norm_output_dtype(x, self.weight)
        with torch.autocast(device, enabled=False):
            y = _MaskedLayerNorm.apply(x, self.weight, self.bias, mask, 1.0 / self.active_count, self.eps)
        return y.to(out_dtype)


_OUTPUT_DTYPES: dict[tuple, torch.dtype] = {}


def _layer_norm_output_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype `F.layer_norm` returns for these inputs under the autocast state in force (it varies by device
    type and torch version), found once per combination on a one-element probe."""
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    key = (device, x.dtype, weight.dtype, autocast, torch.get_autocast_dtype(device) if autocast else None)
    if key not in _OUTPUT_DTYPES:
        probe = torch.zeros(1, 1, dtype=x.dtype, device=x.device)
        one = torch.ones(1, dtype=weight.dtype, device=weight.device)
        _OUTPUT_DTYPES[key] = F.layer_norm(probe, (1,), one, one).dtype
    return _OUTPUT_DTYPES[key]
