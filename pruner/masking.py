"""Removing units before compaction: weights of closed gates are held at zero, LayerNorms see only open channels.

Zeroing a unit's weights removes it exactly for heads, QK/V dimensions and MLP neurons. An EMB channel is different:
LayerNorm's mean and variance run over all channels, so a zeroed channel would still shift them. The gated model
therefore normalises over the open EMB channels only, which is exactly what the compacted model computes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from profiler.vit import VisionTransformer
from pruner.active_channel_norm import ActiveChannelLayerNorm
from pruner.gates import Gates


def install_active_channel_norms(model: VisionTransformer) -> list[ActiveChannelLayerNorm]:
    """Swap every LayerNorm of the model for an ActiveChannelLayerNorm (same parameters); return them."""
    norms = []
    owners = [(block, "norm1") for block in model.blocks] + [(block, "norm2") for block in model.blocks]
    owners.append((model.head, "norm"))
    for owner, name in owners:
        norm = getattr(owner, name)
        if not isinstance(norm, ActiveChannelLayerNorm):
            norm = ActiveChannelLayerNorm.replacing(norm)
            setattr(owner, name, norm)
        norms.append(norm)
    return norms


def _outer(*vectors: Tensor) -> Tensor:
    out = vectors[0]
    for v in vectors[1:]:
        out = out.unsqueeze(-1) * v
    return out


def weight_masks(model: VisionTransformer, gates: Gates, only_closed: bool = True) -> list[tuple[nn.Parameter, Tensor]]:
    """(parameter, gate product of the same shape) for every gated parameter (only those with a closed gate).

    With gate tensors that require grad, `param * mask` is the explicit re-parameterisation W = g·W_S.
    """
    e = gates.emb
    pairs: list[tuple[nn.Parameter, Tensor]] = []
    stem, head = model.stem, model.head
    pairs.append((stem.patch_embed.weight, e.view(-1, 1, 1, 1).expand_as(stem.patch_embed.weight)))
    pairs += [(stem.patch_embed.bias, e), (stem.cls_token, e.view(1, 1, -1)), (stem.pos_embed, e.view(1, 1, -1))]
    if stem.dist_token is not None:
        pairs.append((stem.dist_token, e.view(1, 1, -1)))
    for block, g in zip(model.blocks, gates.blocks, strict=True):
        qk_rows = _outer(torch.ones(2), g.heads, g.qk).flatten()
        v_rows = _outer(g.heads, g.v).flatten()
        pairs += [
            (block.norm1.weight, e),
            (block.norm1.bias, e),
            (block.qk.weight, _outer(qk_rows, e)),
            (block.qk.bias, qk_rows),
            (block.v.weight, _outer(v_rows, e)),
            (block.v.bias, v_rows),
            (block.proj.weight, _outer(e, v_rows)),
            (block.proj.bias, e),
            (block.norm2.weight, e),
            (block.norm2.bias, e),
            (block.fc1.weight, _outer(g.mlp, e)),
            (block.fc1.bias, g.mlp),
            (block.fc2.weight, _outer(e, g.mlp)),
            (block.fc2.bias, e),
        ]
    pairs += [(head.norm.weight, e), (head.norm.bias, e), (head.head.weight, e.view(1, -1).expand_as(head.head.weight))]
    if head.head_dist is not None:
        pairs.append((head.head_dist.weight, e.view(1, -1).expand_as(head.head_dist.weight)))
    out = []
    for param, mask in pairs:
        mask = mask.to(param.device, param.dtype).expand_as(param)
        if not only_closed or not bool((mask != 0).all()):
            out.append((param, mask if mask.requires_grad else mask.contiguous()))
    return out


def apply_weight_masks(masks: list[tuple[nn.Parameter, Tensor]]) -> None:
    """Zero the weights of closed gates in place (an optimizer step may have moved them since)."""
    if not masks:
        return
    with torch.no_grad():  # one multi-tensor product, not a kernel per parameter
        torch._foreach_mul_([param for param, _ in masks], [mask for _, mask in masks])


def set_active_channels(norms: list[ActiveChannelLayerNorm], gates: Gates) -> None:
    open_channels = gates.emb != 0
    for norm in norms:
        norm.set_active(open_channels)
