"""Reading, writing and building table documents (the format is `table_model.py`, described in tables/README.md).

A table is a set of *parts*, each a dense grid of median latencies over some of the five axes. A block's latency
is the sum of its block parts; a model adds the `stem` and `head` parts (functions of `emb`) where present.
Documents travel through the code base as plain dicts with the keys of version 2; the typed model checks them on
the way in and out.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lut_server.atomic_file import write_json_atomic
from lut_server.table_model import (
    BLOCK_PARTS,
    BLOCK_SPLITS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_AXIS_POINTS,
    MAX_AXIS_VALUE,
    MAX_LATENCY_MS,
    MAX_TABLE_CELLS,
    MODEL_PARTS,
    PART_AXES,
    READABLE_VERSIONS,
    LatencyTableDocument,
    TableFormatError,
    has_fingerprint,
    upgrade_device,
    upgrade_software,
    validate_grid,
)

__all__ = [
    "BLOCK_PARTS",
    "BLOCK_SPLITS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_AXIS_POINTS",
    "MAX_AXIS_VALUE",
    "MAX_LATENCY_MS",
    "MAX_TABLE_CELLS",
    "MODEL_PARTS",
    "PART_AXES",
    "READABLE_VERSIONS",
    "TABLE_ID_PATTERN",
    "TableFormatError",
    "check_table_id",
    "has_fingerprint",
    "incomplete_reason",
    "new_table_document",
    "parse_table",
    "part_median",
    "read_table",
    "validate_grid",
    "validate_table",
    "write_table",
]

TABLE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_table_id(table_id: str) -> str:
    if not isinstance(table_id, str) or not TABLE_ID_PATTERN.fullmatch(table_id):
        raise TableFormatError(
            f"table id {table_id!r} is invalid: it must match {TABLE_ID_PATTERN.pattern} "
            "(lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)"
        )
    return table_id


def validate_table(data: Any) -> dict[str, Any]:
    """Check a decoded table document (version 1 or 2); return it as a version 2 dict, or raise TableFormatError
    naming the field."""
    if isinstance(data, LatencyTableDocument):
        return data.model_dump()
    if not isinstance(data, Mapping):
        raise TableFormatError("a table must be a JSON object")
    try:
        return LatencyTableDocument.model_validate(data).model_dump()
    except TableFormatError:
        raise
    except ValueError as exc:  # the model's one-error wrapper, re-raised by pydantic as a ValidationError
        raise _table_error(exc) from None


def _table_error(exc: ValueError) -> TableFormatError:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        for error in errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, TableFormatError):
                return cause
    return TableFormatError(str(exc))


def incomplete_reason(name: str) -> str:
    """Why a table with missing cells is refused and what completes it: one wording wherever a table must be whole."""
    return (
        f"{name} is incomplete (a sweep still running or killed, or one shard): finish it with `profile --resume` "
        "or `merge` its shards"
    )


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


def write_table(path: str | Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate, then write atomically (temp file + rename), always as version 2; returns what was written."""
    document = validate_table(data)
    write_json_atomic(path, document)
    return document


def new_table_document(
    workload: Mapping[str, Any],
    model: Mapping[str, Any] | None,
    device: Mapping[str, Any],
    software: Mapping[str, Any],
    protocol: Mapping[str, Any],
    grid: Mapping[str, list[int]],
    parts: Mapping[str, Any],
    sweep: Mapping[str, Any] | None,
    *,
    complete: bool = False,
    created: str | None = None,
) -> dict[str, Any]:
    """The one place a table document is put together (by a sweep, a transfer or a test): a validated version 2
    dict with no validation or calibration yet.

    `device` and `software` are `{"match": ..., "recorded": ...}` (device also `name`, `kind`); a flat dict of
    facts without `match` is taken as recorded only, as for a version 1 table (no fingerprint).
    """
    return validate_table(
        {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "complete": complete,
            "created": created or _utc_now(),
            "workload": dict(workload),
            "model": dict(model) if model is not None else None,
            "device": upgrade_device(dict(device)),
            "software": upgrade_software(dict(software)),
            "protocol": dict(protocol),
            "grid": {axis: list(values) for axis, values in grid.items()},
            "parts": dict(parts),
            "sweep": dict(sweep) if sweep is not None else None,
            "validation": None,
            "calibration": None,
        }
    )


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
