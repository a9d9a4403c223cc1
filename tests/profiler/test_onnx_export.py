"""ONNX graphs of the profiled modules run in onnxruntime and give torch's outputs (QK != V included)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lut_server.dims import BlockDims, BlockWidths, ModelDims
from profiler.onnx_export import export_onnx
from profiler.vit import VitConfig
from profiler.workload import Workload, build_block, build_model, build_part


def _run_both(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    graph = export_onnx(module, inputs)
    session = ort.InferenceSession(graph.model, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: x.numpy() for name, x in zip(graph.input_names, inputs, strict=True)})
    with torch.inference_mode():
        want = module(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    return [(g, w.numpy()) for g, w in zip(got, want, strict=True)]


def test_block_with_qk_different_from_v_matches_torch() -> None:
    dims = BlockDims(emb=96, heads=3, qk=8, v=24, mlp=160)
    module, inputs = build_block(dims, Workload(batch=2, tokens=17))
    pairs = _run_both(module, inputs)
    got, want = pairs[0]
    assert got.shape == (2, 17, 96)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert not np.allclose(got, inputs[0].numpy(), atol=1e-3)  # the block did something


@pytest.mark.parametrize("part", ["attn_qk", "attn_v", "mlp"])
def test_each_block_part_matches_torch(part: str) -> None:
    dims = {"emb": 64, "heads": 2, "qk": 16, "v": 8, "mlp": 48}
    module, inputs = build_part(part, dims, Workload(batch=1, tokens=10))
    for got, want in _run_both(module, inputs):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_graph_has_exact_static_dims_and_the_block_weights() -> None:
    dims = BlockDims(emb=48, heads=2, qk=16, v=8, mlp=64)
    module, inputs = build_block(dims, Workload(batch=3, tokens=5))
    graph = export_onnx(module, inputs)
    proto = onnx.load_model_from_string(graph.model)
    in_shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert in_shape == [3, 5, 48]
    shapes = sorted(tuple(t.dims) for t in proto.graph.initializer if len(t.dims) == 2)
    # Q/K projection 2*H*QK = 64 wide, V projection H*V = 16 wide (stored transposed or not, by exporter choice)
    assert any(set(s) == {48, 64} for s in shapes)
    assert any(set(s) == {48, 16} for s in shapes)
    assert any(set(s) == {16, 48} for s in shapes)  # output projection H*V -> EMB


def test_whole_model_with_non_uniform_blocks_and_distillation_token_matches_torch() -> None:
    config = VitConfig(image_size=32, patch_size=16, num_classes=7, distilled=True)
    dims = ModelDims(32, (BlockWidths(2, 8, 16, 64), BlockWidths(1, 16, 8, 32)))
    module, inputs = build_model(dims, Workload(batch=2, tokens=config.tokens, model=config))
    ((got, want),) = _run_both(module, inputs)
    assert got.shape == (2, 7)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_unknown_exporter_is_refused() -> None:
    module, inputs = build_block(BlockDims(16, 1, 8, 8, 16), Workload(1, 4))
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(module, inputs, exporter="magic")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dtype", "onnx_type"), [(torch.float16, onnx.TensorProto.FLOAT16), (torch.bfloat16, onnx.TensorProto.BFLOAT16)]
)
def test_half_precision_blocks_export_in_their_precision(dtype: torch.dtype, onnx_type: int) -> None:
    module, inputs = build_block(BlockDims(emb=32, heads=2, qk=8, v=16, mlp=48), Workload(batch=2, tokens=5))
    module, inputs = module.to(dtype), tuple(x.to(dtype) for x in inputs)
    proto = onnx.load_model_from_string(export_onnx(module, inputs).model)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx_type
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx_type


def test_export_runs_the_module_once() -> None:
    """The exporter's trace is the only run: a second, full-size one doubled the cost of every cache miss."""
    module, inputs = build_model(ModelDims(32, (BlockWidths(2, 8, 8, 32),)), Workload(2, 5))
    devices: list[str] = []
    module.register_forward_hook(lambda _module, args, _out: devices.append(args[0].device.type))
    export_onnx(module, inputs)
    assert devices.count("cpu") == 1  # counting outputs runs on the meta device, which computes nothing
