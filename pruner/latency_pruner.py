"""The pruning loop that fits into a user's own training code.

    p = Pruner(model, latency=LatencyClient(url, table), target_ratio=0.5)
    for it, (x, y) in enumerate(loader):
        loss = criterion(model(x), y); loss.backward()
        p.accumulate()                       # fold this batch's gate gradients into the importance
        optimizer.step(); optimizer.zero_grad()
        if it % k == 0 and not p.done:
            p.step()                         # one `deltas` query, removes the lowest-scoring group(s)
    small = p.compact()                      # a physically smaller dense VisionTransformer

Removed units stay in the model as zeroed weights (re-zeroed before every forward pass, since the optimizer may
move them) until `compact()` builds the dense model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lut_server.dims import AXES, ModelDims
from lut_server.latency_table import DEFAULT_STEP
from profiler.vit import VisionTransformer
from pruner.compaction import compact
from pruner.criterion import Candidate, candidates, score
from pruner.gates import Gates, gate_gradients
from pruner.importance import ImportanceAccumulator
from pruner.masking import apply_weight_masks, install_active_channel_norms, set_active_channels, weight_masks


class LatencySource(Protocol):
    """What the pruner needs from a latency table or a latency service client."""

    @property
    def ranges(self) -> Mapping[str, tuple[int, int]]: ...

    def model_latency(self, model: ModelDims) -> float: ...

    def deltas(self, model: ModelDims, step: Mapping[str, int] | None = None) -> Any: ...


@dataclass
class PruneStep:
    """What one `step()` did: the removed groups and the predicted latency before and after."""

    index: int
    removed: list[Candidate]
    latency_before_ms: float
    latency_after_ms: float
    dims: ModelDims
    done: bool
    candidates: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "removed": [c.as_dict() for c in self.removed],
            "latency_before_ms": self.latency_before_ms,
            "latency_after_ms": self.latency_after_ms,
            "dims": self.dims.as_dict(),
            "done": self.done,
            "candidates": self.candidates,
        }


@dataclass
class Pruner:
    """Latency-aware global structural pruning of a `profiler.vit.VisionTransformer` (NViT §3)."""

    model: VisionTransformer
    latency: LatencySource
    target_ratio: float = 0.5
    eta: float = 1.0
    step_sizes: Mapping[str, int] | None = None
    groups_per_step: int = 1
    momentum: float | None = None
    history: list[PruneStep] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.target_ratio <= 1.0:
            raise ValueError(f"target_ratio must be in (0, 1], got {self.target_ratio}")
        if self.groups_per_step < 1:
            raise ValueError(f"groups_per_step must be >= 1, got {self.groups_per_step}")
        self.step_sizes = {**DEFAULT_STEP, **(self.step_sizes or {})}
        unknown = sorted(set(self.step_sizes) - set(AXES))
        if unknown:
            raise ValueError(f"step_sizes has unknown axes {unknown}; axes are {list(AXES)}")
        ranges = dict(self.latency.ranges)
        dims = self.model.model_dims
        for axis, (lo, hi) in ranges.items():
            widths = [dims.emb] if axis == "emb" else [getattr(b, axis) for b in dims.blocks]
            if max(widths) > hi or min(widths) < lo:
                raise ValueError(
                    f"the model's {axis} widths {sorted(set(widths))} are outside the table's range [{lo}, {hi}]"
                )
        # never remove a dimension entirely, and never leave the table's range
        self.min_width = {a: max(self.step_sizes[a], ranges.get(a, (1, 0))[0]) for a in AXES}
        self.gates = Gates.ones_like(self.model)
        self.importance = ImportanceAccumulator(self.gates, self.momentum)
        self._norms = install_active_channel_norms(self.model)
        self._masks: list = []
        self._hook = self.model.register_forward_pre_hook(lambda module, args: self.apply_masks())
        self.original_ms: float | None = None
        self.predicted_ms: float | None = None
        self.exhausted = False

    # ---- state ----------------------------------------------------------------------------------------------
    @property
    def dims(self) -> ModelDims:
        """The model's dims with the removed units dropped."""
        return self.gates.model_dims()

    @property
    def target_ms(self) -> float | None:
        return None if self.original_ms is None else self.target_ratio * self.original_ms

    @property
    def done(self) -> bool:
        """The predicted latency reached the target (or nothing more can be removed)."""
        if self.exhausted:
            return True
        return self.predicted_ms is not None and self.target_ms is not None and self.predicted_ms <= self.target_ms

    # ---- the loop -------------------------------------------------------------------------------------------
    def accumulate(self) -> None:
        """Fold the current gradients into the importance; call after loss.backward(), before zero_grad()."""
        self.importance.add(gate_gradients(self.model))

    def step(self) -> PruneStep:
        """Remove the lowest-scoring group(s) with one latency query; stops removing at the target latency."""
        deltas = self.latency.deltas(self.dims, self.step_sizes)
        current = float(deltas.total_ms)
        if self.original_ms is None:
            self.original_ms = current
        self.predicted_ms = current
        removed: list[Candidate] = []
        cands: list[Candidate] = []
        if not self.done:
            cands = candidates(
                self.gates, self.importance.value(), deltas.emb, deltas.blocks, self.step_sizes, self.min_width
            )
            ranked = score(cands, self.eta)
            used: set[str] = set()
            estimate = current
            for cand in ranked:
                if len(removed) >= self.groups_per_step or estimate <= self.target_ms:
                    break
                if cand.name in used:
                    continue
                removed.append(cand)
                used.add(cand.name)
                estimate -= cand.latency_saved_ms
            if not removed:
                self.exhausted = True
            for cand in removed:
                gate = self.gates.emb if cand.block is None else self.gates.blocks[cand.block].get(cand.axis)
                gate[cand.units] = 0.0
            self.predicted_ms = estimate
            self._refresh_masks()
            self.importance.reset()
        record = PruneStep(len(self.history), removed, current, self.predicted_ms, self.dims, self.done, len(cands))
        self.history.append(record)
        return record

    # ---- masks and compaction -------------------------------------------------------------------------------
    def _refresh_masks(self) -> None:
        self._masks = weight_masks(self.model, self.gates)
        set_active_channels(self._norms, self.gates)
        self.apply_masks()

    def apply_masks(self) -> None:
        """Zero the removed units' weights (runs before every forward pass)."""
        if self._masks:
            apply_weight_masks(self._masks)

    def compact(self) -> VisionTransformer:
        """A new, physically smaller dense model with the same function as the gated one."""
        self.apply_masks()
        return compact(self.model, self.gates)

    def remove(self) -> None:
        """Detach from the model (the forward hook); the gated model keeps its zeroed weights."""
        self._hook.remove()
