"""criterion="nvit": the NViT authors' gate-gradient sources, rescaling, latency term, head pairs and momentum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from pruner import Pruner
from pruner.__main__ import build_parser
from pruner.criterion import Candidate, candidates, score
from pruner.criterion_preset import NVIT, criterion_preset
from pruner.gates import gate_gradients
from tests.pruner.small_models import batch, small_model, small_table


def loss_of(model, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(functional_call(model, params, (x,)), y)


def nvit_gate_gradients_by_autograd(model, x, y) -> dict[str, Tensor]:
    """Block 0's head/qk/v/mlp and the model's EMB gate gradients with explicit gates on NViT's sources only."""
    block = model.blocks[0]
    d = block.dims
    h, q, v = d.heads, d.qk, d.v
    g = {
        "heads": torch.ones(h, dtype=torch.float64, requires_grad=True),
        "qk": torch.ones(q, dtype=torch.float64, requires_grad=True),
        "v": torch.ones(v, dtype=torch.float64, requires_grad=True),
        "mlp": torch.ones(d.mlp, dtype=torch.float64, requires_grad=True),
        "emb": torch.ones(d.emb, dtype=torch.float64, requires_grad=True),
    }
    ones_q = torch.ones(h, q, dtype=torch.float64)
    q_rows = (g["heads"].unsqueeze(1) * g["qk"]).flatten()  # the Q half: head gate and QK gate
    k_rows = (g["heads"].unsqueeze(1) * ones_q).flatten()  # the K half: head gate only (NViT: QK over Q only)
    qk_rows = torch.cat([q_rows, k_rows])
    v_rows = (g["heads"].unsqueeze(1) * g["v"]).flatten()  # V rows; the output projection carries no V gate
    e = g["emb"]
    params = dict(model.named_parameters())
    gated = {
        "stem.patch_embed.weight": params["stem.patch_embed.weight"] * e.view(-1, 1, 1, 1),
        "stem.patch_embed.bias": params["stem.patch_embed.bias"] * e,
    }
    for i in range(len(model.blocks)):
        p = f"blocks.{i}."
        if i == 0:
            gated[p + "qk.weight"] = params[p + "qk.weight"] * qk_rows.unsqueeze(1) * e
            gated[p + "qk.bias"] = params[p + "qk.bias"] * qk_rows
            gated[p + "v.weight"] = params[p + "v.weight"] * v_rows.unsqueeze(1) * e
            gated[p + "v.bias"] = params[p + "v.bias"] * v_rows
            gated[p + "fc1.weight"] = params[p + "fc1.weight"] * g["mlp"].unsqueeze(1) * e
            gated[p + "fc1.bias"] = params[p + "fc1.bias"] * g["mlp"]
        else:
            for name in ("qk.weight", "v.weight", "fc1.weight"):
                gated[p + name] = params[p + name] * e
        for name in ("proj.weight", "fc2.weight"):
            gated[p + name] = params[p + name] * e.unsqueeze(1)
        for name in ("proj.bias", "fc2.bias"):
            gated[p + name] = params[p + name] * e
    grads = torch.autograd.grad(loss_of(model, gated, x, y), list(g.values()))
    return dict(zip(g, grads, strict=True))


def test_nvit_gate_gradients_sum_over_the_authors_sources_only():
    model = small_model(dtype=torch.float64)
    x, y = batch(1, dtype=torch.float64)
    expected = nvit_gate_gradients_by_autograd(model, x, y)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    nvit, full = gate_gradients(model, "nvit"), gate_gradients(model, "all")
    for axis in ("heads", "qk", "v", "mlp"):
        torch.testing.assert_close(nvit.blocks[0].get(axis), expected[axis], rtol=1e-9, atol=1e-12)
        assert not torch.allclose(full.blocks[0].get(axis), expected[axis], rtol=1e-3, atol=1e-8), axis
    torch.testing.assert_close(nvit.emb, expected["emb"], rtol=1e-9, atol=1e-12)


def test_qk_gate_gradient_is_the_q_only_closed_form():
    model = small_model(dtype=torch.float64)
    x, y = batch(2, dtype=torch.float64)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    block = model.blocks[1]
    d = block.dims
    wg = (block.qk.weight * block.qk.weight.grad).reshape(2, d.heads, d.qk, d.emb)
    bg = (block.qk.bias * block.qk.bias.grad).reshape(2, d.heads, d.qk)
    q_only = wg[0].sum((0, 2)) + bg[0].sum(0)
    torch.testing.assert_close(gate_gradients(model, "nvit").blocks[1].qk, q_only, rtol=1e-12, atol=1e-14)


def test_importance_is_the_rescaled_gate_gradient_squared():
    model = small_model()
    p = Pruner(model, latency=small_table(), criterion="nvit")
    x, y = batch(3)
    F.cross_entropy(model(x), y).backward()
    raw = gate_gradients(model, "nvit")
    p.accumulate()
    value = p.importance.value()
    for (axis, block, got), (_, _, g) in zip(value.vectors(), raw.vectors(), strict=True):
        expected = (g.double() / NVIT.divisor(axis)).square()
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0, msg=f"{axis} {block}")
    assert {a: NVIT.divisor(a) for a in ("emb", "heads", "qk", "v", "mlp")} == {
        "emb": 12.0, "heads": 12.0, "qk": 2.0, "v": 2.0, "mlp": 1.0,
    }  # fmt: skip


