"""The pruning loop that fits into a user's own training code.

    p = Pruner(model, latency=LatencyClient(url, table), target_ratio=0.5)
    for it, (x, y) in enumerate(loader):
        loss = criterion(model(x), y); loss.backward()
        p.accumulate()                       # fold this batch's gate gradients into the importance
        optimizer.step(); optimizer.zero_grad()
        if it % k == 0 and not p.done:
            p.step()                         # one `deltas` query, removes the lowest-scoring group(s)
    small = p.compact()                      # a physically smaller dense VisionTransformer

Removed units stay in the model as zeroed weights until `compact()` builds the dense model. They are held at
exactly zero on every training path: after every `torch.optim` step (a global optimizer step hook) and before
the stem runs (a forward pre-hook on the stem, which `forward`, `forward_both` and a DDP wrapper all reach),
in both cases only when a masked parameter was modified since the masks were last applied.

Under torch.distributed, gate gradients are averaged across ranks, rank 0 alone queries the latency source and
decides, and every rank checks after each step that it holds the same gates (`pruner.rank_agreement`).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from lut_server.dims import AXES, ModelDims
from lut_server.group_size import DEFAULT_GROUP_SIZE
from profiler.vit import VisionTransformer
from pruner.compaction import compact
from pruner.criterion import Candidate, candidates, score
from pruner.criterion_preset import criterion_preset
from pruner.gates import Gates, gate_gradients
from pruner.importance import ImportanceAccumulator
from pruner.latency_source import check_workload, source_identity, source_summary
from pruner.masking import apply_weight_masks, install_active_channel_norms, set_active_channels, weight_masks
from pruner.rank_agreement import average_across_ranks, check_same_gates, decide_on_rank0, world

STATE_VERSION = 1


class LatencySource(Protocol):
    """What the pruner needs from a latency table or a latency service client."""

    @property
    def ranges(self) -> Mapping[str, tuple[int, int]]: ...

    def model_latency(self, model: ModelDims) -> float: ...

    def deltas(self, model: ModelDims, group_size: Mapping[str, int] | None = None) -> Any: ...


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
    gates_checksum: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "removed": [c.as_dict() for c in self.removed],
            "latency_before_ms": self.latency_before_ms,
            "latency_after_ms": self.latency_after_ms,
            "dims": self.dims.as_dict(),
            "done": self.done,
            "candidates": self.candidates,
            "gates_checksum": self.gates_checksum,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneStep:
        return cls(
            int(data["index"]),
            [Candidate.from_dict(c) for c in data["removed"]],
            float(data["latency_before_ms"]),
            float(data["latency_after_ms"]),
            ModelDims.from_dict(data["dims"]),
            bool(data["done"]),
            int(data.get("candidates", 0)),
            data.get("gates_checksum"),
        )


def _grads_already_unscaled(scaler: torch.amp.GradScaler) -> bool:
    """Whether `scaler.unscale_(optimizer)` (or `scaler.step`) already ran since the last `update()`."""
    from torch.amp.grad_scaler import OptState

    states = getattr(scaler, "_per_optimizer_states", {})
    return any(s.get("stage") in (OptState.UNSCALED, OptState.STEPPED) for s in states.values())


def _loss_scale(scaler: torch.amp.GradScaler, like: torch.Tensor) -> torch.Tensor | float:
    """The scaler's current scale as the tensor it keeps on the device: `get_scale()` is that tensor's `.item()`,
    a wait for the GPU in every training step. Before the first `scale()` there is no tensor: the initial scale."""
    scale = getattr(scaler, "_get_scale_async", lambda: None)()
    if scale is None:
        return scaler.get_scale()
    return scale.to(device=like.device, dtype=like.dtype)


@dataclass
class Pruner:
    """Latency-aware global structural pruning of a `profiler.vit.VisionTransformer` (NViT §3).

    `criterion` picks a preset (`pruner.criterion_preset`): "default", or "nvit" for the NViT authors' own choices;
    `eta` and `group_sizes` (units one group removes, per axis), when given, override the preset's.
    """

    model: VisionTransformer
    latency: LatencySource
    target_ratio: float = 0.5
    eta: float | None = None
    group_sizes: Mapping[str, int] | None = None
    groups_per_step: int = 1
    momentum: float | None = None
    grad_scaler: torch.amp.GradScaler | None = None
    deploy_precision: str | None = None
    deploy_batch: int | None = None
    criterion: str = "default"
    history: list[PruneStep] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.target_ratio <= 1.0:
            raise ValueError(f"target_ratio must be in (0, 1], got {self.target_ratio}")
        if self.groups_per_step < 1:
            raise ValueError(f"groups_per_step must be >= 1, got {self.groups_per_step}")
        self.preset = criterion_preset(self.criterion)
        if self.eta is None:
            self.eta = self.preset.eta
        self.group_sizes = {**DEFAULT_GROUP_SIZE, **self.preset.group_sizes, **(self.group_sizes or {})}
        unknown = sorted(set(self.group_sizes) - set(AXES))
        if unknown:
            raise ValueError(f"group_sizes has unknown axes {unknown}; axes are {list(AXES)}")
        ranges = dict(self.latency.ranges)
        dims = self.model.model_dims
        for axis, (lo, hi) in ranges.items():
            widths = [dims.emb] if axis == "emb" else [getattr(b, axis) for b in dims.blocks]
            if max(widths) > hi or min(widths) < lo:
                raise ValueError(
                    f"the model's {axis} widths {sorted(set(widths))} are outside the table's range [{lo}, {hi}]"
                )
        summary = source_summary(self.latency)
        self.warnings: list[str] = (
            check_workload(summary, self.model.config, self.deploy_precision, self.deploy_batch, len(dims.blocks))
            if summary
            else []
        )
        self.table_identity = source_identity(self.latency)
        # never remove a dimension entirely, and never leave the table's range
        self.min_width = {a: max(self.group_sizes[a], ranges.get(a, (1, 0))[0]) for a in AXES}
        self.gates = Gates.ones_like(self.model)
        self.importance = ImportanceAccumulator(self.gates, self.momentum, self.preset.interval_momentum)
        # per-unit divisors applied to each batch's gate gradient before squaring (None: all 1); per batch, as in
        # NViT's engine, so the importance state a checkpoint stores is made of the divided gradients' squares
        self._divisors: torch.Tensor | None = None
        if any(self.preset.divisor(axis) != 1.0 for axis in AXES):
            self._divisors = torch.cat(
                [torch.full((t.numel(),), self.preset.divisor(axis)) for axis, _, t in self.gates.vectors()]
            )
        self._norms = install_active_channel_norms(self.model)
        self._masks: list = []
        self._mask_versions: list[int] = []
        self._masked_ids: frozenset[int] = frozenset()
        me = weakref.ref(self)

        def after_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            pruner = me()
            if pruner is None or not pruner._masked_ids:
                return
            if any(id(p) in pruner._masked_ids for g in optimizer.param_groups for p in g["params"]):
                pruner.reapply_masks_if_moved()

        self._hooks = [
            self.model.stem.register_forward_pre_hook(lambda module, args: self.reapply_masks_if_moved()),
            register_optimizer_step_post_hook(after_optimizer_step),
        ]
        self.original_ms: float | None = None
        self.predicted_ms: float | None = None
        self.exhausted = False
        self._skipped: torch.Tensor | int = 0  # on the gradients' device once a batch was seen: read at reports only
        self._gradients_seen = False  # a batch with a nonzero gate gradient has been accumulated

    # ---- state ----------------------------------------------------------------------------------------------
    @property
    def skipped_batches(self) -> int:
        """Batches whose gate gradients were not finite (fp16 overflow) and were left out of the importance."""
        return int(self._skipped)

    @skipped_batches.setter
    def skipped_batches(self, count: int) -> None:
        self._skipped = int(count)

    @property
    def dims(self) -> ModelDims:
        """The model's dims with the removed units dropped."""
        return self.gates.model_dims()

    @property
    def ready(self) -> bool:
        """Whether `step()` has an importance to decide on: false when every batch since the last step was skipped
        (fp16 overflow) and nothing was carried over, where the caller defers the step to a batch that counts."""
        return self.importance.has_value()

    @property
    def target_ms(self) -> float | None:
        return None if self.original_ms is None else self.target_ratio * self.original_ms

    @property
    def done(self) -> bool:
        """The predicted latency reached the target (or nothing more can be removed)."""
        if self.exhausted:
            return True
        return self.predicted_ms is not None and self.target_ms is not None and self.predicted_ms <= self.target_ms

    def settings(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "eta": self.eta,
            "group_sizes": dict(self.group_sizes or {}),
            "groups_per_step": self.groups_per_step,
            "momentum": self.momentum,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (the model's and optimizer's own state aside)."""
        return {
            "version": STATE_VERSION,
            "gates": self.gates.as_dict(),
            "importance": self.importance.state_dict(),
            "history": [r.as_dict() for r in self.history],
            "original_ms": self.original_ms,
            "predicted_ms": self.predicted_ms,
            "target_ratio": self.target_ratio,
            "exhausted": self.exhausted,
            "skipped_batches": self.skipped_batches,
            "table": self.table_identity,
            "settings": self.settings(),
        }

    def load_state_dict(self, state: Mapping[str, Any], repin: bool = False) -> None:
        """Continue from `state_dict()`; refuses other settings, and another table unless `repin`."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"pruner state version {state.get('version')}, this pruner reads {STATE_VERSION}")
        saved_settings = {"criterion": "default", **state["settings"]}  # states from before presets: the default
        if "step_sizes" in saved_settings:  # the group sizes' name in states written before `group_sizes`
            saved_settings.setdefault("group_sizes", saved_settings.pop("step_sizes"))
        if saved_settings != self.settings():
            raise ValueError(f"pruner settings differ from the saved run's: {saved_settings} vs {self.settings()}")
        saved_table, here = state.get("table"), self.table_identity
        if not repin and saved_table and here and saved_table.get("content_hash") != here.get("content_hash"):
            raise ValueError(
                f"the run was pruned against table {saved_table.get('id')!r} (content "
                f"{str(saved_table.get('content_hash'))[:12]}); the latency source now holds {here.get('id')!r} "
                f"(content {str(here.get('content_hash'))[:12]}); re-pin explicitly to continue with it"
            )
        gates = Gates.from_dict(state["gates"])
        if gates.model_dims().blocks and len(gates.blocks) != len(self.gates.blocks):
            raise ValueError("the saved gates are for a model of another depth")
        for (_, _, mine), (_, _, saved) in zip(self.gates.vectors(), gates.vectors(), strict=True):
            if mine.shape != saved.shape:
                raise ValueError(f"saved gate vector of {saved.numel()} units, {mine.numel()} here")
            mine.copy_(saved)
        self.importance.load_state_dict(state["importance"])
        self.history = [PruneStep.from_dict(r) for r in state["history"]]
        self.original_ms = state["original_ms"]
        self.predicted_ms = state["predicted_ms"]
        self.target_ratio = float(state.get("target_ratio", self.target_ratio))
        self.exhausted = bool(state["exhausted"])
        self.skipped_batches = int(state.get("skipped_batches", 0))
        self._refresh_masks()

    # ---- the loop -------------------------------------------------------------------------------------------
    def accumulate(self, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
        """Fold the current gradients into the importance; call after loss.backward(), before zero_grad().

        With a GradScaler (here or given to the Pruner) the gradients are unscaled first unless
        `scaler.unscale_` already ran. Batches with non-finite gate gradients (fp16 overflow) are skipped and
        counted in `skipped_batches`; returns whether the batch was folded in, as a 0-d bool tensor on the
        gradients' device: the training step never waits for the GPU here unless the caller reads it. Raises
        RuntimeError when there are no gradients (all None, or all zero after `zero_grad(set_to_none=False)`;
        checked until a batch with gradients has been seen).
        """
        scaler = scaler if scaler is not None else self.grad_scaler
        flat = gate_gradients(self.model, self.preset.gate_sources).flat()
        if self._divisors is not None:
            self._divisors = self._divisors.to(flat.device)
            flat = flat / self._divisors
        if scaler is not None and scaler.is_enabled() and not _grads_already_unscaled(scaler):
            flat = flat / _loss_scale(scaler, flat)
        flat = average_across_ranks(flat)
        if not self._gradients_seen:  # a loop that zeroes the gradients first does so from its first batch on
            if not bool(flat.ne(0).any()):
                raise RuntimeError(
                    "every gate gradient is zero: call accumulate() after loss.backward(), before zero_grad()"
                )
            self._gradients_seen = True
        finite = torch.isfinite(flat).all()
        self.importance.add_flat(flat, counted=finite)
        self._skipped = self._skipped + finite.logical_not().long()
        return finite

    def _decide(self) -> dict[str, Any]:
        """One latency query and the groups to remove (runs on rank 0 only)."""
        deltas = self.latency.deltas(self.dims, self.group_sizes)
        current = float(deltas.total_ms)
        original = self.original_ms if self.original_ms is not None else current
        target = self.target_ratio * original
        removed: list[Candidate] = []
        count = 0
        estimate = current
        exhausted = self.exhausted
        acted = not exhausted and current > target
        if acted:
            cands = candidates(
                self.gates, self.importance.value(), deltas.emb, deltas.blocks, self.group_sizes, self.min_width
            )
            count = len(cands)
            used: set[str] = set()
            for cand in score(cands, float(self.eta), self.preset.latency_term):
                if len(removed) >= self.groups_per_step or estimate <= target:
                    break
                if cand.name in used:
                    continue
                removed.append(cand)
                used.add(cand.name)
                estimate -= cand.latency_saved_ms
            exhausted = not removed
            if removed and estimate <= target:
                # Each delta is one group's removal alone; EMB and a block's units removed together save less than
                # both apart. A target is declared reached on the model's own latency: one more query on such a step.
                estimate = float(self.latency.model_latency(self._dims_without(removed)))
        return {
            "original_ms": original,
            "current_ms": current,
            "estimate_ms": estimate,
            "removed": [c.as_dict() for c in removed],
            "candidates": count,
            "exhausted": exhausted,
            "acted": acted,
        }

    def _dims_without(self, removed: list[Candidate]) -> ModelDims:
        """The dims once `removed` are gone, the gates left as they are."""
        gates = Gates.from_dict(self.gates.as_dict())
        for cand in removed:
            gate = gates.emb if cand.block is None else gates.blocks[cand.block].get(cand.axis)
            gate[cand.units] = 0.0
        return gates.model_dims()

    def step(self) -> PruneStep:
        """Remove the lowest-scoring group(s) with one latency query (two on a step whose deltas reach the target);
        stops removing at the target latency."""
        decision = decide_on_rank0(self._decide)
        self.original_ms = decision["original_ms"]
        current = decision["current_ms"]
        self.predicted_ms = current
        removed = [Candidate.from_dict(c) for c in decision["removed"]]
        if decision["acted"]:
            for cand in removed:
                gate = self.gates.emb if cand.block is None else self.gates.blocks[cand.block].get(cand.axis)
                gate[cand.units] = 0.0
            self.exhausted = decision["exhausted"]
            self.predicted_ms = decision["estimate_ms"]
            self._refresh_masks()
            self.importance.reset()
        checksum = check_same_gates(self.gates.flat(), len(self.history))
        record = PruneStep(
            len(self.history),
            removed,
            current,
            self.predicted_ms,
            self.dims,
            self.done,
            decision["candidates"],
            checksum,
        )
        self.history.append(record)
        return record

    # ---- masks and compaction -------------------------------------------------------------------------------
    def _refresh_masks(self) -> None:
        self._masks = weight_masks(self.model, self.gates)
        self._masked_ids = frozenset(id(p) for p, _ in self._masks)
        set_active_channels(self._norms, self.gates)
        self.apply_masks()

    def apply_masks(self) -> None:
        """Zero the removed units' weights."""
        if self._masks:
            apply_weight_masks(self._masks)
            self._mask_versions = [p._version for p, _ in self._masks]

    def reapply_masks_if_moved(self) -> None:
        """Zero the removed units' weights again if anything modified a masked parameter since the last time."""
        if self._masks and any(p._version != v for (p, _), v in zip(self._masks, self._mask_versions, strict=True)):
            self.apply_masks()

    def compact(self) -> VisionTransformer:
        """A new, physically smaller dense model with the same function as the gated one."""
        self.apply_masks()
        return compact(self.model, self.gates)

    def remove(self) -> None:
        """Detach from the model and the optimizers (the hooks); the gated model keeps its zeroed weights."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @property
    def rank(self) -> int:
        return world()[0]
