"""The block's stages add no work a deployed block does not do: no pass-through copies in exported graphs."""

from __future__ import annotations

import onnx
import torch

from lut_server.dims import BlockDims
from profiler.onnx_export import export_onnx
from profiler.workload import Workload, build_part, build_pipeline, initial_state, run_stage, stage_inputs


def test_the_scores_stage_exports_without_passing_its_input_through() -> None:
    stage, inputs = build_part("attn_qk", {"emb": 64, "heads": 2, "qk": 16}, Workload(2, 17))
    proto = onnx.load_model_from_string(export_onnx(stage, inputs).model)
    assert "Identity" not in {node.op_type for node in proto.graph.node}
    assert len(proto.graph.output) == 2  # normalised input and probabilities; not x again
    assert {o.name for o in proto.graph.output}.isdisjoint(i.name for i in proto.graph.input)


def test_stages_routed_by_name_compute_the_block() -> None:
    names, stages, inputs = build_pipeline(
        [BlockDims(64, 2, 16, 8, 96), BlockDims(64, 3, 8, 16, 32)], Workload(2, 17), with_model_parts=False
    )
    state = initial_state(stages, inputs)
    with torch.inference_mode():
        for stage in stages:
            run_stage(stage, state)
        want = inputs[0]
        for k in range(2):
            want = stages[3 * k].block(want)
    torch.testing.assert_close(state["x"], want)
    assert names == ["attn_qk", "attn_v", "mlp"] * 2


def test_attn_v_reads_the_block_input_itself() -> None:
    _, stages, inputs = build_pipeline(BlockDims(32, 2, 8, 8, 32), Workload(1, 5), with_model_parts=False)
    examples = stage_inputs(stages, inputs)
    assert examples[1][0] is inputs[0]  # the very tensor, not a copy made by the scores stage
