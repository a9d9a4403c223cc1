"""The one ViT definition: blocks with free EMB/H/QK/V/MLP, timed by the profiler and built by the pruner.

Attention is written out (scores, softmax, probabilities × values) rather than fused, because QK ≠ V must be
expressible and because the profiler times the block in the pieces the forward pass is made of:
`attention_scores` (norm1 + Q/K projection + softmax), `attention_values` (V projection + mixing + output
projection + residual) and `mlp_residual` (norm2 + MLP + residual); `attention_residual` is the first two as one
piece, for runtimes that fuse attention (an exported graph of it is the MatMul-Softmax-MatMul pattern they fuse).
The attention scale is fixed by the model (DeiT's 64**-0.5), not recomputed from a pruned QK width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lut_server.dims import BlockDims, BlockWidths, ModelDims

DEFAULT_ATTN_SCALE = 64**-0.5


@dataclass(frozen=True)
class VitConfig:
    """Everything about a ViT that is not a prunable width."""

    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    distilled: bool = False
    attn_scale: float = DEFAULT_ATTN_SCALE
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def prefix_tokens(self) -> int:
        return 2 if self.distilled else 1

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        return self.num_patches + self.prefix_tokens

    def as_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "distilled": self.distilled,
            "attn_scale": self.attn_scale,
            "norm_eps": self.norm_eps,
        }

    @classmethod
    def from_dict(cls, data: dict) -> VitConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Block(nn.Module):
    """Pre-norm transformer block with separate Q/K and V projections (QK and V widths independent)."""

    def __init__(self, dims: BlockDims, attn_scale: float = DEFAULT_ATTN_SCALE, norm_eps: float = 1e-6):
        super().__init__()
        self.dims = dims
        self.attn_scale = attn_scale
        e, h = dims.emb, dims.heads
        self.norm1 = nn.LayerNorm(e, eps=norm_eps)
        self.qk = nn.Linear(e, 2 * h * dims.qk)  # [Q heads | K heads], each head dims.qk wide
        self.v = nn.Linear(e, h * dims.v)
        self.proj = nn.Linear(h * dims.v, e)
        self.norm2 = nn.LayerNorm(e, eps=norm_eps)
        self.fc1 = nn.Linear(e, dims.mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dims.mlp, e)

    def attention_scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (norm1(x), softmax(QKᵀ·scale)) with probabilities shaped (B, H, T, T)."""
        b, t, _ = x.shape
        h = self.norm1(x)
        qk = self.qk(h).reshape(b, t, 2, self.dims.heads, self.dims.qk).permute(2, 0, 3, 1, 4)
        q, k = qk[0], qk[1]
        scores = (q * self.attn_scale) @ k.transpose(-2, -1)
        return h, scores.softmax(dim=-1)

    def attention_values(self, x: Tensor, h: Tensor, probs: Tensor) -> Tensor:
        b, t, _ = x.shape
        v = self.v(h).reshape(b, t, self.dims.heads, self.dims.v).transpose(1, 2)
        mixed = (probs @ v).transpose(1, 2).reshape(b, t, self.dims.heads * self.dims.v)
        return x + self.proj(mixed)

    def attention_residual(self, x: Tensor) -> Tensor:
        """The whole attention sub-block (scores, softmax, values, projection, residual) as one piece."""
        h, probs = self.attention_scores(x)
        return self.attention_values(x, h, probs)

    def mlp_residual(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp_residual(self.attention_residual(x))


class Stem(nn.Module):
    """Patch embedding, class (and distillation) token, position embedding."""

    def __init__(self, emb: int, config: VitConfig):
        super().__init__()
        self.patch_embed = nn.Conv2d(config.in_chans, emb, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, emb))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, emb)) if config.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, config.tokens, emb))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        return torch.cat([*prefix, x], dim=1) + self.pos_embed


class Head(nn.Module):
    """Final norm and classifier; with a distillation token, DeiT's two heads averaged at inference."""

    def __init__(self, emb: int, config: VitConfig):
        super().__init__()
        self.norm = nn.LayerNorm(emb, eps=config.norm_eps)
        self.head = nn.Linear(emb, config.num_classes)
        self.head_dist = nn.Linear(emb, config.num_classes) if config.distilled else None

    def forward_both(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        x = self.norm(x)
        logits = self.head(x[:, 0])
        return logits, (self.head_dist(x[:, 1]) if self.head_dist is not None else None)

    def forward(self, x: Tensor) -> Tensor:
        logits, dist = self.forward_both(x)
        return logits if dist is None else (logits + dist) / 2


class VisionTransformer(nn.Module):
    """A ViT/DeiT whose blocks each have their own widths (one shared EMB)."""

    def __init__(self, dims: ModelDims, config: VitConfig | None = None):
        super().__init__()
        self.config = config or VitConfig()
        self.model_dims = dims
        self.stem = Stem(dims.emb, self.config)
        self.blocks = nn.ModuleList(Block(b, self.config.attn_scale, self.config.norm_eps) for b in dims.block_dims())
        self.head = Head(dims.emb, self.config)
        self.apply(_init_weights)

    def forward_features(self, images: Tensor) -> Tensor:
        x = self.stem(images)
        for block in self.blocks:
            x = block(x)
        return x

    def forward_both(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Class-token and distillation-token logits (the latter None without a distillation token)."""
        return self.head.forward_both(self.forward_features(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.forward_features(images))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def deit_dims(emb: int = 768, depth: int = 12, heads: int = 12, mlp_ratio: float = 4.0) -> ModelDims:
    """The uniform dims of a DeiT/ViT: qk = v = emb / heads."""
    per_head = emb // heads
    return ModelDims(emb, tuple(BlockWidths(heads, per_head, per_head, int(emb * mlp_ratio)) for _ in range(depth)))
