"""A TensorRT stage's buffers are bound by tensor name and mode, whatever order the engine lists its tensors in."""

from __future__ import annotations

import pytest
import torch

from profiler.backends.tensorrt_io import bind_stage
from profiler.onnx_export import export_onnx
from profiler.workload import MlpStage, Workload, build_part, stage_io


def _allocator(made: dict[str, torch.Tensor]):
    def allocate(name: str) -> torch.Tensor:
        made[name] = torch.full((2,), float(len(made) + 100))
        return made[name]

    return allocate


def test_outputs_listed_first_still_bind_the_stage_input_to_the_buffer_before_the_stage() -> None:
    """mlp reads and writes `x`: with the output listed first, a positional or in-order binding would give the
    engine its own output as input."""
    block_input, made = torch.zeros(2), {}
    state = {"x": block_input}
    bound = bind_stage(
        [("output0", "OUTPUT"), ("input0", "INPUT")], ("input0",), ("output0",), ("x",), ("x",), state,
        _allocator(made),
    )  # fmt: skip
    assert bound["input0"] is block_input
    assert bound["output0"] is made["output0"] and bound["output0"] is not block_input
    assert state["x"] is made["output0"]  # the next stage reads this stage's output


def test_names_not_positions_route_several_inputs_and_outputs() -> None:
    x, h, probs, made = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0), {}
    state = {"x": x, "h": h, "probs": probs}
    tensors = [("input2", "INPUT"), ("output0", "OUTPUT"), ("input0", "INPUT"), ("input1", "INPUT")]
    bound = bind_stage(tensors, ("input0", "input1", "input2"), ("output0",), ("x", "h", "probs"), ("x",), state,
                       _allocator(made))  # fmt: skip
    assert bound["input0"] is x and bound["input1"] is h and bound["input2"] is probs
    assert state["x"] is made["output0"] and state["h"] is h


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([("input0", "OUTPUT"), ("output0", "OUTPUT")], "input0 is an OUTPUT of the engine but an INPUT"),
        ([("input0", "INPUT")], r"no tensor\(s\) \['output0'\]"),
        ([("input0", "INPUT"), ("output0", "OUTPUT"), ("extra", "INPUT")], "extra is neither"),
        ([("input0", "INPUT"), ("input0", "INPUT"), ("output0", "OUTPUT")], "lists a tensor twice"),
    ],
)
def test_an_engine_that_does_not_match_the_graph_is_refused(tensors: list[tuple[str, str]], message: str) -> None:
    state = {"x": torch.zeros(1)}
    with pytest.raises(ValueError, match=message):
        bind_stage(tensors, ("input0",), ("output0",), ("x",), ("x",), state, _allocator({}))
    assert set(state) == {"x"}  # nothing half-bound


def test_the_exported_graph_names_are_the_ones_bound() -> None:
    """TensorRT's ONNX parser keeps the graph's I/O names; they are the names bind_stage routes by."""
    stage, inputs = build_part("mlp", {"emb": 16, "mlp": 32}, Workload(batch=1, tokens=5))
    assert isinstance(stage, MlpStage)
    graph = export_onnx(stage, inputs)
    reads, writes = stage_io(stage)
    state, made = {"x": inputs[0]}, {}
    tensors = [(name, "OUTPUT") for name in graph.output_names] + [(name, "INPUT") for name in graph.input_names]
    bound = bind_stage(tensors, graph.input_names, graph.output_names, reads, writes, state, _allocator(made))
    assert bound[graph.input_names[0]] is inputs[0] and state["x"] is made[graph.output_names[0]]
