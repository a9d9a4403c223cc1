"""The versioned JSON table format (documented in tables/README.md): constants, validation, reading, writing.

A table is a set of *parts*, each a dense grid of median latencies over some of the five axes. A block's latency
is the sum of its block parts; a model adds the `stem` and `head` parts (functions of `emb`) where present.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lut_server.atomic_file import write_json_atomic
from lut_server.dims import AXES

FORMAT_NAME = "vitlut.latency-table"
FORMAT_VERSION = 1

BLOCK_PARTS: dict[str, tuple[str, ...]] = {
    "block": AXES,  # a whole block on a 5-D grid
    "attn_qk": ("emb", "heads", "qk"),  # norm1, Q/K projection, scaled scores, softmax
    "attn_v": ("emb", "heads", "v"),  # V projection, probabilities x V, output projection, residual
    "mlp": ("emb", "mlp"),  # norm2, fc1, GELU, fc2, residual
}
MODEL_PARTS: dict[str, tuple[str, ...]] = {
    "stem": ("emb",),  # patch embedding, prefix tokens, position embedding
    "head": ("emb",),  # final norm and classifier
}
PART_AXES: dict[str, tuple[str, ...]] = {**BLOCK_PARTS, **MODEL_PARTS}
STAT_KEYS: tuple[str, ...] = ("median_ms", "p10_ms", "p90_ms", "samples")

TABLE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_AXIS_POINTS = 256
MAX_TABLE_CELLS = 2_000_000


class TableFormatError(ValueError):
    """A table file that does not follow the format; the message names the field at fault."""


def check_table_id(table_id: str) -> str:
    if not isinstance(table_id, str) or not TABLE_ID_PATTERN.fullmatch(table_id):
        raise TableFormatError(
            f"table id {table_id!r} is invalid: it must match {TABLE_ID_PATTERN.pattern} "
            "(lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)"
        )
    return table_id


def _require(mapping: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in mapping:
        raise TableFormatError(f"{where}.{key} is missing")
    value = mapping[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise TableFormatError(f"{where}.{key} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _positive_int(mapping: Mapping[str, Any], key: str, where: str) -> int:
    value = _require(mapping, key, int, where)
    if value < 1:
        raise TableFormatError(f"{where}.{key} must be >= 1, got {value}")
    return value


def validate_grid(grid: Any) -> dict[str, list[int]]:
    if not isinstance(grid, Mapping):
        raise TableFormatError("grid must be an object mapping axis names to lists of integers")
    unknown = sorted(set(grid) - set(AXES))
    if unknown:
        raise TableFormatError(f"grid has unknown axes {unknown}; axes are {list(AXES)}")
    out: dict[str, list[int]] = {}
    for axis, values in grid.items():
        where = f"grid.{axis}"
        if not isinstance(values, list) or not values:
            raise TableFormatError(f"{where} must be a non-empty list of integers")
        if len(values) > MAX_AXIS_POINTS:
            raise TableFormatError(f"{where} has {len(values)} points; at most {MAX_AXIS_POINTS}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise TableFormatError(f"{where} must hold integers >= 1, got {v!r}")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise TableFormatError(f"{where} must be strictly increasing, got {values}")
        out[axis] = list(values)
    return out


def _as_array(values: Any, shape: tuple[int, ...], where: str, allow_missing: bool) -> np.ndarray:
    try:
        array = np.array(values, dtype=float)  # JSON null becomes nan
    except (TypeError, ValueError) as exc:
        raise TableFormatError(f"{where} must be a nested list of numbers: {exc}") from None
    if array.shape != shape:
        raise TableFormatError(f"{where} has shape {list(array.shape)}, the grid needs {list(shape)}")
    bad_values = np.isinf(array) | (~np.isnan(array) & (array <= 0))
    if bad_values.any():
        index = tuple(int(i) for i in np.argwhere(bad_values)[0])
        raise TableFormatError(f"{where} must hold finite positive latencies; entry {list(index)} is {array[index]}")
    if not allow_missing and np.isnan(array).any():
        index = tuple(int(i) for i in np.argwhere(np.isnan(array))[0])
        raise TableFormatError(f"{where} entry {list(index)} is missing (null or NaN) in a complete table")
    return array


def validate_table(data: Any) -> dict[str, Any]:
    """Check a decoded table document; return it unchanged or raise TableFormatError naming the field."""
    if not isinstance(data, Mapping):
        raise TableFormatError("a table must be a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise TableFormatError(f"format must be {FORMAT_NAME!r}, got {data.get('format')!r}")
    version = data.get("version")
    if version != FORMAT_VERSION:
        raise TableFormatError(f"version {version!r} is not supported; this build reads version {FORMAT_VERSION}")
    complete = _require(data, "complete", bool, "table")
    workload = _require(data, "workload", Mapping, "table")
    _require(workload, "backend", str, "workload")
    _require(workload, "precision", str, "workload")
    _positive_int(workload, "batch", "workload")
    _positive_int(workload, "tokens", "workload")
    for key in ("device", "software", "protocol"):
        _require(data, key, Mapping, "table")
    model = data.get("model")
    if model is not None and not isinstance(model, Mapping):
        raise TableFormatError("model must be an object or null")
    grid = validate_grid(_require(data, "grid", Mapping, "table"))
    parts = _require(data, "parts", Mapping, "table")
    if not any(name in BLOCK_PARTS for name in parts):
        raise TableFormatError(f"parts must include block parts (any of {list(BLOCK_PARTS)})")
    if "block" in parts and len(set(parts) & set(BLOCK_PARTS)) > 1:
        raise TableFormatError("parts: a whole 'block' part cannot be combined with attn_qk/attn_v/mlp parts")
    cells = 0
    for name, part in parts.items():
        where = f"parts.{name}"
        if name not in PART_AXES:
            raise TableFormatError(f"{where} is not a known part; parts are {list(PART_AXES)}")
        if not isinstance(part, Mapping):
            raise TableFormatError(f"{where} must be an object")
        axes = tuple(_require(part, "axes", list, where))
        if axes != PART_AXES[name]:
            raise TableFormatError(f"{where}.axes must be {list(PART_AXES[name])}, got {list(axes)}")
        missing_axes = [a for a in axes if a not in grid]
        if missing_axes:
            raise TableFormatError(f"{where} uses axes {missing_axes} that the grid does not define")
        shape = tuple(len(grid[a]) for a in axes)
        cells += math.prod(shape)
        if cells > MAX_TABLE_CELLS:
            raise TableFormatError(f"parts hold more than {MAX_TABLE_CELLS} cells")
        _as_array(_require(part, "median_ms", list, where), shape, f"{where}.median_ms", not complete)
        for key in ("p10_ms", "p90_ms"):
            if key in part:
                _as_array(part[key], shape, f"{where}.{key}", True)
    validation = data.get("validation")
    if validation is not None and not isinstance(validation, Mapping):
        raise TableFormatError("validation must be an object or null")
    return dict(data)


def part_median(data: Mapping[str, Any], name: str) -> np.ndarray:
    """The median latencies of one part as a float array (NaN where not yet measured)."""
    part = data["parts"][name]
    return np.array(part["median_ms"], dtype=float)


def read_table(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TableFormatError(f"cannot read table {path.name}: {exc.strerror}") from None
    return parse_table(text, source=path.name)


def parse_table(text: str | bytes, source: str = "table") -> dict[str, Any]:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TableFormatError(f"{source} is not valid JSON: {exc}") from None
    return validate_table(data)


def _reject_constant(name: str) -> None:
    raise TableFormatError(f"table JSON contains {name}; latencies must be finite numbers")


def write_table(path: str | Path, data: Mapping[str, Any]) -> None:
    """Validate, then write atomically (temp file + rename)."""
    validate_table(data)
    write_json_atomic(path, data)
