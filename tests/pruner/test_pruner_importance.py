"""Gate gradients and accumulated importance against a direct computation on a small model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from pruner.gates import Gates, gate_gradients
from pruner.importance import ImportanceAccumulator
from pruner.masking import weight_masks
from tests.pruner.small_models import batch, small_model


def autograd_gate_gradients(model, x, y) -> Gates:
    """dL/dg through explicit gates: every gated weight re-parameterised as W·g, autograd to the gates."""
    gates = Gates.ones_like(model, torch.float64)
    for _, _, vector in gates.vectors():
        vector.requires_grad_(True)
    names = {id(p): n for n, p in model.named_parameters()}
    gated = {names[id(p)]: p * mask for p, mask in weight_masks(model, gates, only_closed=False)}
    loss = F.cross_entropy(functional_call(model, gated, (x,)), y)
    vectors = [v for _, _, v in gates.vectors()]
    grads = torch.autograd.grad(loss, vectors)
    for v, g in zip(vectors, grads, strict=True):
        v.requires_grad_(False)
        v.copy_(g)
    return gates


def closed_form_gate_gradients(model, x, y) -> Gates:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return gate_gradients(model)


def assert_gates_close(a: Gates, b: Gates, rtol: float = 1e-4, atol: float = 1e-7) -> None:
    for (axis, block, va), (_, _, vb) in zip(a.vectors(), b.vectors(), strict=True):
        torch.testing.assert_close(va.double(), vb.double(), rtol=rtol, atol=atol, msg=f"{axis} of block {block}")


def test_closed_form_gate_gradients_equal_autograd_through_explicit_gates():
    model = small_model(dtype=torch.float64)
    x, y = batch(1, dtype=torch.float64)
    direct = autograd_gate_gradients(model, x, y)
    ours = closed_form_gate_gradients(model, x, y)
    assert_gates_close(ours, direct, rtol=1e-9, atol=1e-12)
    # the gradients are not trivially zero for any kind of unit
    for axis, _, v in ours.vectors():
        assert v.abs().max() > 1e-6, axis


@pytest.mark.parametrize("sources", ["all", "nvit"])
def test_blocks_computed_together_give_what_blocks_computed_one_by_one_give(sources):
    """The GPU's default (same-shaped blocks stacked) against the CPU's (block by block), and both against
    autograd, on a model whose blocks have two different shapes."""
    from lut_server.dims import BlockWidths, ModelDims
    from profiler.vit import VisionTransformer, VitConfig

    torch.manual_seed(0)
    wide, narrow = BlockWidths(4, 8, 8, 48), BlockWidths(2, 8, 16, 32)
    dims = ModelDims(32, (wide, narrow, wide, wide, narrow))
    model = VisionTransformer(dims, VitConfig(image_size=16, patch_size=4, num_classes=5)).double()
    x, y = torch.randn(6, 3, 16, 16, dtype=torch.float64), torch.arange(6) % 5
    F.cross_entropy(model(x), y).backward()
    together = gate_gradients(model, sources, batch_blocks=True)
    apart = gate_gradients(model, sources, batch_blocks=False)
    assert_gates_close(together, apart, rtol=1e-12, atol=1e-15)
    if sources == "all":
        assert_gates_close(together, autograd_gate_gradients(model, x, y), rtol=1e-9, atol=1e-12)


def test_gate_gradient_matches_finite_difference_of_scaling_one_unit():
    """dL/dg for MLP neuron 5 and head 1 of block 0 = the loss slope when only their weights are scaled."""
    model = small_model(dtype=torch.float64)
    x, y = batch(2, dtype=torch.float64)
    grads = closed_form_gate_gradients(model, x, y)
    block = model.blocks[0]
    d = block.dims

    def loss_with(scale: float, which: str) -> float:
        m = small_model(dtype=torch.float64)
        b = m.blocks[0]
        with torch.no_grad():
            if which == "mlp":
                b.fc1.weight[5] *= scale
                b.fc1.bias[5] *= scale
                b.fc2.weight[:, 5] *= scale
            else:  # head 1: its Q, K and V rows and its output-projection columns
                qk_w = b.qk.weight.view(2, d.heads, d.qk, d.emb)
                qk_w[:, 1] *= scale
                b.qk.bias.view(2, d.heads, d.qk)[:, 1] *= scale
                b.v.weight.view(d.heads, d.v, d.emb)[1] *= scale
                b.v.bias.view(d.heads, d.v)[1] *= scale
                b.proj.weight.view(d.emb, d.heads, d.v)[:, 1] *= scale
            return float(F.cross_entropy(m(x), y))

    eps = 1e-5
    for which, expected in (("mlp", grads.blocks[0].mlp[5]), ("heads", grads.blocks[0].heads[1])):
        slope = (loss_with(1 + eps, which) - loss_with(1 - eps, which)) / (2 * eps)
        assert slope == pytest.approx(float(expected), rel=1e-5, abs=1e-9), which


def test_accumulated_importance_is_the_average_of_squared_batch_gradients():
    model = small_model(dtype=torch.float64)
    batches = [batch(s, dtype=torch.float64) for s in range(3)]
    direct = [autograd_gate_gradients(model, x, y) for x, y in batches]
    acc = ImportanceAccumulator(Gates.ones_like(model))
    for x, y in batches:
        acc.add(closed_form_gate_gradients(model, x, y))
    value = acc.value()
    for k, (axis, block, v) in enumerate(value.vectors()):
        expected = sum(d.vectors()[k][2].double() ** 2 for d in direct) / 3
        torch.testing.assert_close(v, expected, rtol=1e-8, atol=1e-14, msg=f"{axis} of block {block}")
    # every batch counts: the average differs from the last batch's squares alone
    last = direct[-1].vectors()[0][2].double() ** 2
    assert not torch.allclose(value.emb, last)
    acc.reset()
    with pytest.raises(RuntimeError, match="no batch"):
        acc.value()


def test_momentum_importance_is_a_bias_corrected_exponential_average():
    model = small_model(dtype=torch.float64)
    grads = [closed_form_gate_gradients(model, *batch(s, dtype=torch.float64)) for s in range(3)]
    beta = 0.5
    acc = ImportanceAccumulator(Gates.ones_like(model), momentum=beta)
    for g in grads:
        acc.add(g)
    acc.reset()  # momentum carries the importance across pruning steps
    squares = [g.blocks[1].mlp.double() ** 2 for g in grads]
    ema = ((1 - beta) * (beta**2 * squares[0] + beta * squares[1] + squares[2])) / (1 - beta**3)
    torch.testing.assert_close(acc.value().blocks[1].mlp, ema)
    with pytest.raises(ValueError, match="momentum"):
        ImportanceAccumulator(Gates.ones_like(model), momentum=1.0)
