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
from operator import attrgetter

import torch
from torch import Tensor

from lut_server.dims import WIDTH_AXES, BlockDims, BlockWidths, ModelDims
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


def _wg_dtype(param: Tensor) -> torch.dtype:
    """fp32 or wider: half-precision products of a weight and a (possibly scaled) gradient overflow or underflow."""
    return torch.promote_types(param.dtype, torch.float32)


def _wg(param: Tensor) -> Tensor:
    """w · ∂L/∂w elementwise in fp32 or wider (zeros where the parameter got no gradient)."""
    dtype = _wg_dtype(param)
    if param.grad is None:
        return torch.zeros_like(param, dtype=dtype)
    return param.detach().to(dtype) * param.grad.detach().to(dtype)


def _stacked_wg(params: list[Tensor]) -> Tensor:
    """w · ∂L/∂w of same-shaped parameters, stacked on a new first axis (call under no_grad): one multi-tensor
    product and one stack instead of a product per parameter, so a GPU's step is not spent launching kernels."""
    if len(params) == 1:
        return _wg(params[0]).unsqueeze(0)
    dtype = _wg_dtype(params[0])
    if params[0].dtype != dtype:
        weights = [p.to(dtype) for p in params]
        grads = [
            torch.zeros_like(w) if p.grad is None else p.grad.to(dtype) for p, w in zip(params, weights, strict=True)
        ]
    else:
        weights = list(params)
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    return torch.stack(torch._foreach_mul(weights, grads))


BLOCK_PARAMS = (
    "qk.weight", "qk.bias", "v.weight", "v.bias", "proj.weight", "proj.bias",
    "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
)  # fmt: skip


def _same_shaped_runs(blocks: list[Block], batch_blocks: bool) -> list[list[Block]]:
    """The blocks grouped by their dims (one group while pruning: gated weights keep their shapes), or one by one."""
    if not batch_blocks:
        return [[block] for block in blocks]
    groups: dict[BlockDims, list[Block]] = {}
    for block in blocks:
        groups.setdefault(block.dims, []).append(block)
    return list(groups.values())


def _block_gate_gradients(blocks: list[Block], sources: GateSources) -> tuple[list[dict[str, Tensor]], Tensor]:
    """Per-unit dL/dg of the heads/qk/v/mlp of same-shaped blocks, and their summed contribution to the EMB gates.

    Every unit sum over a Linear weight is a sum of the row sums or of the column sums of w · ∂L/∂w, so one
    elementwise product and two reductions serve all the units a matrix belongs to; each is done once for all the
    blocks, on the products stacked over blocks (axis 0).
    """
    d = blocks[0].dims
    h, q, v = d.heads, d.qk, d.v
    n = len(blocks)
    wg = {name: _stacked_wg(list(map(attrgetter(name), blocks))) for name in BLOCK_PARAMS}
    qk_rows = (wg["qk.weight"].sum(2) + wg["qk.bias"]).reshape(n, 2, h, q)
    v_rows = (wg["v.weight"].sum(2) + wg["v.bias"]).reshape(n, h, v)
    proj_cols = wg["proj.weight"].sum(1).reshape(n, h, v)
    # what both sources count: a unit's own projection (Q, K and V rows for a head, V rows, fc1 rows and bias)
    heads = qk_rows.sum((1, 3)) + v_rows.sum(2)
    v_dims = v_rows.sum(1)
    neurons = wg["fc1.weight"].sum(2) + wg["fc1.bias"]
    emb_terms = [wg["qk.weight"].sum(1), wg["v.weight"].sum(1), wg["proj.weight"].sum(2), wg["proj.bias"]]
    emb_terms += [wg["fc1.weight"].sum(1), wg["fc2.weight"].sum(2), wg["fc2.bias"]]
    if sources == "nvit":  # NViT's engine: that alone, and a QK dimension over Q only (see pruner.criterion_preset)
        units = {"heads": heads, "qk": qk_rows[:, 0].sum(1), "v": v_dims, "mlp": neurons}
    else:  # every weight the gate scales: also K (QK), the output projection (heads, V), fc2 (MLP) and the norms
        units = {
            "heads": heads + proj_cols.sum(2),
            "qk": qk_rows.sum((1, 2)),
            "v": v_dims + proj_cols.sum(1),
            "mlp": neurons + wg["fc2.weight"].sum(1),
        }
        emb_terms += [wg[name] for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")]
    emb = torch.stack(emb_terms).sum((0, 1))
    return [{axis: t[i] for axis, t in units.items()} for i in range(n)], emb


def gate_gradients(model: VisionTransformer, sources: GateSources = "all", batch_blocks: bool | None = None) -> Gates:
    """dL/dg for every unit gate at the current weights and gradients (call after loss.backward()).

    `sources="all"` sums over every weight a unit's gate scales (the exact gate gradient); `"nvit"` over the weights
    the NViT authors' engine counts for it (`pruner.criterion_preset`). Raises RuntimeError when no parameter
    holds a gradient: folding in zeros would silently dilute the importance.

    `batch_blocks` computes same-shaped blocks together (a few kernels for all of them) rather than one by one;
    by default on any device but the CPU. A GPU's step is launch-bound there; on the CPU a block's products stay
    in its caches, and stacked a DeiT-Small's took three times as long.
    """
    if all(p.grad is None for p in model.parameters()):
        raise RuntimeError("no parameter has a gradient: call accumulate() after loss.backward(), before zero_grad()")
    if sources not in ("all", "nvit"):
        raise ValueError(f"unknown gate-gradient sources {sources!r}")
    with torch.no_grad():
        return _gate_gradients(model, sources, batch_blocks)


def _gate_gradients(model: VisionTransformer, sources: GateSources, batch_blocks: bool | None) -> Gates:
    stem, head = model.stem, model.head
    emb = _wg(stem.patch_embed.weight).flatten(1).sum(1) + _wg(stem.patch_embed.bias)
    if sources == "all":
        emb = emb + _wg(stem.cls_token).sum((0, 1)) + _wg(stem.pos_embed).sum((0, 1))
        if stem.dist_token is not None:
            emb = emb + _wg(stem.dist_token).sum((0, 1))
        emb = emb + _wg(head.norm.weight) + _wg(head.norm.bias) + _wg(head.head.weight).sum(0)
        if head.head_dist is not None:
            emb = emb + _wg(head.head_dist.weight).sum(0)
    units_of: dict[int, dict[str, Tensor]] = {}
    if batch_blocks is None:
        batch_blocks = stem.patch_embed.weight.device.type != "cpu"
    for run in _same_shaped_runs(list(model.blocks), batch_blocks):
        units, run_emb = _block_gate_gradients(run, sources)
        emb = emb + run_emb
        units_of.update({id(block): u for block, u in zip(run, units, strict=True)})
    return Gates(emb, [BlockGates(**units_of[id(block)]) for block in model.blocks])
