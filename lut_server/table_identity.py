"""A table's identity by content: what a long pruning run pins so that a replaced table cannot go unnoticed.

The hash covers what the predictions are made of (the grid, the parts' timings, the calibration and, where the
table reads some axes as a staircase, those axes), not the metadata around them, so re-validating or renaming a
table keeps its identity and re-profiling changes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

IDENTITY_KEYS: tuple[str, ...] = ("grid", "parts", "calibration")


def content_hash(doc: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the table's `grid`, `parts` and `calibration` (None when absent), and
    its staircase axes where it has some."""
    subset: dict[str, Any] = {key: doc.get(key) for key in IDENTITY_KEYS}
    steps = (doc.get("interpolation") or {}).get("steps")
    if steps:  # a linear table hashes as it would without the key
        subset["interpolation_steps"] = sorted(steps)
    canonical = json.dumps(subset, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_CACHE: dict[int, tuple[Mapping[str, Any], str]] = {}
_CACHE_SIZE = 64


def cached_content_hash(doc: Mapping[str, Any]) -> str:
    """`content_hash` of a document that is not modified after loading, computed once per document object.

    A loaded table's summary is served on every listing; hashing megabytes of timings each time would dominate.
    The cache holds the document itself, so its id cannot be reused by another object while cached.
    """
    hit = _CACHE.get(id(doc))
    if hit is not None and hit[0] is doc:
        return hit[1]
    value = content_hash(doc)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(doc)] = (doc, value)
    return value
