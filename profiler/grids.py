"""Grid presets and grid files: which axis values each table part is measured at.

The block is timed as three parts over 3-, 3- and 2-D grids (see tables/README.md for why), or, on runtimes that
fuse attention, as two over 4- and 2-D grids (attn on emb, heads, qk, v: qk and v are then timed apart, so the
same grid takes len(v) times the runs): FLOPs of every
operation in a block are multilinear in the widths of its part, so multilinear interpolation is exact for the
FLOP-proportional share of latency and a coarse grid leaves only the hardware-efficiency curvature as error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lut_server.table_format import BLOCK_PARTS, PART_AXES, TableFormatError, validate_grid

DEFAULT_PARTS: tuple[str, ...] = ("attn_qk", "attn_v", "mlp", "stem", "head")


@dataclass(frozen=True)
class GridSpec:
    grid: dict[str, list[int]]
    parts: tuple[str, ...]
    parts_given: bool = field(default=False, compare=False)
    """Whether a grid file named its parts (a preset's, or a file's default, are no one's choice)."""

    def __post_init__(self) -> None:
        validate_grid(self.grid)
        for part in self.parts:
            if part not in PART_AXES:
                raise TableFormatError(f"unknown part {part!r}; parts are {list(PART_AXES)}")
            missing = [a for a in PART_AXES[part] if a not in self.grid]
            if missing:
                raise TableFormatError(f"part {part} needs grid axes {missing}")

    def as_dict(self) -> dict[str, Any]:
        return {"grid": self.grid, "parts": list(self.parts)}

    def without_model_parts(self) -> GridSpec:
        return GridSpec(self.grid, tuple(p for p in self.parts if p not in ("stem", "head")))

    def with_block_split(self, block_stages: tuple[str, ...]) -> GridSpec:
        """The same grid with its block parts replaced by another split's (attn_qk, attn_v -> attn for a runtime that
        fuses attention); stem and head stay."""
        if not set(self.parts) & set(BLOCK_PARTS):
            return self
        model_parts = tuple(p for p in self.parts if p not in BLOCK_PARTS)
        return GridSpec(self.grid, (*block_stages, *model_parts))


PRESETS: dict[str, GridSpec] = {
    # a few seconds: for tests and `make demo`'s first look
    "tiny": GridSpec({"emb": [32, 64], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [32, 64]}, DEFAULT_PARTS),
    # the DeiT-B range, down to small widths: 7 x 8 x 6 = 336 pipeline runs. Denser where latency bends
    # (few heads, narrow QK/V: per-head overheads); EMB and MLP enter every cost linearly and need fewer points.
    "default": GridSpec(
        {
            "emb": [32, 64, 128, 256, 384, 512, 768],
            "heads": [1, 2, 3, 4, 6, 8, 10, 12],
            "qk": [8, 16, 24, 32, 48, 64],
            "v": [8, 16, 24, 32, 48, 64],
            "mlp": [16, 256, 512, 1024, 1536, 2048, 2560, 3072],
        },
        DEFAULT_PARTS,
    ),
    # GPU matrix products run a staircase of tile sizes, so widths between grid values run slower than linear
    # interpolation says: qk and v on every multiple of 8 (the pruning lattice), emb every 64, mlp every 64 (free: an
    # emb's 8 x 8 = 64 runs cycle through up to 64 mlp values). 13 x 8 x 8 = 832 blocks, 2.5 times the default's.
    "gpu": GridSpec(
        {
            "emb": [32, *range(64, 769, 64)],
            "heads": [1, 2, 3, 4, 6, 8, 10, 12],
            "qk": list(range(8, 65, 8)),
            "v": list(range(8, 65, 8)),
            "mlp": [16, *range(64, 3073, 64)],
        },
        DEFAULT_PARTS,
    ),
}


def load_grid(preset_or_file: str) -> GridSpec:
    """A preset name, or a JSON file {"grid": {axis: [values]}, "parts": [names]} ("parts" optional)."""
    if preset_or_file in PRESETS:
        return PRESETS[preset_or_file]
    path = Path(preset_or_file)
    if not path.is_file():
        raise ValueError(f"--grid {preset_or_file!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"grid file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("grid"), Mapping):
        raise ValueError(f"grid file {path} must be an object with a 'grid' object ({{axis: [values]}})")
    parts = data.get("parts", list(DEFAULT_PARTS))
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"grid file {path}: 'parts' must be a list of part names, got {parts!r}")
    return GridSpec(dict(data["grid"]), tuple(parts), parts_given="parts" in data)
