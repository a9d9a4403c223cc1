"""The two pruning criteria: this package's default, and `nvit`, the choices of the NViT authors' public code.

The authors' pruning engine (NVlabs/NViT, `nvit/pruning_core/pruning_engine_general.py`, method 23, with the
structure of `nvit/model_pruning.py` and the settings of `pruning_configs/group8_m23_m09.json` and TRAINING.md)
differs from the default here in five ways, each a field of `CriterionPreset`:

- which weights a gate gradient sums over (`gate_sources`): a QK dimension over Q only (K is removed with it but
  not counted), a V dimension over V only (not the output projection), an MLP neuron over fc1 only, a head over
  its Q, K and V (not the output projection), an EMB channel over the patch embedding, Q/K/V, the output
  projection and the MLP (not the LayerNorms, the tokens or the classifier);
- a per-structure divisor applied to each batch's gate gradient before squaring (`rescale`): EMB 12, heads 12
  (6, then 2 again because Q/K/V weights are among its sources), QK 2, V 2, MLP 1;
- the latency term (`latency_term`): η times the latency saved in seconds, subtracted from the importance as is
  (the default divides importance and saving each by their mean over the candidates), with η = 5e-4;
- heads removed two at a time (`group_sizes`; the other groups, EMB 16, QK 8, V 8, MLP 16, are the default's);
- importance averaged over each pruning interval, then a momentum average across intervals (`interval_momentum`
  0.9; the first interval's average is taken as is).

η values do not transfer between the two: the default's η weighs dimensionless ratios, NViT's weighs a loss² sum
against seconds (their objective multiplies the distillation term by 1e5, which scales importance by 1e10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

GateSources = Literal["all", "nvit"]
LatencyTerm = Literal["normalised", "seconds"]


@dataclass(frozen=True)
class CriterionPreset:
    """Everything that makes a criterion: gate-gradient sources, rescaling, latency term, η, groups, momentum."""

    name: str
    gate_sources: GateSources = "all"
    rescale: Mapping[str, float] = field(default_factory=dict)
    latency_term: LatencyTerm = "normalised"
    eta: float = 1.0
    group_sizes: Mapping[str, int] = field(default_factory=dict)
    interval_momentum: float | None = None

    def divisor(self, axis: str) -> float:
        return float(self.rescale.get(axis, 1.0))


DEFAULT = CriterionPreset("default")

NVIT = CriterionPreset(
    "nvit",
    gate_sources="nvit",
    rescale={"emb": 12.0, "heads": 12.0, "qk": 2.0, "v": 2.0, "mlp": 1.0},
    latency_term="seconds",
    eta=5e-4,
    group_sizes={"heads": 2},
    interval_momentum=0.9,
)

PRESETS: dict[str, CriterionPreset] = {p.name: p for p in (DEFAULT, NVIT)}


def criterion_preset(name: str) -> CriterionPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; criteria are {sorted(PRESETS)}") from None
