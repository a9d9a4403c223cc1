"""Compaction: copy the open units of a gated model into a physically smaller dense `VisionTransformer`.

The smaller model is built with the profiler's own ViT definition, so the latency table describes exactly the
model that is deployed. Head alignment is undone here: the kept heads, each with the block's kept QK and V
dimensions, are concatenated back into plain Q/K, V and output projections.
"""

from __future__ import annotations

import torch
from torch import Tensor

from profiler.vit import Block, VisionTransformer
from pruner.gates import Gates


def _keep(gate: Tensor) -> Tensor:
    return torch.nonzero(gate != 0).flatten()


def _copy_block(src: Block, dst: Block, e: Tensor, heads: Tensor, qk: Tensor, v: Tensor, mlp: Tensor) -> None:
    d = src.dims
    qk_w = src.qk.weight.reshape(2, d.heads, d.qk, d.emb)[:, heads][:, :, qk][..., e]
    dst.qk.weight.copy_(qk_w.reshape(dst.qk.weight.shape))
    dst.qk.bias.copy_(src.qk.bias.reshape(2, d.heads, d.qk)[:, heads][:, :, qk].reshape(-1))
    v_w = src.v.weight.reshape(d.heads, d.v, d.emb)[heads][:, v][..., e]
    dst.v.weight.copy_(v_w.reshape(dst.v.weight.shape))
    dst.v.bias.copy_(src.v.bias.reshape(d.heads, d.v)[heads][:, v].reshape(-1))
    proj_w = src.proj.weight.reshape(d.emb, d.heads, d.v)[e][:, heads][:, :, v]
    dst.proj.weight.copy_(proj_w.reshape(dst.proj.weight.shape))
    dst.proj.bias.copy_(src.proj.bias[e])
    for name in ("norm1", "norm2"):
        getattr(dst, name).weight.copy_(getattr(src, name).weight[e])
        getattr(dst, name).bias.copy_(getattr(src, name).bias[e])
    dst.fc1.weight.copy_(src.fc1.weight[mlp][:, e])
    dst.fc1.bias.copy_(src.fc1.bias[mlp])
    dst.fc2.weight.copy_(src.fc2.weight[e][:, mlp])
    dst.fc2.bias.copy_(src.fc2.bias[e])


@torch.no_grad()
def compact(model: VisionTransformer, gates: Gates) -> VisionTransformer:
    """The dense model holding only the units whose gate is open; its logits equal the gated model's.

    It is built on the source model's device and in its dtype (a bf16 CUDA model compacts to a bf16 CUDA model).
    """
    source = model.stem.pos_embed
    small = VisionTransformer(gates.model_dims(), model.config).to(device=source.device, dtype=source.dtype)
    e = _keep(gates.emb)
    src, dst = model.stem, small.stem
    dst.patch_embed.weight.copy_(src.patch_embed.weight[e])
    dst.patch_embed.bias.copy_(src.patch_embed.bias[e])
    dst.cls_token.copy_(src.cls_token[..., e])
    dst.pos_embed.copy_(src.pos_embed[..., e])
    if src.dist_token is not None:
        dst.dist_token.copy_(src.dist_token[..., e])
    for block_src, block_dst, g in zip(model.blocks, small.blocks, gates.blocks, strict=True):
        _copy_block(block_src, block_dst, e, _keep(g.heads), _keep(g.qk), _keep(g.v), _keep(g.mlp))
    small.head.norm.weight.copy_(model.head.norm.weight[e])
    small.head.norm.bias.copy_(model.head.norm.bias[e])
    small.head.head.weight.copy_(model.head.head.weight[:, e])
    small.head.head.bias.copy_(model.head.head.bias)
    if model.head.head_dist is not None:
        small.head.head_dist.weight.copy_(model.head.head_dist.weight[:, e])
        small.head.head_dist.bias.copy_(model.head.head_dist.bias)
    return small.train(model.training)
