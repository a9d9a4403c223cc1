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

Opset: 17 (LayerNormalization as one op) unless the graph holds bfloat16, which ONNX's `Conv` (the stem's patch
embedding) accepts only from opset 22 on: a bf16 graph at 17 fails `onnx.checker.check_model(full_check=True)`.
The TorchScript exporter emits opsets up to 20, so a higher opset is reached by exporting at 20 and converting
with ONNX's version converter (its adapters from 20 to 22 only widen operator types); the opset written is read
back from the model and returned with it. Converting to 22 needs onnx 1.17 or later (onnx 1.16 knows opsets up to
21); an opset the installed onnx does not know is refused before anything is exported.
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
BF16_MIN_OPSET = 22  # Conv takes bfloat16 from opset 22 on
TORCHSCRIPT_MAX_OPSET = 20  # the highest opset torch's TorchScript exporter emits (it warns above it)
ONNX_REQUIREMENT = "onnx>=1.17"
"""The onnx the profiler needs: 1.17 is the first release that knows opset 22 (BF16_MIN_OPSET), which its version
converter must reach for a bf16 graph (onnx.helper.VERSION_TABLE)."""


def resolve_opset(dtype: torch.dtype, requested: int | None) -> int:
    """The opset a graph in `dtype` is exported at: `requested`, else 17 (22 for bfloat16). Refused where a graph in
    `dtype` would not be valid ONNX at it, or where the installed onnx does not know it (its version converter and
    checker would fail mid-sweep): every caller resolves here, so a backend refuses before a sweep starts."""
    opset = requested
    if opset is None:
        opset = BF16_MIN_OPSET if dtype == torch.bfloat16 else DEFAULT_OPSET
    if dtype == torch.bfloat16 and opset < BF16_MIN_OPSET:
        raise ValueError(f"a bfloat16 graph needs ONNX opset {BF16_MIN_OPSET} or later (Conv takes bfloat16 from "
                         f"{BF16_MIN_OPSET} on), not {opset}")  # fmt: skip
    import onnx.defs  # here, not at the top: importing the pruner (timm's environment, say) must not need onnx

    known = onnx.defs.onnx_opset_version()
    if known < opset:
        upgrade = f"pip install '{ONNX_REQUIREMENT}'" if opset <= BF16_MIN_OPSET else "upgrade onnx"
        raise ValueError(f"the installed onnx {onnx.__version__} knows ONNX opsets up to {known}, and the graph is "
                         f"exported at opset {opset}: {upgrade}")  # fmt: skip
    return opset


def _graph_dtype(module: nn.Module, inputs: tuple[Tensor, ...]) -> torch.dtype:
    """bfloat16 if any floating weight or input is bfloat16, else float32 (the opset choice only needs that)."""
    tensors = [*module.parameters(), *module.buffers(), *inputs]
    return torch.bfloat16 if any(t.dtype == torch.bfloat16 for t in tensors) else torch.float32


@dataclass(frozen=True)
class OnnxGraph:
    """A serialized ONNX model and the names of its inputs and outputs, in the module's argument order."""

    model: bytes
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int

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
    opset: int | None = None,
) -> OnnxGraph:
    """Serialize `module(*inputs)` to ONNX in memory (static shapes, eval mode, weights embedded) at `opset`
    (resolve_opset of the graph's dtype: by default 17, or 22 for bfloat16)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    opset = resolve_opset(_graph_dtype(module, inputs), opset)
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
        return _checked(program.model_proto.SerializeToString(), input_names, output_names, opset)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter announces its own deprecation on every call; one sweep makes hundreds.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            module, inputs, buffer, dynamo=False, opset_version=min(opset, TORCHSCRIPT_MAX_OPSET),
            input_names=list(input_names), output_names=list(output_names), do_constant_folding=True,
        )  # fmt: skip
    model = buffer.getvalue()
    if opset > TORCHSCRIPT_MAX_OPSET:
        import onnx
        from onnx import version_converter

        model = version_converter.convert_version(onnx.load_from_string(model), opset).SerializeToString()
    return _checked(model, input_names, output_names, opset)


def model_opset(model: bytes) -> int:
    """The default-domain opset a serialized model declares."""
    import onnx  # here, not at the top: importing the pruner (timm's environment, say) must not need onnx

    imports = onnx.load_from_string(model).opset_import
    return next(entry.version for entry in imports if entry.domain in ("", "ai.onnx"))


def _checked(model: bytes, input_names: tuple[str, ...], output_names: tuple[str, ...], opset: int) -> OnnxGraph:
    """The graph, once the opset it declares is the one asked for (an exporter may write another)."""
    written = model_opset(model)
    if written != opset:
        raise RuntimeError(f"the ONNX exporter wrote opset {written}, not the {opset} asked for")
    return OnnxGraph(model, input_names, output_names, written)
