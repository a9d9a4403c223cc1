"""The five prunable dimensions of a ViT block, shared by the table, the server, the profiler and the pruner."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

AXES: tuple[str, ...] = ("emb", "heads", "qk", "v", "mlp")
"""Axis names in canonical order: embedding width, heads, query/key width per head, value width per head, MLP."""

WIDTH_AXES: tuple[str, ...] = ("heads", "qk", "v", "mlp")
"""The per-block axes; `emb` is shared by every block of a model."""


def _exact_keys(data: Mapping, keys: tuple[str, ...], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be an object with {', '.join(keys)}, got {data!r}")
    missing = [k for k in keys if k not in data]
    unknown = sorted(str(k) for k in data if k not in keys)
    if missing or unknown:
        raise ValueError(
            f"{what} must have exactly {', '.join(keys)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )


@dataclass(frozen=True, slots=True)
class BlockDims:
    """One block's dimensions; `qk` and `v` are per head and independent of each other."""

    emb: int
    heads: int
    qk: int
    v: int
    mlp: int

    def __post_init__(self) -> None:
        for name in AXES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, int]) -> BlockDims:
        """Exactly the five axes, as integers: a misspelt or extra key is an error, not silently ignored."""
        _exact_keys(data, AXES, "block dims")
        return cls(**{a: data[a] for a in AXES})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def widths(self) -> BlockWidths:
        return BlockWidths(self.heads, self.qk, self.v, self.mlp)


@dataclass(frozen=True, slots=True)
class BlockWidths:
    """A block's own widths, without the model-wide `emb`."""

    heads: int
    qk: int
    v: int
    mlp: int

    def __post_init__(self) -> None:
        BlockDims(1, self.heads, self.qk, self.v, self.mlp)  # same checks

    @classmethod
    def from_mapping(cls, data: Mapping[str, int]) -> BlockWidths:
        _exact_keys(data, WIDTH_AXES, "block widths")
        return cls(**{a: data[a] for a in WIDTH_AXES})

    def with_emb(self, emb: int) -> BlockDims:
        return BlockDims(emb, self.heads, self.qk, self.v, self.mlp)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ModelDims:
    """A whole model's prunable dimensions: one shared `emb` and per-block widths."""

    emb: int
    blocks: tuple[BlockWidths, ...]

    def __post_init__(self) -> None:
        if isinstance(self.emb, bool) or not isinstance(self.emb, int) or self.emb < 1:
            raise ValueError(f"emb must be an integer >= 1, got {self.emb!r}")
        if not self.blocks:
            raise ValueError("a model needs at least one block")

    @classmethod
    def uniform(cls, emb: int, depth: int, heads: int, qk: int, v: int, mlp: int) -> ModelDims:
        return cls(emb, tuple(BlockWidths(heads, qk, v, mlp) for _ in range(depth)))

    @classmethod
    def from_blocks(cls, blocks: Iterable[BlockDims]) -> ModelDims:
        blocks = list(blocks)
        embs = {b.emb for b in blocks}
        if len(embs) != 1:
            raise ValueError(f"all blocks of a model share one emb, got {sorted(embs)}")
        return cls(embs.pop(), tuple(b.widths() for b in blocks))

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelDims:
        """{"emb": E, "blocks": [widths, ...]} with integer widths: 48.9 or "48" is an error, never truncated."""
        _exact_keys(data, ("emb", "blocks"), "a model")
        if not isinstance(data["blocks"], list | tuple):
            raise ValueError(f"a model's blocks must be a list, got {data['blocks']!r}")
        return cls(data["emb"], tuple(BlockWidths.from_mapping(b) for b in data["blocks"]))

    def as_dict(self) -> dict:
        return {"emb": self.emb, "blocks": [b.as_dict() for b in self.blocks]}

    def block_dims(self) -> list[BlockDims]:
        return [b.with_emb(self.emb) for b in self.blocks]

    @property
    def depth(self) -> int:
        return len(self.blocks)
