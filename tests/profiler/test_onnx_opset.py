"""Every exported graph is valid ONNX by the checker's full check (shape and type inference), in every precision.

ONNX's Conv takes bfloat16 only from opset 22 on, so a bf16 graph (the stem) exported at opset 17 is invalid:
the export chooses 22 for bf16, refuses a lower opset, and the opset written is the one recorded.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from lut_server.dims import BlockDims
from profiler.backends.tensorrt_backend import TensorRtBackend
from profiler.onnx_export import export_onnx, model_opset, resolve_opset
from profiler.workload import Workload, build_block
from pruner.onnx_model import export_model_onnx
from tests.pruner.small_models import CONFIG, small_model


def full_check(model: bytes) -> None:
    onnx.checker.check_model(onnx.load_from_string(model), full_check=True)


@pytest.mark.parametrize(("dtype", "opset"), [(torch.float32, 17), (torch.float16, 17), (torch.bfloat16, 22)])
def test_a_whole_model_exports_as_valid_onnx_at_its_dtypes_opset(dtype: torch.dtype, opset: int) -> None:
    model = small_model(dtype=dtype).eval()
    images = torch.zeros(2, CONFIG.in_chans, CONFIG.image_size, CONFIG.image_size, dtype=dtype)
    graph = export_onnx(model, (images,))
    assert graph.opset == opset == model_opset(graph.model)
    full_check(graph.model)


def test_a_bf16_block_exports_as_valid_onnx() -> None:
    block, inputs = build_block(BlockDims(32, 2, 8, 16, 64), Workload(batch=2, tokens=5))
    graph = export_onnx(block.to(torch.bfloat16), tuple(x.to(torch.bfloat16) for x in inputs))
    assert graph.opset == 22
    full_check(graph.model)


def test_a_bf16_graph_below_opset_22_is_refused_not_written() -> None:
    model = small_model(dtype=torch.bfloat16).eval()
    images = torch.zeros(1, CONFIG.in_chans, CONFIG.image_size, CONFIG.image_size, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="opset 22"):
        export_onnx(model, (images,), opset=17)
    assert export_onnx(model, (images,), opset=23).opset == 23


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_pruners_export_of_a_model_is_valid_onnx(dtype: torch.dtype, tmp_path) -> None:
    path = export_model_onnx(small_model(dtype=dtype), tmp_path / "model.onnx", batch=2)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    graph_input = model.graph.input[0].type.tensor_type.elem_type
    assert graph_input == (onnx.TensorProto.BFLOAT16 if dtype == torch.bfloat16 else onnx.TensorProto.FLOAT)


def test_the_opset_follows_the_dtype_and_tensorrt_refuses_bf16_below_22() -> None:
    assert resolve_opset(torch.bfloat16, None) == 22 and resolve_opset(torch.float16, None) == 17
    assert resolve_opset(torch.float32, 19) == 19
    with pytest.raises(ValueError, match="opset 22"):
        resolve_opset(torch.bfloat16, 17)
    for opset in (17, 17.0):  # an integral float is the integer opset: refused alike
        with pytest.raises(ValueError, match="opset 22"):  # refused before any GPU is looked for
            TensorRtBackend("bf16", opset=opset)
