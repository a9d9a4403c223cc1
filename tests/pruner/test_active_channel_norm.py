"""The masked LayerNorm equals LayerNorm over the open channels alone, in value and in every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruner.active_channel_norm import ActiveChannelLayerNorm

OPEN = torch.tensor([True, False, True, True, True, False, True, False, True, True, True, True])


def gathered_layer_norm(norm: nn.LayerNorm, x: Tensor, open_channels: Tensor) -> Tensor:
    """What the compacted model computes, scattered back to all channels (zero on closed channels)."""
    idx = torch.nonzero(open_channels).flatten()
    normed = F.layer_norm(x[..., idx], (idx.numel(),), norm.weight[idx], norm.bias[idx], norm.eps)
    out = normed.new_zeros(x.shape)
    out[..., idx] = normed
    return out


def norm_with_random_affine(dtype: torch.dtype = torch.float32) -> ActiveChannelLayerNorm:
    torch.manual_seed(0)
    norm = ActiveChannelLayerNorm(12, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(12))
        norm.bias.copy_(torch.randn(12))
    return norm


def test_values_and_gradients_equal_layer_norm_over_the_gathered_open_channels():
    norm = norm_with_random_affine()
    norm.set_active(OPEN)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 7, 12, generator=g) * 2 + 1).requires_grad_()
    grad_out = torch.randn(3, 7, 12, generator=g)
    out = norm(x)
    got = torch.autograd.grad(out, (x, norm.weight, norm.bias), grad_out)
    reference = gathered_layer_norm(norm, x, OPEN)
    expected = torch.autograd.grad(reference, (x, norm.weight, norm.bias), grad_out)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    closed = ~OPEN
    assert out[..., closed].abs().max() == 0
    assert all(t[..., closed].abs().max() == 0 for t in got)  # no gradient reaches a closed channel


def test_backward_passes_gradcheck_in_float64():
    norm = norm_with_random_affine(torch.float64)
    norm.set_active(OPEN)
    x = torch.randn(2, 3, 12, dtype=torch.float64, requires_grad=True)
    w, b = (t.detach().clone().requires_grad_() for t in (norm.weight, norm.bias))
    assert torch.autograd.gradcheck(
        lambda x, w, b: torch.func.functional_call(norm, {"weight": w, "bias": b}, (x,)), (x, w, b)
    )


@pytest.mark.parametrize("open_channels", [None, torch.ones(12, dtype=torch.bool)])
def test_all_channels_open_is_plain_layer_norm(open_channels):
    norm = norm_with_random_affine()
    norm.set_active(OPEN)
    norm.set_active(open_channels)
    x = torch.randn(2, 3, 12)
    assert norm.channel_mask is None
    torch.testing.assert_close(norm(x), F.layer_norm(x, (12,), norm.weight, norm.bias, norm.eps), rtol=0, atol=0)


def test_flags_of_another_width_are_refused():
    with pytest.raises(ValueError, match="channel flags"):
        ActiveChannelLayerNorm(12).set_active(torch.ones(8, dtype=torch.bool))
