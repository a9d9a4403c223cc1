"""Half-precision and foreign-device models go through compaction, export, timm import and the gated norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruner import Pruner, compact, export_model_onnx, onnx_logits
from pruner.masking import ActiveChannelLayerNorm
from pruner.timm_import import _bias
from tests.pruner.small_models import batch, small_model, small_table


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compaction_keeps_the_source_dtype(dtype):
    model = small_model()
    p = Pruner(model, latency=small_table())
    p.gates.blocks[0].mlp[:32] = 0
    p.gates.emb[:16] = 0
    small = compact(model.to(dtype), p.gates)
    assert {t.dtype for t in small.parameters()} == {dtype}
    assert small.model_dims.emb == 48


def test_missing_bias_is_made_on_the_layers_device_and_dtype():
    linear = nn.Linear(4, 3, bias=False, device="meta", dtype=torch.bfloat16)
    zeros = _bias(linear)
    assert zeros.device.type == "meta" and zeros.dtype == torch.bfloat16 and zeros.shape == (3,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_onnx_export_of_a_half_precision_model(tmp_path, dtype):
    model = small_model().eval().to(dtype)
    path = export_model_onnx(model, tmp_path / "model.onnx", batch=2)
    assert path.stat().st_size > 1000
    if dtype == torch.float16:  # numpy has no bf16: run the fp16 graph and compare with the fp32 model
        x, _ = batch(1, n=2)
        with torch.no_grad():
            expected = small_model().eval()(x).numpy()
        got = onnx_logits(path, x.numpy()).astype("float32")
        assert abs(got - expected).max() < 2e-2


def test_masked_layernorm_under_autocast_with_a_half_residual_stream():
    norm = ActiveChannelLayerNorm(8)
    open_channels = torch.tensor([True, False, True, True, False, False, False, True])
    norm.set_active(open_channels)
    idx = torch.nonzero(open_channels).flatten()
    x = torch.randn(2, 5, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
        reference = nn.functional.layer_norm(x[..., idx], (4,), norm.weight[idx], norm.bias[idx])
    assert out.dtype == reference.dtype
    torch.testing.assert_close(out[..., idx], reference)
    assert out[..., [1, 4, 5, 6]].abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_layernorm_of_a_half_model_keeps_its_dtype_and_computes_in_fp32(dtype):
    norm = ActiveChannelLayerNorm(8)
    open_channels = torch.tensor([True, False, True, True, False, False, False, True])
    norm.set_active(open_channels)
    norm.to(dtype)  # after the channels are set, as `model.half()` on a gated model
    idx = torch.nonzero(open_channels).flatten()
    x = (torch.randn(2, 5, 8) * 50 + 300).to(dtype)  # a large mean: half-precision sums would lose it
    out = norm(x)
    reference = nn.functional.layer_norm(x[..., idx].float(), (4,), norm.weight[idx].float(), norm.bias[idx].float())
    assert out.dtype == dtype
    torch.testing.assert_close(out[..., idx].float(), reference, rtol=0, atol=1e-2)


def test_gated_model_trains_under_bf16_autocast():
    model = small_model()
    p = Pruner(model, latency=small_table())
    p.gates.emb[[1, 9, 30]] = 0
    p._refresh_masks()
    x, y = batch(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and p.accumulate()
