"""Removed units stay exactly zero on every training path, and the gated model stays the compacted model."""

from __future__ import annotations

import torch

from pruner import Pruner
from pruner.objectives import nvit_objective
from tests.pruner.small_models import batch, small_model, small_table


def removed_weights_abs_sum(p: Pruner) -> float:
    return sum(float((param.detach() * (mask == 0)).abs().sum()) for param, mask in p._masks)


def test_twenty_adamw_steps_through_forward_both_keep_removed_units_zero():
    model = small_model()
    teacher = small_model().eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    p = Pruner(model, latency=small_table(), target_ratio=0.5, groups_per_step=3)
    for seed in range(3):  # importance, so that the first step removes something of every kind it chooses
        x, y = batch(seed)
        model.zero_grad()
        nvit_objective(model.forward_both(x), y).backward()
        p.accumulate()
        optimizer.step()
    record = p.step()
    assert len(record.removed) == 3
    p.gates.emb[[3, 11]] = 0  # an EMB channel too, whatever the criterion chose
    p.gates.blocks[1].heads[0] = 0
    p._refresh_masks()
    assert p._masks
    for seed in range(20):
        x, y = batch(100 + seed)
        with torch.no_grad():
            teacher_logits = teacher.forward_both(x)
        loss = nvit_objective(model.forward_both(x), y, teacher=teacher_logits)
        optimizer.zero_grad()
        loss.backward()
        p.accumulate()
        optimizer.step()
        # exactly zero straight after the optimizer step, before any forward pass re-applies anything
        assert removed_weights_abs_sum(p) == 0.0
    small = p.compact().eval()
    model.eval()
    x, _ = batch(999, n=5)
    with torch.no_grad():
        gated_cls, gated_dist = model.forward_both(x)
        small_cls, small_dist = small.forward_both(x)
    torch.testing.assert_close(small_cls, gated_cls, rtol=0, atol=1e-5)
    torch.testing.assert_close(small_dist, gated_dist, rtol=0, atol=1e-5)


def test_masks_hold_through_a_direct_weight_edit_and_forward_both():
    model = small_model()
    p = Pruner(model, latency=small_table())
    p.gates.blocks[0].mlp[:16] = 0
    p._refresh_masks()
    with torch.no_grad():
        model.blocks[0].fc1.weight.add_(1.0)  # anything outside an optimizer
    x, _ = batch(0)
    model.forward_both(x)
    assert removed_weights_abs_sum(p) == 0.0


def test_detached_pruner_no_longer_touches_the_weights():
    model = small_model()
    p = Pruner(model, latency=small_table())
    p.gates.blocks[0].mlp[:16] = 0
    p._refresh_masks()
    p.remove()
    with torch.no_grad():
        model.blocks[0].fc1.weight.add_(1.0)
    model.forward_both(batch(0)[0])
    assert removed_weights_abs_sum(p) > 0
