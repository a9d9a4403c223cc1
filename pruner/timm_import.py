"""Converting a timm VisionTransformer / DeiT (timm >= 1.0) into the pruner's model with identical logits.

timm fuses Q, K and V into one `qkv` projection laid out as (3, heads, head_dim); the pruner's block keeps Q/K
(as one projection laid out (2, heads, qk)) and V apart so that QK and V widths can differ. The rows are copied
in that order, the attention scale is taken from the timm model, and LayerScale (if any) is folded into the output
projections. Options this ViT definition cannot express raise ValueError naming the option.
"""

from __future__ import annotations

import torch
from torch import nn

from lut_server.dims import BlockWidths, ModelDims
from profiler.vit import VisionTransformer, VitConfig


def _is_identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _layer_scale(module: nn.Module) -> torch.Tensor | None:
    if _is_identity(module):
        return None
    gamma = getattr(module, "gamma", None)
    if gamma is None:
        raise ValueError(f"unsupported layer-scale module {type(module).__name__}")
    return gamma.detach()


def _check_supported(model: nn.Module) -> None:
    problems = []
    if getattr(model, "global_pool", "token") != "token":
        problems.append(f"global_pool={model.global_pool!r} (only 'token' pooling)")
    if getattr(model, "num_reg_tokens", 0):
        problems.append("register tokens")
    if getattr(model, "no_embed_class", False):
        problems.append("no_embed_class=True")
    if getattr(model, "pos_embed", None) is None:
        problems.append("no position embedding")
    for name in ("norm_pre", "fc_norm"):
        if not _is_identity(getattr(model, name, None)):
            problems.append(f"{name} is not Identity")
    if not _is_identity(getattr(model.patch_embed, "norm", None)):
        problems.append("a norm after the patch embedding")
    if not _is_identity(getattr(model, "attn_pool", None)):
        problems.append("attention pooling")
    for i, block in enumerate(model.blocks):
        attn = block.attn
        if not (_is_identity(getattr(attn, "q_norm", None)) and _is_identity(getattr(attn, "k_norm", None))):
            problems.append(f"blocks.{i}: qk_norm")
        if not _is_identity(getattr(attn, "norm", None)):
            problems.append(f"blocks.{i}: attention output norm")
        if not _is_identity(getattr(block.mlp, "norm", None)):
            problems.append(f"blocks.{i}: MLP norm")
        if not isinstance(getattr(block.mlp, "act", None), nn.GELU):
            problems.append(f"blocks.{i}: MLP activation {type(getattr(block.mlp, 'act', None)).__name__} (GELU only)")
        if getattr(block.mlp.act, "approximate", "none") != "none":
            problems.append(f"blocks.{i}: tanh-approximated GELU")
    if problems:
        raise ValueError(f"cannot convert this timm model: {'; '.join(problems)}")


def _bias(linear: nn.Linear) -> torch.Tensor:
    """The layer's bias, or zeros on the layer's device and in its dtype when it has none."""
    if linear.bias is not None:
        return linear.bias.detach()
    return torch.zeros(linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype)


@torch.no_grad()
def from_timm(model: nn.Module) -> VisionTransformer:
    """A `profiler.vit.VisionTransformer` computing the same logits as the timm ViT/DeiT `model` (in eval mode)."""
    _check_supported(model)
    emb = model.embed_dim
    distilled = getattr(model, "dist_token", None) is not None
    patch = model.patch_embed.proj
    grid = model.patch_embed.grid_size
    if grid[0] != grid[1] or patch.kernel_size[0] != patch.kernel_size[1]:
        raise ValueError(f"only square images and patches are supported, got grid {grid}, patch {patch.kernel_size}")
    first_attn = model.blocks[0].attn
    config = VitConfig(
        image_size=grid[0] * patch.kernel_size[0],
        patch_size=patch.kernel_size[0],
        in_chans=patch.in_channels,
        num_classes=model.head.out_features if isinstance(model.head, nn.Linear) else 0,
        distilled=distilled,
        attn_scale=float(first_attn.scale),
        norm_eps=float(model.norm.eps),
    )
    if config.num_classes == 0:
        raise ValueError("the timm model has no classifier head (num_classes=0)")
    widths = []
    for block in model.blocks:
        heads = block.attn.num_heads
        head_dim = block.attn.qkv.out_features // (3 * heads)
        widths.append(BlockWidths(heads, head_dim, head_dim, block.mlp.fc1.out_features))
    ours = VisionTransformer(ModelDims(emb, tuple(widths)), config)

    ours.stem.patch_embed.weight.copy_(patch.weight)
    patch_bias = ours.stem.patch_embed.bias
    patch_bias.copy_(patch.bias if patch.bias is not None else torch.zeros_like(patch_bias))
    ours.stem.cls_token.copy_(model.cls_token)
    if distilled:
        ours.stem.dist_token.copy_(model.dist_token)
    if model.pos_embed.shape != ours.stem.pos_embed.shape:
        raise ValueError(f"pos_embed shape {tuple(model.pos_embed.shape)} != {tuple(ours.stem.pos_embed.shape)}")
    ours.stem.pos_embed.copy_(model.pos_embed)
    for src, dst in zip(model.blocks, ours.blocks, strict=True):
        if float(src.attn.scale) != config.attn_scale:
            raise ValueError("blocks with different attention scales are not supported")
        qkv_w, qkv_b = src.attn.qkv.weight.detach(), _bias(src.attn.qkv)
        split = 2 * dst.dims.heads * dst.dims.qk
        dst.qk.weight.copy_(qkv_w[:split])
        dst.qk.bias.copy_(qkv_b[:split])
        dst.v.weight.copy_(qkv_w[split:])
        dst.v.bias.copy_(qkv_b[split:])
        for ours_linear, theirs, scale in (
            (dst.proj, src.attn.proj, _layer_scale(src.ls1)),
            (dst.fc2, src.mlp.fc2, _layer_scale(src.ls2)),
        ):
            weight, bias = theirs.weight.detach(), _bias(theirs)
            if scale is not None:  # LayerScale: gamma * (W x + b) = (gamma W) x + gamma b
                weight, bias = weight * scale[:, None], bias * scale
            ours_linear.weight.copy_(weight)
            ours_linear.bias.copy_(bias)
        dst.fc1.weight.copy_(src.mlp.fc1.weight)
        dst.fc1.bias.copy_(_bias(src.mlp.fc1))
        for name in ("norm1", "norm2"):
            getattr(dst, name).weight.copy_(getattr(src, name).weight)
            getattr(dst, name).bias.copy_(getattr(src, name).bias)
            getattr(dst, name).eps = getattr(src, name).eps
    ours.head.norm.weight.copy_(model.norm.weight)
    ours.head.norm.bias.copy_(model.norm.bias)
    ours.head.head.weight.copy_(model.head.weight)
    ours.head.head.bias.copy_(model.head.bias)
    if distilled:
        ours.head.head_dist.weight.copy_(model.head_dist.weight)
        ours.head.head_dist.bias.copy_(model.head_dist.bias)
    return ours.eval()
