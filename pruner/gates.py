"""One gate per structural unit of a ViT, and the gradient of the loss with respect to every gate.

Units (NViT §3.1, with head alignment): an EMB channel (shared by every block, the stem and the head), a head, a
QK dimension (shared by all heads of its block), a V dimension (likewise) and an MLP neuron. A unit's gate scales
every weight element that belongs to it, W = g·W_S, so the gated model equals the original while all gates are 1
and a unit is removed by setting its gate to 0.

The gate gradient at g = 1 is dL/dg_S = Σ_{s∈S} ∂L/∂w_s · w_s (NViT Eq. 4). It is computed here in closed form from
the weights and the gradients back-propagation already produced, so training never pays for re-parameterising the
weights in every forward pass; `tests/pruner` checks it against autograd through explicit gates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lut_server.dims import WIDTH_AXES, BlockWidths, ModelDims
from profiler.vit import Block, VisionTransformer
from pruner.criterion_preset import GateSources


@dataclass
class BlockGates:
    """Per-block gates: `heads` [H], `qk` [QK], `v` [V], `mlp` [MLP]; 1 = kept, 0 = removed."""

    heads: Tensor
    qk: Tensor
    v: Tensor
    mlp: Tensor

    def get(self, axis: str) -> Tensor:
        return getattr(self, axis)

    def widths(self) -> BlockWidths:
        return BlockWidths(*(int(self.get(a).count_nonzero()) for a in WIDTH_AXES))


@dataclass
class Gates:
    """All gates of a model: one EMB vector and one BlockGates per block."""

    emb: Tensor
    blocks: list[BlockGates]

    @classmethod
    def ones_like(cls, model: VisionTransformer, dtype: torch.dtype = torch.float32) -> Gates:
        dims = model.model_dims
        return cls(
            emb=torch.ones(dims.emb, dtype=dtype),
            blocks=[BlockGates(*(torch.ones(getattr(b, a), dtype=dtype) for a in WIDTH_AXES)) for b in dims.blocks],
        )

    def zeros_like(self) -> Gates:
        return Gates(
            torch.zeros_like(self.emb, dtype=torch.float64),
            [BlockGates(*(torch.zeros_like(b.get(a), dtype=torch.float64) for a in WIDTH_AXES)) for b in self.blocks],
        )

    def vectors(self) -> list[tuple[str, int | None, Tensor]]:
        """(axis, block index or None for emb, tensor) for every gate vector."""
        out: list[tuple[str, int | None, Tensor]] = [("emb", None, self.emb)]
        for i, block in enumerate(self.blocks):
            out.extend((axis, i, block.get(axis)) for axis in WIDTH_AXES)
        return out

    def model_dims(self) -> ModelDims:
        """The dims the model has once the removed units are dropped."""
        return ModelDims(int(self.emb.count_nonzero()), tuple(b.widths() for b in self.blocks))

    def as_dict(self) -> dict:
        return {
            "emb": self.emb.tolist(),
            "blocks": [{a: b.get(a).tolist() for a in WIDTH_AXES} for b in self.blocks],
        }

    @classmethod
    def from_dict(cls, data: dict, dtype: torch.dtype = torch.float32) -> Gates:
        return cls(
            emb=torch.tensor(data["emb"], dtype=dtype),
            blocks=[BlockGates(*(torch.tensor(b[a], dtype=dtype) for a in WIDTH_AXES)) for b in data["blocks"]],
        )

    def flat(self) -> Tensor:
        """Every gate vector concatenated in `vectors()` order (one tensor: one collective, one copy)."""
        return torch.cat([t.reshape(-1) for _, _, t in self.vectors()])

    def like_flat(self, flat: Tensor) -> Gates:
        """A Gates of the same layout whose vectors are views into `flat`."""
        sizes = [t.numel() for _, _, t in self.vectors()]
        parts = list(torch.split(flat, sizes))
        emb, rest = parts[0], parts[1:]
        n = len(WIDTH_AXES)
        return Gates(emb, [BlockGates(*rest[i * n : (i + 1) * n]) for i in range(len(self.blocks))])


def _wg(param: Tensor) -> Tensor:
    """w · ∂L/∂w elementwise in fp32 or wider (zeros where the parameter got no gradient).

    At least fp32 because half-precision products of a weight and a (possibly scaled) gradient overflow or
    underflow.
    """
    dtype = torch.promote_types(param.dtype, torch.float32)
    if param.grad is None:
        return torch.zeros_like(param, dtype=dtype)
    return param.detach().to(dtype) * param.grad.detach().to(dtype)


def _wg_rows_cols(param: Tensor) -> tuple[Tensor, Tensor]:
    """Row sums and column sums of w · ∂L/∂w of a matrix (fp32 or wider).

    Every unit sum over a Linear weight is a sum of its row sums or of its column sums, so one elementwise
    product and two reductions serve all the units the matrix belongs to.
    """
    product = _wg(param)
    return product.sum(1), product.sum(0)


def _block_gate_gradients(block: Block, sources: GateSources) -> tuple[dict[str, Tensor], Tensor]:
    """Per-unit dL/dg of one block's heads/qk/v/mlp, and its contribution to the EMB gates."""
    d = block.dims
    h, q, v = d.heads, d.qk, d.v
    qk_rows, qk_cols = _wg_rows_cols(block.qk.weight)
    qk_rows = (qk_rows + _wg(block.qk.bias)).reshape(2, h, q)
    v_rows, v_cols = _wg_rows_cols(block.v.weight)
    v_rows = (v_rows + _wg(block.v.bias)).reshape(h, v)
    proj_rows, proj_cols = _wg_rows_cols(block.proj.weight)
    proj_cols = proj_cols.reshape(h, v)
    fc1_rows, fc1_cols = _wg_rows_cols(block.fc1.weight)
    fc2_rows, fc2_cols = _wg_rows_cols(block.fc2.weight)
    # what both sources count: a unit's own projection (Q, K and V rows for a head, V rows, fc1 rows and bias)
    heads = qk_rows.sum((0, 2)) + v_rows.sum(1)
    v_dims = v_rows.sum(0)
    neurons = fc1_rows + _wg(block.fc1.bias)
    if sources == "nvit":  # NViT's engine: that alone, and a QK dimension over Q only (see pruner.criterion_preset)
        units = {"heads": heads, "qk": qk_rows[0].sum(0), "v": v_dims, "mlp": neurons}
        emb = qk_cols + v_cols + proj_rows + _wg(block.proj.bias) + fc1_cols + fc2_rows + _wg(block.fc2.bias)
        return units, emb
    # every weight the gate scales: also K (QK), the output projection (heads, V), fc2 (MLP) and the LayerNorms (EMB)
    units = {
        "heads": heads + proj_cols.sum(1),
        "qk": qk_rows.sum((0, 1)),
        "v": v_dims + proj_cols.sum(0),
        "mlp": neurons + fc2_cols,
    }
    emb = (
        _wg(block.norm1.weight)
        + _wg(block.norm1.bias)
        + qk_cols
        + v_cols
        + proj_rows
        + _wg(block.proj.bias)
        + _wg(block.norm2.weight)
        + _wg(block.norm2.bias)
        + fc1_cols
        + fc2_rows
        + _wg(block.fc2.bias)
    )
    return units, emb


