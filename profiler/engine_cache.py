"""A directory of serialized TensorRT engines, keyed by what determines an engine's speed.

Building an engine takes seconds to minutes, and a sweep, its validation and a resumed sweep ask for the same
cells again. An engine is reused only when the module's structure (parameter and input shapes: the dims), the
precision, the sparsity, the builder settings, and the TensorRT version and GPU all match. Weights are not part
of the key: a cached engine times the same computation; it is not meant for inference with other weights.
Writes are atomic, so a killed sweep never leaves a torn engine behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lut_server.atomic_file import write_bytes_atomic

_KEY = re.compile(r"^[0-9a-f]{64}$")


def default_cache_dir() -> Path:
    """$VITLUT_ENGINE_CACHE, else $XDG_CACHE_HOME/vitlut/tensorrt (~/.cache/vitlut/tensorrt)."""
    if os.environ.get("VITLUT_ENGINE_CACHE"):
        return Path(os.environ["VITLUT_ENGINE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vitlut" / "tensorrt"


def module_signature(module: nn.Module, inputs: tuple[Tensor, ...]) -> dict[str, Any]:
    """The structure an engine is built from: module type, every parameter's and buffer's shape, input shapes."""
    kind = type(module)
    return {
        "module": f"{kind.__module__}.{kind.__qualname__}",
        "parameters": [[name, list(p.shape)] for name, p in module.named_parameters()],
        "buffers": [[name, list(b.shape)] for name, b in module.named_buffers()],
        "inputs": [[list(x.shape), str(x.dtype)] for x in inputs],
    }


def cache_key(signature: Mapping[str, Any], build: Mapping[str, Any], versions: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of (structure, build settings, TensorRT version and GPU)."""
    payload = json.dumps(
        {"signature": signature, "build": build, "versions": versions}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class EngineCache:
    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"engine cache key must be 64 lower-case hex digits, got {key!r}")
        return self.directory / f"{key}.engine"

    def get(self, key: str) -> bytes | None:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, engine: bytes) -> Path:
        if not engine:
            raise ValueError("refusing to cache an empty engine")
        path = self.path(key)
        write_bytes_atomic(path, bytes(engine))
        return path
