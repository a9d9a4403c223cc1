"""NViT's training objective (Eq. 8-9) against hand-written formulas."""

from __future__ import annotations

import math

import pytest
import torch

from pruner.objectives import cnn_hard_distillation, full_model_distillation, kl_distillation, nvit_objective


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor, tau: float) -> float:
    """KL(teacher || student) per sample, averaged, written out with softmax."""
    total = 0.0
    for s, t in zip(p_logits, q_logits, strict=True):
        ps = torch.softmax(s / tau, -1)
        pt = torch.softmax(t / tau, -1)
        total += float((pt * (pt.log() - ps.log())).sum())
    return total / len(p_logits)


def test_objectives_match_the_formulas():
    g = torch.Generator().manual_seed(0)
    s_cls, s_dist, t_cls, t_dist = (torch.randn(5, 4, generator=g) for _ in range(4))
    y = torch.tensor([0, 1, 2, 3, 0])
    y_cnn = torch.tensor([1, 1, 2, 0, 3])
    ce = torch.nn.functional.cross_entropy
    assert float(cnn_hard_distillation((s_cls, s_dist), y, y_cnn)) == pytest.approx(
        float(ce(s_cls, y) + ce(s_dist, y_cnn))
    )
    tau = 2.0
    assert float(kl_distillation(s_cls, t_cls, tau)) == pytest.approx(_kl(s_cls, t_cls, tau), rel=1e-5)
    full = float(full_model_distillation((s_cls, s_dist), (t_cls, t_dist), tau))
    assert full == pytest.approx(_kl(s_cls, t_cls, tau) + _kl(s_dist, t_dist, tau), rel=1e-5)
    alpha = 0.7
    total = float(nvit_objective((s_cls, s_dist), y, (t_cls, t_dist), y_cnn, alpha=alpha, tau=tau))
    assert total == pytest.approx(alpha * full + float(ce(s_cls, y) + ce(s_dist, y_cnn)), rel=1e-5)
    # without a distillation token or teacher it is plain cross-entropy
    assert float(nvit_objective((s_cls, None), y)) == pytest.approx(float(ce(s_cls, y)))
    assert float(kl_distillation(t_cls, t_cls)) == pytest.approx(0.0, abs=1e-6)
    assert not math.isnan(float(kl_distillation(s_cls * 100, t_cls, 0.5)))


def test_teacher_gets_no_gradient_and_bad_settings_are_refused():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kl_distillation(s, t).backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError, match="distillation token"):
        cnn_hard_distillation((s, None), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="tau"):
        kl_distillation(s, t, tau=0)
