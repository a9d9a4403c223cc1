"""The pruning loop: one latency query per step, latency-aware choice, stop at target, exact compaction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lut_server.dims import AXES
from lut_server.latency_table import GroupDeltas, LatencyTable
from pruner import Pruner
from tests.pruner.small_models import GRID, CountingLatency, batch, small_model, small_table
from tests.table_factory import make_table


def train_and_accumulate(model, pruner: Pruner, seeds, optimizer=None) -> None:
    for s in seeds:
        x, y = batch(s)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        pruner.accumulate()
        if optimizer is not None:
            optimizer.step()


def test_gated_model_equals_original_before_pruning():
    model = small_model()
    x, _ = batch(0)
    with torch.no_grad():
        before = model(x)
    Pruner(model, latency=small_table(), target_ratio=0.5)  # installs gates, masks, active-channel norms
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)


class OverstatedDeltas(CountingLatency):
    """Every group's delta twice what removing it saves: their sum says a target is reached before it is."""

    def deltas(self, model, group_size=None):
        exact = super().deltas(model, group_size)
        double = [{a: None if d is None else 2 * d for a, d in b.items()} for b in exact.blocks]
        return GroupDeltas(exact.total_ms, None if exact.emb is None else 2 * exact.emb, double)


def test_a_target_is_reached_only_when_the_models_own_latency_says_so():
    model = small_model()
    latency = OverstatedDeltas(small_table())
    p = Pruner(model, latency=latency, target_ratio=0.6, groups_per_step=3)
    steps = 0
    while not p.done:
        train_and_accumulate(model, p, range(steps * 2, steps * 2 + 2))
        p.step()
        steps += 1
        assert steps < 200
    assert latency.inner.model_latency(p.dims) <= 0.6 * p.original_ms * (1 + 1e-9)
    assert latency.calls["model_latency"] >= 1


def test_prunes_to_target_with_one_query_per_step_and_compacts_exactly():
    model = small_model()
    latency = CountingLatency(small_table())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    p = Pruner(model, latency=latency, target_ratio=0.55, groups_per_step=2)
    steps = 0
    while not p.done:
        train_and_accumulate(model, p, range(steps * 2, steps * 2 + 2), optimizer)
        record = p.step()
        steps += 1
        assert steps < 200
        if not p.done:
            assert 1 <= len(record.removed) <= 2
        assert record.latency_after_ms < record.latency_before_ms or not record.removed
    assert latency.calls["deltas"] == steps
    assert 1 <= latency.calls["model_latency"] <= 3  # only on a step whose deltas say the target is reached
    final = latency.inner.model_latency(p.dims)
    assert p.predicted_ms == pytest.approx(final)  # the target is judged on the model's own latency
    assert final <= 0.55 * p.original_ms * 1.0001
    assert p.original_ms == pytest.approx(latency.inner.model_latency(small_model().model_dims))
    # the last removal did not overshoot by more than one step's worth of groups
    assert final > 0.3 * p.original_ms
    dims = p.dims
    for axis in AXES:
        widths = [dims.emb] if axis == "emb" else [getattr(b, axis) for b in dims.blocks]
        assert min(widths) >= p.min_width[axis], axis  # no dimension removed entirely
    assert dims.emb % 16 == 0 and all(b.mlp % 16 == 0 and b.qk % 8 == 0 and b.v % 8 == 0 for b in dims.blocks)
    # the optimizer moved the removed weights, but the forward pass re-zeroes them; compaction is exact
    optimizer.step()
    small = p.compact()
    assert small.model_dims == dims
    x, _ = batch(99, n=5)
    model.eval()
    small.eval()
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
        a, b = small.forward_both(x)
        c, d = model.forward_both(x)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, d, rtol=1e-5, atol=1e-5)
    assert sum(t.numel() for t in small.parameters()) < sum(t.numel() for t in small_model().parameters())


def test_compaction_is_exact_for_every_kind_of_unit_including_emb():
    model = small_model()
    p = Pruner(model, latency=small_table())
    g = p.gates
    g.emb[[0, 5, 17, 40]] = 0
    g.blocks[0].heads[2] = 0
    g.blocks[1].qk[[1, 7]] = 0
    g.blocks[0].v[[3, 4, 20]] = 0
    g.blocks[1].mlp[10:30] = 0
    p._refresh_masks()
    small = p.compact().eval()
    assert small.model_dims.emb == 60
    assert [b.heads for b in small.model_dims.blocks] == [3, 3]
    x, _ = batch(3, n=4)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model.eval()(x), rtol=1e-5, atol=1e-5)
    # without the active-channel LayerNorm the zeroed EMB channels would change the statistics
    p._norms[0].set_active(None)
    with torch.no_grad():
        assert not torch.allclose(small(x), model(x), atol=1e-4)


def test_eta_trades_importance_for_latency():
    """With η = 0 the least important group goes first; with a large η the group saving the most latency."""
    removed = {}
    for eta in (0.0, 100.0):
        model = small_model()
        p = Pruner(model, latency=small_table(), target_ratio=0.5, eta=eta)
        train_and_accumulate(model, p, range(3))
        importance = p.importance.value()
        record = p.step()
        (cand,) = record.removed
        removed[eta] = cand
        table = small_table()
        deltas = table.deltas(small_model().model_dims, p.group_sizes)
        if eta == 0.0:
            best = min(
                [(float(importance.emb.sort().values[:16].sum()), "emb")]
                + [
                    (float(b.get(a).sort().values[: p.group_sizes[a]].sum()), f"blocks.{i}.{a}")
                    for i, b in enumerate(importance.blocks)
                    for a in ("heads", "qk", "v", "mlp")
                    if b.get(a).numel() - p.group_sizes[a] >= p.min_width[a]
                ]
            )
            assert cand.name == best[1]
        else:
            start = small_model().model_dims.blocks
            savings = {"emb": deltas.emb} | {
                f"blocks.{i}.{a}": d[a]
                for i, d in enumerate(deltas.blocks)
                for a in d
                if d[a] is not None and getattr(start[i], a) - p.group_sizes[a] >= p.min_width[a]
            }
            assert cand.latency_saved_ms == pytest.approx(max(savings.values()))
    assert removed[0.0].name != removed[100.0].name


def test_rejects_models_outside_the_table_and_bad_settings():
    with pytest.raises(ValueError, match="target_ratio"):
        Pruner(small_model(), latency=small_table(), target_ratio=0.0)
    narrow = LatencyTable(make_table({**GRID, "mlp": [16, 32]}))
    with pytest.raises(ValueError, match="mlp widths"):
        Pruner(small_model(), latency=narrow)
    p = Pruner(small_model(), latency=small_table())
    with pytest.raises(RuntimeError, match="no batch"):
        p.step()
