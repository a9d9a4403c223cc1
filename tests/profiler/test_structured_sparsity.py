"""2:4 magnitude pruning: the pattern sparse tensor cores need, the largest weights kept, and it survives export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lut_server.dims import BlockDims
from profiler.onnx_export import export_onnx
from profiler.structured_sparsity import is_2_4_sparse, mask_2_4, prune_2_4_
from profiler.workload import Workload, build_block


def test_mask_keeps_the_two_largest_magnitudes_of_each_group() -> None:
    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -0.2, -5.0]])
    mask = mask_2_4(weight)
    assert mask.tolist() == [[0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]]


def test_mask_on_random_weights_is_exactly_half_and_magnitude_ordered() -> None:
    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(3))
    mask = mask_2_4(weight)
    groups, kept = weight.abs().reshape(-1, 4), mask.reshape(-1, 4).bool()
    assert (kept.sum(-1) == 2).all()
    smallest_kept = torch.where(kept, groups, torch.inf).min(-1).values
    largest_dropped = torch.where(~kept, groups, -torch.inf).max(-1).values
    assert (smallest_kept >= largest_dropped).all()


def test_checker_detects_dense_and_sparse() -> None:
    assert not is_2_4_sparse(torch.ones(4, 8))
    assert is_2_4_sparse(torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]]))
    assert not is_2_4_sparse(torch.zeros(2, 6))  # 6 is not a multiple of 4: no 2:4 pattern exists
    with pytest.raises(ValueError, match="multiple of 4"):
        mask_2_4(torch.ones(3, 6))


def test_prune_block_prunes_eligible_linears_and_keeps_their_function() -> None:
    dims = BlockDims(emb=64, heads=2, qk=8, v=6, mlp=96)  # proj has input width H*V = 12, fc2 96: all eligible
    block, _ = build_block(dims, Workload(batch=1, tokens=9))
    dense = {n: m.weight.detach().clone() for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    pruned = prune_2_4_(block)
    assert sorted(pruned) == ["fc1", "fc2", "proj", "qk", "v"]
    for name in pruned:
        weight = getattr(block, name).weight
        assert is_2_4_sparse(weight)
        assert torch.equal(weight, dense[name] * mask_2_4(dense[name]))
    assert prune_2_4_(block) == pruned  # idempotent: pruning a 2:4 weight again changes nothing
    assert torch.equal(block.fc1.weight, dense["fc1"] * mask_2_4(dense["fc1"]))


def test_layers_with_input_width_not_a_multiple_of_4_stay_dense() -> None:
    dims = BlockDims(emb=64, heads=1, qk=8, v=5, mlp=96)  # proj input width 5
    block, _ = build_block(dims, Workload(batch=1, tokens=4))
    before = block.proj.weight.detach().clone()
    assert "proj" not in prune_2_4_(block)
    assert torch.equal(block.proj.weight, before)


def test_exported_graph_carries_the_2_4_pattern_along_the_input_axis() -> None:
    dims = BlockDims(emb=32, heads=2, qk=8, v=8, mlp=48)
    block, inputs = build_block(dims, Workload(batch=1, tokens=5))
    prune_2_4_(block)
    proto = onnx.load_model_from_string(export_onnx(block, inputs).model)
    weights = {tuple(t.dims): numpy_helper.to_array(t) for t in proto.graph.initializer if len(t.dims) == 2}
    # the TorchScript exporter stores a Linear as a MatMul weight laid out (in, out): fc1 is (32, 48)
    fc1_out_in = weights[(32, 48)].T
    assert is_2_4_sparse(torch.from_numpy(np.ascontiguousarray(fc1_out_in)))
    assert np.count_nonzero(fc1_out_in) == fc1_out_in.size // 2
    assert np.array_equal(fc1_out_in, block.fc1.weight.detach().numpy())
