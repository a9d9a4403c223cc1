"""The fused-attention split: attention timed as one stage (attn) with no artificial outputs, swept into a 4-D part
on (emb, heads, qk, v) that a table stores, interpolates and serves; onnxruntime's CPU provider times it here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from lut_server.dims import BlockDims
from lut_server.latency_table import LatencyTable, monotone_fit
from profiler.backends import create_backend
from profiler.grids import PRESETS, GridSpec
from profiler.onnx_export import export_onnx
from profiler.sweep import FUSED_LAYOUT, LAYOUT, Sweep, combo_dims, mlp_index, plan_combos
from profiler.timing import Protocol
from profiler.workload import FUSED_ATTENTION, SCORES_VALUES, Workload, build_part, build_pipeline, run_stage

WORKLOAD = Workload(batch=1, tokens=17)
GRID = {"emb": [32], "heads": [1, 2], "qk": [8, 16], "v": [8, 24], "mlp": [32, 64]}


def test_the_attention_stage_exports_without_the_probabilities_as_an_output() -> None:
    stage, inputs = build_part("attn", {"emb": 32, "heads": 2, "qk": 8, "v": 16}, WORKLOAD)
    graph = onnx.load_model_from_string(export_onnx(stage, inputs).model)
    outputs = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output]
    assert outputs == [[1, 17, 32]]  # the residual stream only; no (B, H, T, T) probabilities
    ops = [node.op_type for node in graph.graph.node]
    assert "Softmax" in ops and ops.count("MatMul") >= 2 and "Identity" not in ops
    scores, scores_inputs = build_part("attn_qk", {"emb": 32, "heads": 2, "qk": 8}, WORKLOAD)
    assert len(onnx.load_model_from_string(export_onnx(scores, scores_inputs).model).graph.output) == 2


def test_the_fused_split_adds_up_to_the_block() -> None:
    dims = [BlockDims(32, 2, 8, 24, 64), BlockDims(32, 1, 16, 8, 32)]
    names, stages, inputs = build_pipeline(dims, WORKLOAD, False, block_stages=FUSED_ATTENTION)
    assert names == ["attn", "mlp", "attn", "mlp"]
    state = {"x": inputs[0]}
    with torch.inference_mode():
        for stage in stages:
            run_stage(stage, state)
        whole = torch.nn.Sequential(stages[0].block, stages[2].block)(inputs[0])
    torch.testing.assert_close(state["x"], whole, rtol=0, atol=0)


def test_a_fused_grid_runs_every_qk_v_pair_and_cycles_mlp() -> None:
    spec = GridSpec(GRID, ("attn", "mlp"))
    combos = plan_combos(spec)
    assert len(combos) == 1 * 2 * 2 * 2 and all(len(c) == 4 for c in combos)
    assert {(combo_dims(spec, c).qk, combo_dims(spec, c).v) for c in combos} == {(8, 8), (8, 24), (16, 8), (16, 24)}
    assert {mlp_index(spec, c) for c in combos} == {0, 1}
    default = PRESETS["default"].with_block_split(FUSED_ATTENTION)
    assert default.parts == ("attn", "mlp", "stem", "head")
    assert PRESETS["default"].with_block_split(SCORES_VALUES) == PRESETS["default"]


def test_onnxruntime_sweeps_a_fused_table_that_loads_and_predicts_its_cells(tmp_path: Path) -> None:
    backend = create_backend("onnxruntime", "fp32", 1, provider="cpu")
    assert backend.block_stages == SCORES_VALUES  # the CPU provider keeps the shipped split unless asked
    spec = GridSpec(GRID, FUSED_ATTENTION)
    doc = Sweep(tmp_path / "fused.json", backend, WORKLOAD, spec, Protocol.quick()).run(progress=False)
    assert doc["complete"] and doc["sweep"]["layout"] == FUSED_LAYOUT != LAYOUT
    attn = np.array(doc["parts"]["attn"]["median_ms"], dtype=float)
    assert doc["parts"]["attn"]["axes"] == ["emb", "heads", "qk", "v"] and attn.shape == (1, 2, 2, 2)
    assert np.isfinite(attn).all() and (attn > 0).all()
    assert all(len(r["combo"]) == 4 and set(r["median_ms"]) == {"attn", "mlp"} for r in doc["sweep"]["records"])
    table = LatencyTable(doc, calibrated=False)
    attn_fit, mlp_fit = monotone_fit(attn), monotone_fit(np.array(doc["parts"]["mlp"]["median_ms"], dtype=float))
    for combo in plan_combos(spec):  # on the grid, a block is its attn cell plus its mlp cell
        for i_mlp in range(len(GRID["mlp"])):
            dims = BlockDims(**{**combo_dims(spec, combo).as_dict(), "mlp": GRID["mlp"][i_mlp]})
            expected = attn_fit[combo] + mlp_fit[0, i_mlp]
            assert table.block_latency([dims])[0] == pytest.approx(expected, rel=1e-12)
    deltas = table.deltas(_model(), {"qk": 8, "v": 8})
    assert all(b["qk"] is not None and b["v"] is not None for b in deltas.blocks)


def _model():
    from lut_server.dims import ModelDims

    return ModelDims.from_blocks([BlockDims(32, 2, 16, 24, 64), BlockDims(32, 2, 16, 16, 48)])


@pytest.mark.parametrize("parts", [("attn", "attn_v", "mlp"), ("attn",), ("attn_qk", "attn_v")])
def test_a_sweep_refuses_parts_that_are_not_one_whole_split(tmp_path: Path, parts: tuple[str, ...]) -> None:
    backend = create_backend("torch-cpu", "fp32", 1)
    with pytest.raises(ValueError, match="a sweep measures the parts"):
        Sweep(tmp_path / "t.json", backend, WORKLOAD, GridSpec(GRID, parts), Protocol.quick())
