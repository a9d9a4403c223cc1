"""The latency-aware pruning criterion I_S^L = I_S − η·(Lat(W) − Lat(W∖S)) over candidate groups (NViT Eq. 7).

A candidate group is the `group_size` least important open units of one dimension of one block (or of EMB). Its
Hessian importance I_S is the sum of its units' importances (the units are chosen after scoring, so cross terms
between them are not estimated). Its latency term is the exact group delta from one `deltas` query.

Normalisation: I_S is in loss² units and its scale changes with the loss, the data and training; the latency delta
is in ms. Each term is divided by its mean over the current candidates, so both are dimensionless and about 1 on
average, and η says how many "average importances" one "average latency saving" is worth:

    score_S = I_S / mean_C(I) − η · ΔLat_S / mean_C(ΔLat)

η = 0 is pure Hessian pruning; the groups with the lowest score are removed first. The `nvit` criterion
(`pruner.criterion_preset`) uses NViT's own, unnormalised term instead: score_S = I_S − η · ΔLat_S in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from lut_server.dims import WIDTH_AXES
from pruner.criterion_preset import LatencyTerm
from pruner.gates import Gates


@dataclass
class Candidate:
    """One removable group: `units` are indices into the gate vector of `axis` (in block `block`, None for emb)."""

    axis: str
    block: int | None
    units: list[int]
    importance: float
    latency_saved_ms: float
    score: float = 0.0

    @property
    def name(self) -> str:
        return "emb" if self.block is None else f"blocks.{self.block}.{self.axis}"

    def as_dict(self) -> dict:
        return {
            "group": self.name,
            "axis": self.axis,
            "block": self.block,
            "units": self.units,
            "importance": self.importance,
            "latency_saved_ms": self.latency_saved_ms,
            "score": self.score,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(
            data["axis"],
            data["block"],
            [int(u) for u in data["units"]],
            float(data["importance"]),
            float(data["latency_saved_ms"]),
            float(data["score"]),
        )


def least_important_units(importance: torch.Tensor, gate: torch.Tensor, count: int) -> list[int]:
    """Indices of the `count` open units with the lowest importance (ties broken by index)."""
    open_idx = torch.nonzero(gate != 0).flatten()
    order = torch.argsort(importance[open_idx], stable=True)
    return sorted(int(i) for i in open_idx[order[:count]])


def candidates(
    gates: Gates,
    importance: Gates,
    deltas_emb: float | None,
    deltas_blocks: list[Mapping[str, float | None]],
    group_size: Mapping[str, int],
    min_width: Mapping[str, int],
) -> list[Candidate]:
    """Every group that may be removed now: its width stays >= min_width and the latency source gave a delta."""
    out: list[Candidate] = []

    def consider(axis: str, block: int | None, gate: torch.Tensor, imp: torch.Tensor, delta: float | None) -> None:
        width = int(gate.count_nonzero())
        if delta is None or width - group_size[axis] < min_width[axis]:
            return
        units = least_important_units(imp, gate, group_size[axis])
        out.append(Candidate(axis, block, units, float(imp[units].sum()), float(delta)))

    consider("emb", None, gates.emb, importance.emb, deltas_emb)
    for i, (g, imp, d) in enumerate(zip(gates.blocks, importance.blocks, deltas_blocks, strict=True)):
        for axis in WIDTH_AXES:
            consider(axis, i, g.get(axis), imp.get(axis), d.get(axis))
    return out


def score(cands: list[Candidate], eta: float, latency_term: LatencyTerm = "normalised") -> list[Candidate]:
    """Fill in each candidate's latency-aware score; return them sorted, lowest (remove first) first."""
    if not cands:
        return []
    if latency_term == "seconds":
        for c in cands:
            c.score = c.importance - eta * c.latency_saved_ms / 1000.0
        return sorted(cands, key=lambda c: (c.score, c.name))
    if latency_term != "normalised":
        raise ValueError(f"unknown latency term {latency_term!r}")
    mean_imp = sum(c.importance for c in cands) / len(cands)
    mean_lat = sum(abs(c.latency_saved_ms) for c in cands) / len(cands)
    for c in cands:
        imp = c.importance / mean_imp if mean_imp > 0 else 0.0
        lat = c.latency_saved_ms / mean_lat if mean_lat > 0 else 0.0
        c.score = imp - eta * lat
    return sorted(cands, key=lambda c: (c.score, c.name))
