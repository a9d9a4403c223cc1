"""LayerNorm over the open EMB channels only, computed by one fused `F.layer_norm` over all channels.

Once EMB channels are removed, the gated model must normalise over the open channels alone, as the compacted model
does. Gathering the open channels, normalising and scattering them back costs an index, a zero fill and an
index_put in both passes for every norm of every block; masked statistics written out as elementwise passes cost
about ten passes over the activations per norm, a quarter of a DeiT-Base training step on a GPU. Instead, every
closed channel is filled with the open channels' mean μ; LayerNorm over all C channels of that vector then has mean
μ and variance (n/C)·σ², with n open channels and σ² their variance, so

    LN_open(x) = sqrt(n/C) · LN_all(fill(x); eps·n/C)   on the open channels, and 0 on the closed ones,

which is one matrix-vector product (μ), one `where` (the fill) and the fused LayerNorm, whose weight absorbs
sqrt(n/C) and the mask; the backward pass is the fused LayerNorm's and two elementwise passes. Closed channels get
y = 0 and no gradient (not to x, w or b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class _ChannelVectors:
    """What a mask of n open channels among C contributes to every pass, in one dtype on one device, made once
    per mask: each forward and backward pass then launches a few kernels, not a dozen."""

    open_channels: Tensor  # bool
    mask: Tensor  # 1 on open channels, 0 on closed ones
    open_share: Tensor  # mask / n: x @ open_share is the open channels' mean
    closed_share: Tensor  # (1 - mask) / n
    affine_mask: Tensor  # mask · sqrt(n/C): the fused LayerNorm's weight is w · affine_mask
    share: float  # n / C

    @classmethod
    def of(cls, open_channels: Tensor, active_count: int, dtype: torch.dtype) -> _ChannelVectors:
        mask = open_channels.to(dtype)
        share = active_count / open_channels.numel()
        return cls(open_channels, mask, mask / active_count, (1.0 - mask) / active_count, mask * share**0.5, share)


class _MaskedLayerNorm(torch.autograd.Function):
    """y = sqrt(n/C) · LN_all(fill(x); eps·n/C) with the mask in the affine weight and bias; float math in the
    vectors' dtype.

    The backward pass is the fused LayerNorm's own, then the fill's in closed form: an open channel's gradient is
    its own plus 1/n of the closed channels' sum (they all hold the mean), and a closed channel gets none.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, vectors: _ChannelVectors, eps: float) -> Tensor:
        dtype = vectors.mask.dtype
        xf = x.to(dtype)
        filled = torch.where(vectors.open_channels, xf, (xf @ vectors.open_share).unsqueeze(-1))
        w, b = weight.to(dtype) * vectors.affine_mask, bias.to(dtype) * vectors.mask
        y, ln_mean, ln_rstd = torch.ops.aten.native_layer_norm(filled, [filled.shape[-1]], w, b, eps * vectors.share)
        ctx.save_for_backward(filled, ln_mean, ln_rstd, w, b)
        ctx.vectors = vectors
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        return y

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        filled, ln_mean, ln_rstd, w, b = ctx.saved_tensors
        vectors: _ChannelVectors = ctx.vectors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_filled, grad_w, grad_b = torch.ops.aten.native_layer_norm_backward(
            grad_out.to(filled.dtype), filled, [filled.shape[-1]], ln_mean, ln_rstd, w, b, wanted
        )
        grad_x = None
        if wanted[0]:
            closed = (grad_filled @ vectors.closed_share).unsqueeze(-1)
            grad_x = grad_filled.add_(closed).mul_(vectors.mask).to(x_dtype)
        if wanted[1]:
            grad_w = grad_w.mul_(vectors.affine_mask).to(w_dtype)
        if wanted[2]:
            grad_b = grad_b.mul_(vectors.mask).to(b_dtype)
        return grad_x, grad_w, grad_b, None, None


class ActiveChannelLayerNorm(nn.LayerNorm):
    """A LayerNorm whose statistics use only the open channels (all channels until `set_active` closes some)."""

    channel_mask: Tensor | None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.register_buffer("channel_mask", None, persistent=False)
        self.active_count = self.normalized_shape[-1]
        self._vectors: dict[tuple[torch.dtype, torch.device], _ChannelVectors] = {}

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
        self._vectors = {}
        if open_channels is None or bool(open_channels.all()):
            self.channel_mask, self.active_count = None, self.normalized_shape[-1]
            return
        # kept as bool so that `.half()` on the model cannot lower the precision of the statistics
        self.channel_mask = open_channels.to(self.weight.device, torch.bool)
        self.active_count = int(open_channels.count_nonzero())

    def forward(self, x: Tensor) -> Tensor:
        if self.channel_mask is None:
            return super().forward(x)
        dtype = torch.promote_types(self.weight.dtype, torch.float32)  # statistics in fp32 or wider
        key = (dtype, self.channel_mask.device)  # the buffer follows the module to another device
        if key not in self._vectors:
            self._vectors[key] = _ChannelVectors.of(self.channel_mask, self.active_count, dtype)
        out_dtype = _layer_norm_output_dtype(x, self.weight)
        with torch.autocast(x.device.type, enabled=False):
            y = _MaskedLayerNorm.apply(x, self.weight, self.bias, self._vectors[key], self.eps)
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