def gate_gradients(model: VisionTransformer, sources: GateSources = "all") -> Gates:
    """dL/dg for every unit gate at the current weights and gradients (call after loss.backward()).

    `sources="all"` sums over every weight a unit's gate scales (the exact gate gradient); `"nvit"` over the weights
    the NViT authors' engine counts for it (`pruner.criterion_preset`). Raises RuntimeError when no parameter
    holds a gradient: folding in zeros would silently dilute the importance.
    """
    if all(p.grad is None for p in model.parameters()):
        raise RuntimeError("no parameter has a gradient: call accumulate() after loss.backward(), before zero_grad()")
    if sources not in ("all", "nvit"):
        raise ValueError(f"unknown gate-gradient sources {sources!r}")
    stem, head = model.stem, model.head
    emb = _wg(stem.patch_embed.weight).flatten(1).sum(1) + _wg(stem.patch_embed.bias)
    if sources == "all":
        emb = emb + _wg(stem.cls_token).sum((0, 1)) + _wg(stem.pos_embed).sum((0, 1))
        if stem.dist_token is not None:
            emb = emb + _wg(stem.dist_token).sum((0, 1))
        emb = emb + _wg(head.norm.weight) + _wg(head.norm.bias) + _wg(head.head.weight).sum(0)
        if head.head_dist is not None:
            emb = emb + _wg(head.head_dist.weight).sum(0)
    blocks = []
    for block in model.blocks:
        units, block_emb = _block_gate_gradients(block, sources)
        emb = emb + block_emb
        blocks.append(BlockGates(**units))
    return Gates(emb, blocks)
