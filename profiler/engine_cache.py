"""A directory of serialized TensorRT engines, keyed by what determines an engine's speed.

Building an engine takes seconds to minutes, and a sweep, its validation and a resumed sweep ask for the same
cells again. An engine is reused only when the exported graph's structure (every node, attribute, shape and
integer constant: the reshape that splits Q/K into heads included), the precision, the sparsity, the builder
settings, and the TensorRT version and GPU all match. Parameter shapes alone are not enough: the attention-scores
weight is (2·heads·qk, emb), so heads=2, qk=24 and heads=6, qk=8 share every shape, and an edited block definition
keeps its shapes. Floating-point weight values are not part of the key: a cached engine times the same
computation; it is not meant for inference with other weights. Writes are atomic, so a killed sweep never leaves
a torn engine behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lut_server.atomic_file import write_bytes_atomic

_KEY = re.compile(r"^[0-9a-f]{64}$")


def default_cache_dir() -> Path:
    """$VITLUT_ENGINE_CACHE, else $XDG_CACHE_HOME/vitlut/tensorrt (~/.cache/vitlut/tensorrt)."""
    if os.environ.get("VITLUT_ENGINE_CACHE"):
        return Path(os.environ["VITLUT_ENGINE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vitlut" / "tensorrt"


_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def graph_signature(onnx_model: bytes) -> str:
    """sha256 of the ONNX graph with the values of its floating-point weights removed (their names, types and
    shapes stay); integer constants (shapes, axes) and scalars stay whole."""
    import onnx

    model = onnx.load_model_from_string(onnx_model)
    for tensor in model.graph.initializer:
        if tensor.data_type in _FLOAT_TYPES and math.prod(tensor.dims) > 1:
            for field in ("raw_data", "float_data", "double_data", "int32_data"):
                tensor.ClearField(field)
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def cache_key(graph: str, build: Mapping[str, Any], versions: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of (graph signature, build settings, TensorRT version and GPU)."""
    payload = json.dumps({"graph": graph, "build": build, "versions": versions}, sort_keys=True, separators=(",", ":"))
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