def test_latency_term_is_eta_times_seconds_unnormalised():
    cands = [Candidate("mlp", 0, [1], 3e-3, 2.0), Candidate("v", 1, [4], 1e-3, 0.5)]
    ranked = score(cands, 5e-4, "seconds")
    by_name = {c.name: c.score for c in ranked}
    assert by_name["blocks.0.mlp"] == pytest.approx(3e-3 - 5e-4 * 2.0e-3, rel=1e-12)
    assert by_name["blocks.1.v"] == pytest.approx(1e-3 - 5e-4 * 0.5e-3, rel=1e-12)
    # the default divides each term by its mean over the candidates: another score for the same candidates
    assert score([Candidate("mlp", 0, [1], 3e-3, 2.0), Candidate("v", 1, [4], 1e-3, 0.5)], 5e-4)[0].score != (
        pytest.approx(ranked[0].score)
    )


def test_a_pruning_step_removes_heads_in_pairs_and_scores_in_seconds():
    model = small_model()
    p = Pruner(model, latency=small_table(), target_ratio=0.3, groups_per_step=8, criterion="nvit")
    assert p.eta == 5e-4 and p.group_sizes["heads"] == 2
    for s in range(3):
        x, y = batch(s)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        p.accumulate()
    importance = p.importance.value()
    # every head candidate is two heads wide: block 0 (4 heads) offers one, block 1 (3 heads, minimum 2) none
    deltas = small_table().deltas(p.dims, p.group_sizes)
    cands = candidates(p.gates, importance, deltas.emb, deltas.blocks, p.group_sizes, p.min_width)
    assert [(c.block, len(c.units)) for c in cands if c.axis == "heads"] == [(0, 2)]
    record = p.step()
    assert record.removed
    for cand in record.removed:
        gate_imp = importance.emb if cand.block is None else importance.blocks[cand.block].get(cand.axis)
        assert cand.importance == pytest.approx(float(gate_imp[cand.units].sum()), rel=1e-12)
        assert cand.score == pytest.approx(cand.importance - 5e-4 * cand.latency_saved_ms / 1000, rel=1e-12)
    assert all(len(c.units) == 2 for c in record.removed if c.axis == "heads")


def test_importance_momentum_runs_across_pruning_intervals():
    model = small_model()
    p = Pruner(model, latency=small_table(), target_ratio=0.3, criterion="nvit")
    interval_means = []
    for interval in range(2):
        flats = []
        for s in range(2):
            x, y = batch(10 * interval + s)
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            flats.append((gate_gradients(model, "nvit").flat().double() / p._divisors.double()).square())
            p.accumulate()
        interval_means.append(torch.stack(flats).mean(0))
        if interval == 0:
            torch.testing.assert_close(p.importance.value().flat(), interval_means[0])
            p.step()
    expected = 0.9 * interval_means[0] + 0.1 * interval_means[1]
    torch.testing.assert_close(p.importance.value().flat(), expected, rtol=1e-6, atol=0)


def test_the_criterion_is_part_of_the_saved_settings():
    model = small_model()
    p = Pruner(model, latency=small_table(), target_ratio=0.3, criterion="nvit")
    for s in range(2):
        x, y = batch(s)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        p.accumulate()
    p.step()
    state = p.state_dict()
    assert state["settings"]["criterion"] == "nvit" and state["settings"]["eta"] == 5e-4
    resumed = Pruner(small_model(), latency=small_table(), target_ratio=0.3, criterion="nvit")
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed.importance.value().flat(), p.importance.value().flat())
    with pytest.raises(ValueError, match="settings differ"):
        Pruner(small_model(), latency=small_table(), target_ratio=0.3).load_state_dict(state)


def test_a_state_that_calls_the_group_sizes_step_sizes_still_loads():
    model = small_model()
    p = Pruner(model, latency=small_table(), target_ratio=0.3, criterion="nvit")
    for s in range(2):
        x, y = batch(s)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        p.accumulate()
    p.step()
    state = p.state_dict()
    old = {**state, "settings": {("step_sizes" if k == "group_sizes" else k): v for k, v in state["settings"].items()}}
    assert "group_sizes" not in old["settings"] and old["settings"]["step_sizes"]["heads"] == 2
    resumed = Pruner(small_model(), latency=small_table(), target_ratio=0.3, criterion="nvit")
    resumed.load_state_dict(old)
    assert resumed.dims == p.dims and resumed.history == p.history and resumed.predicted_ms == p.predicted_ms
    assert resumed.state_dict()["settings"] == state["settings"]  # written back under the new name
    # the old key is compared, not dropped: other group sizes are still refused
    other = {**old, "settings": {**old["settings"], "step_sizes": {**old["settings"]["step_sizes"], "heads": 1}}}
    with pytest.raises(ValueError, match="settings differ"):
        Pruner(small_model(), latency=small_table(), target_ratio=0.3, criterion="nvit").load_state_dict(other)


def test_presets_and_the_command_line():
    assert criterion_preset("default").latency_term == "normalised"
    with pytest.raises(ValueError, match="unknown criterion"):
        criterion_preset("nvlabs")
    with pytest.raises(ValueError, match="exclude each other"):
        Pruner(small_model(), latency=small_table(), criterion="nvit", momentum=0.5)
    args = build_parser().parse_args(["demo", "--server", "u", "--table", "t", "--out", "o", "--criterion", "nvit"])
    assert args.criterion == "nvit" and args.eta is None
    args = build_parser().parse_args(
        ["prune", "--model", "deit-tiny", "--data", "d", "--out", "o", "--target", "0.5", "--criterion", "nvit"]
    )
    assert args.criterion == "nvit"
