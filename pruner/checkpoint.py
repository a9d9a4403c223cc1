"""Saving and loading a compacted model: a JSON manifest of its dims and config, and safetensors weights.

The manifest is written last, so a directory with a manifest always has complete weights next to it; both files
are written atomically. Loading needs nothing but this package (no pickle, no user code).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from lut_server.atomic_file import write_bytes_atomic, write_json_atomic
from lut_server.dims import ModelDims
from profiler.vit import VisionTransformer, VitConfig

MANIFEST = "vitlut-model.json"
WEIGHTS = "model.safetensors"
FORMAT_NAME = "vitlut.compact-vit"
FORMAT_VERSION = 1


def save_compact(model: VisionTransformer, directory: str | Path) -> Path:
    """Write `model` (a compacted VisionTransformer) to `directory`; returns the manifest's path."""
    directory = Path(directory)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    blob = save_tensors(state)
    write_bytes_atomic(directory / WEIGHTS, blob)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "dims": model.model_dims.as_dict(),
        "config": model.config.as_dict(),
        "weights": WEIGHTS,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "parameters": sum(t.numel() for t in model.parameters()),
    }
    write_json_atomic(directory / MANIFEST, manifest)
    return directory / MANIFEST


def load_compact(directory: str | Path) -> VisionTransformer:
    """Rebuild the model saved by `save_compact` (in eval mode)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} has no {MANIFEST}; was it written by save_compact?") from None
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{directory / MANIFEST} is not a {FORMAT_NAME} v{FORMAT_VERSION} manifest")
    blob = (directory / WEIGHTS).read_bytes()
    if hashlib.sha256(blob).hexdigest() != manifest["weights_sha256"]:
        raise ValueError(f"{directory / WEIGHTS} does not match the manifest's checksum")
    model = VisionTransformer(ModelDims.from_dict(manifest["dims"]), VitConfig.from_dict(manifest["config"]))
    model.load_state_dict(load_tensors(blob), strict=True)
    return model.eval()
