"""Export a timed module (a table part, a block or a whole model) to an in-memory ONNX graph with its exact dims.

The deployment runtimes (ONNX Runtime, TensorRT) time the graph a user would ship, so every dimension is static:
no dynamic axes, the batch and token count of the workload baked in.

Exporter choice (torch 2.13): `torch.onnx.export` defaults to the dynamo exporter, which needs `onnxscript` and
takes 0.7–3.7 s per part on a 2-core CPU against 0.16–0.5 s for the TorchScript exporter, which gives identical
graphs for these blocks (LayerNorm, MatMul, Softmax, GELU). A sweep exports one graph per grid cell, so the
TorchScript exporter is the default; `exporter="dynamo"` is there for when the TorchScript one is removed from torch.

The TorchScript exporter traces by running the module once, on the device and in the dtype it is given: the GPU
backends export modules that are already on the GPU in the table's precision (an fp16 block at batch 256 runs at
a few GFLOP/s on a CPU). The number of outputs is read from the stage's declaration or from a run on the meta
device, which computes shapes only, so the module is never run twice.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Exporter = Literal["torchscript", "dynamo"]
EXPORTERS: tuple[str, ...] = ("torchscript", "dynamo")
DEFAULT_OPSET = 17  # LayerNormalization is a single op from opset 17 on, which both runtimes fuse well


@dataclass(frozen=True)
class OnnxGraph:
    """A serialized ONNX model and the names of its inputs and outputs, in the module's argument order."""

    model: bytes
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model).hexdigest()


def _output_count(module: nn.Module, inputs: tuple[Tensor, ...]) -> int:
    """How many tensors `module(*inputs)` returns, without computing them."""
    declared = getattr(module, "writes", None)
    if declared is not None:
        return len(declared)
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    with torch.inference_mode():
        out = torch.func.functional_call(
            module, {k: v.to("meta") for k, v in tensors.items()}, tuple(x.to("meta") for x in inputs)
        )
    return len(out) if isinstance(out, tuple | list) else 1


def export_onnx(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    exporter: Exporter = "torchscript",
    opset: int = DEFAULT_OPSET,
) -> OnnxGraph:
    """Serialize `module(*inputs)` to ONNX in memory (static shapes, eval mode, weights embedded)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    module = module.eval()
    input_names = tuple(f"input{i}" for i in range(len(inputs)))
    output_names = tuple(f"output{i}" for i in range(_output_count(module, inputs)))
    if exporter == "dynamo":
        try:
            program = torch.onnx.export(
                module, inputs, dynamo=True, opset_version=opset, input_names=list(input_names),
                output_names=list(output_names), verbose=False,
            )  # fmt: skip
        except ImportError as exc:
            raise ImportError(f"the dynamo ONNX exporter needs onnxscript: {exc}") from exc
        return OnnxGraph(program.model_proto.SerializeToString(), input_names, output_names)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter announces its own deprecation on every call; one sweep makes hundreds.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            module, inputs, buffer, dynamo=False, opset_version=opset, input_names=list(input_names),
            output_names=list(output_names), do_constant_folding=True,
        )  # fmt: skip
    return OnnxGraph(buffer.getvalue(), input_names, output_names)
