"""2:4 structured sparsity ("ASP", NViT Table 1): keep the 2 largest-magnitude weights of every 4 along the input.

Sparse tensor cores (Ampere and later) skip the zeros only when every group of 4 consecutive weights along the
reduction (input-channel) axis holds at most 2 non-zeros; TensorRT checks the pattern itself when built with the
sparse-weights flag. A latency table for sparse deployment times modules pruned this way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

GROUP = 4
KEEP = 2


def mask_2_4(weight: Tensor) -> Tensor:
    """A 0/1 mask keeping the 2 largest |w| of each group of 4 along the last (input) axis."""
    if weight.shape[-1] % GROUP:
        raise ValueError(f"the input axis ({weight.shape[-1]}) must be a multiple of {GROUP} for 2:4 sparsity")
    groups = weight.detach().abs().reshape(-1, GROUP)
    keep = groups.topk(KEEP, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(weight.shape)


def is_2_4_sparse(weight: Tensor) -> bool:
    """True when every group of 4 consecutive weights along the last axis has at most 2 non-zeros."""
    if weight.shape[-1] % GROUP:
        return False
    return bool(((weight.detach().reshape(-1, GROUP) != 0).sum(-1) <= KEEP).all())


def prune_2_4_(module: nn.Module) -> list[str]:
    """Prune every eligible Linear weight in place by magnitude; return the names of the pruned layers.

    Linear layers whose input width is not a multiple of 4 (e.g. a pruned width of 1) stay dense: no 2:4
    pattern exists for them and TensorRT would run them dense anyway.
    """
    pruned = []
    with torch.no_grad():
        for name, layer in module.named_modules():
            if isinstance(layer, nn.Linear) and layer.in_features % GROUP == 0:
                layer.weight.mul_(mask_2_4(layer.weight))
                pruned.append(name)
    return pruned
