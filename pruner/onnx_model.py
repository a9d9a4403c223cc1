"""ONNX export of a compacted model (through the profiler's exporter) and running it in onnxruntime.

The graph has static shapes, batch included, as the deployment runtimes the tables are made for build engines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lut_server.atomic_file import write_bytes_atomic
from profiler.onnx_export import export_onnx
from profiler.vit import VisionTransformer


def export_model_onnx(model: VisionTransformer, path: str | Path, batch: int = 1) -> Path:
    """Write `model` as an ONNX graph taking images of shape (batch, C, H, W) and returning logits.

    The example input is made on the model's device and in its dtype, so a CUDA or half-precision model exports
    as it is (the graph's input then has the model's dtype).
    """
    cfg = model.config
    weight = model.stem.patch_embed.weight
    images = torch.zeros(batch, cfg.in_chans, cfg.image_size, cfg.image_size, device=weight.device, dtype=weight.dtype)
    graph = export_onnx(model.eval(), (images,))
    path = Path(path)
    write_bytes_atomic(path, graph.model)
    return path


def onnx_logits(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Run the exported graph in onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
    return session.run(None, {graph_input.name: np.ascontiguousarray(images, dtype=dtype)})[0]
