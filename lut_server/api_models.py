"""Request and response bodies of HTTP API v1 (pydantic); they are also what /openapi.json documents.

Request models are strict (no "768" strings or 768.0 floats for an integer, no unknown keys) so that a typo in a
client gets a 422 naming the field instead of a silently different query.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

_STRICT = ConfigDict(strict=True, extra="forbid")

Width = Field(ge=1, description="a width >= 1, inside the table's range (see `ranges` in the table summary)")


class BlockQuery(BaseModel):
    """One block's five dimensions (qk and v are per head)."""

    model_config = _STRICT
    emb: int = Width
    heads: int = Width
    qk: int = Width
    v: int = Width
    mlp: int = Width


class BlockWidthsQuery(BaseModel):
    """A block's own widths; the model's `emb` is given once beside them."""

    model_config = _STRICT
    heads: int = Width
    qk: int = Width
    v: int = Width
    mlp: int = Width


class GroupSizeQuery(BaseModel):
    """Units per group along each dimension; unset ones take the defaults (emb 16, heads 1, qk 8, v 8, mlp 16)."""

    model_config = _STRICT
    emb: int | None = Field(default=None, ge=1)
    heads: int | None = Field(default=None, ge=1)
    qk: int | None = Field(default=None, ge=1)
    v: int | None = Field(default=None, ge=1)
    mlp: int | None = Field(default=None, ge=1)

    def given(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class LatencyRequest(BaseModel):
    model_config = _STRICT
    blocks: list[BlockQuery] = Field(description="at most 100,000 blocks; more gets 413")


class DeltasRequest(BaseModel):
    model_config = _STRICT
    emb: int = Width
    blocks: list[BlockWidthsQuery] = Field(min_length=1, description="at most 100,000 blocks; more gets 413")
    group_size: GroupSizeQuery | None = Field(
        default=None,
        validation_alias=AliasChoices("group_size", "step"),
        description="units one group removes per dimension; also accepted under its older name `step`",
    )

    @model_validator(mode="before")
    @classmethod
    def _group_size_given_once(cls, data: Any) -> Any:
        """Both names at once would leave one of them silently unused."""
        if isinstance(data, dict) and "group_size" in data and "step" in data:
            raise PydanticCustomError(
                "group_size_given_twice",
                "give the group sizes once, as `group_size` (or its older name `step`), not both",
                {"field": "group_size"},
            )
        return data


class LatencyResponse(BaseModel):
    latency_ms: list[float] = Field(description="predicted latency of each block, in request order")


class BlockDeltas(BaseModel):
    """Latency saved by removing one group of a dimension of this block; null where the group cannot go."""

    heads: float | None
    qk: float | None
    v: float | None
    mlp: float | None


class DeltasResponse(BaseModel):
    total_ms: float = Field(description="whole model: blocks, plus patch embedding and head where the table has them")
    emb: float | None = Field(description="saved by removing one emb group from every block (and stem/head)")
    blocks: list[BlockDeltas]


class TableSummary(BaseModel):
    """What a client needs to pick a table and stay inside its range."""

    model_config = ConfigDict(extra="allow")
    id: str
    device: str
    backend: str
    precision: str
    batch: int
    tokens: int
    threads: int | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="backend options, e.g. torch-cpu's allocator")
    created: str | None = None
    accuracy: dict[str, Any]
    ranges: dict[str, list[int]] = Field(description="inclusive [lo, hi] a query may use, per axis")
    parts: list[str]
    fingerprint: dict[str, Any] = Field(
        default_factory=dict,
        description="what must match for the table to apply: {'device': {...}, 'software': {...}} (empty: unknown)",
    )
    content_hash: str | None = Field(
        default=None,
        description="sha256 of the table's grid, parts, calibration and interpolation: what a long run pins",
    )
    calibration: dict[str, Any] | None = Field(
        default=None,
        description="whole-model correction served by default: method, form, error before and after, level (the "
        "machine's typical speed relative to the sweep, which multiplies every answer) with its spread, and depths "
        "(of the models it was fitted on; other depths are extrapolated)",
    )
    interpolation: dict[str, Any] | None = Field(
        default=None,
        description="{'steps': [axes]}: axes answered as a staircase (a width between grid values costs what the next "
        "grid value costs); null: multilinear on every axis",
    )


class TablesResponse(BaseModel):
    tables: list[TableSummary]


class HealthResponse(BaseModel):
    status: str
    version: str
    tables: int = Field(description="servable tables")


class ErrorBody(BaseModel):
    """Every 4xx: what went wrong and, where it applies, the input field at fault."""

    detail: str
    field: str | None = None
