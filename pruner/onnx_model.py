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
    """Write `model` as an ONNX graph taking images of shape (batch, C, H, W) and returning logits."""
    cfg = model.config
    images = torch.zeros(batch, cfg.in_chans, cfg.image_size, cfg.image_size)
    graph = export_onnx(model.eval(), (images,))
    path = Path(path)
    write_bytes_atomic(path, graph.model)
    return path


def onnx_logits(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Run the exported graph in onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})[0]
