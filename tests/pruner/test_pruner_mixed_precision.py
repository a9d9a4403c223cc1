"""Importance under a GradScaler: unscaled, overflow batches skipped and counted, no gradients refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pruner import Pruner
from tests.pruner.small_models import batch, small_model, small_table


def run(overflow_at: int | None, scaler_init: float = 2.0**12, unscale_first: bool = False):
    """Six batches under fp16 autocast with a GradScaler; at `overflow_at` an extra batch whose loss overflows."""
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every run sees the same weights
    scaler = torch.amp.GradScaler("cpu", init_scale=scaler_init)
    p = Pruner(model, latency=small_table(), target_ratio=0.5, groups_per_step=2, grad_scaler=scaler)
    seeds = list(range(6))
    if overflow_at is not None:
        seeds.insert(overflow_at, -1)
    folded = []
    for seed in seeds:
        x, y = batch(abs(seed))
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        if seed == -1:
            loss = loss * float("inf")  # an overflow step
        scaler.scale(loss).backward()
        if unscale_first:
            scaler.unscale_(optimizer)
        folded.append(p.accumulate())
        scaler.step(optimizer)
        scaler.update()
    return p, folded, scaler


def test_an_overflow_batch_is_skipped_and_changes_neither_importance_nor_decision():
    clean, folded_clean, _ = run(None)
    hit, folded_hit, scaler = run(3)
    assert folded_clean == [True] * 6
    assert folded_hit == [True, True, True, False, True, True, True]
    assert hit.skipped_batches == 1 and clean.skipped_batches == 0
    assert scaler.get_scale() < 2.0**12  # the scaler saw the overflow too
    for (_, _, a), (_, _, b) in zip(clean.importance.value().vectors(), hit.importance.value().vectors(), strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=1e-3, atol=0)  # fp16 backward rounds differently at another scale
    step_clean, step_hit = clean.step(), hit.step()
    assert [c.name for c in step_hit.removed] == [c.name for c in step_clean.removed]
    assert [c.units for c in step_hit.removed] == [c.units for c in step_clean.removed]
    assert all(math.isfinite(c.score) for c in step_hit.removed)


def test_importance_does_not_depend_on_the_loss_scale_or_on_who_unscales():
    low, _, _ = run(None, scaler_init=2.0**8)
    high, _, _ = run(None, scaler_init=2.0**14)
    manual, _, _ = run(None, scaler_init=2.0**14, unscale_first=True)
    for other in (high, manual):
        for (_, _, a), (_, _, b) in zip(
            low.importance.value().vectors(), other.importance.value().vectors(), strict=True
        ):
            torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-30)  # unscaled: a factor 2**12 otherwise


def test_unscaling_reads_the_scale_without_get_scale(monkeypatch: pytest.MonkeyPatch):
    """`get_scale()` waits for the GPU; the scale is divided out as the device tensor the scaler keeps."""
    reference, _, _ = run(None, scaler_init=2.0**14, unscale_first=True)

    def get_scale(self: torch.amp.GradScaler) -> float:
        raise AssertionError("accumulate() read the scale with get_scale()")

    monkeypatch.setattr(torch.amp.GradScaler, "get_scale", get_scale)
    unscaled_here, folded, _ = run(None, scaler_init=2.0**14)
    assert folded == [True] * 6
    for (_, _, a), (_, _, b) in zip(
        reference.importance.value().vectors(), unscaled_here.importance.value().vectors(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-30)


def test_accumulate_without_gradients_raises():
    model = small_model()
    p = Pruner(model, latency=small_table())
    with pytest.raises(RuntimeError, match="no parameter has a gradient"):
        p.accumulate()
    x, y = batch(0)
    F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=False)
    with pytest.raises(RuntimeError, match="every gate gradient is zero"):
        p.accumulate()
