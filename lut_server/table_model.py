"""The table document as a typed model: one definition for reading, writing, building and the HTTP schema.

Version 2 splits what a table knows about its machine into what must match for the table to apply
(`device.match`, `software.match`) and what is only recorded, and adds the whole-model calibration. A version 1
document is upgraded in memory on the way in (`upgrade_v1`), so old files keep loading and serving.

Every validation failure surfaces as one `TableFormatError` whose message starts with the field at fault
("parts.mlp.median_ms has shape [2, 3], the grid needs [3, 3]"), whether it came from a type check or from the
cross-field checks of grid and parts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

from lut_server.dims import AXES

FORMAT_NAME = "vitlut.latency-table"
FORMAT_VERSION = 2
"""The version `write_table` writes; version 1 is still read (and upgraded)."""
READABLE_VERSIONS: tuple[int, ...] = (1, 2)

BLOCK_PARTS: dict[str, tuple[str, ...]] = {
    "block": AXES,  # a whole block on a 5-D grid
    "attn_qk": ("emb", "heads", "qk"),  # norm1, Q/K projection, scaled scores, softmax
    "attn_v": ("emb", "heads", "v"),  # V projection, probabilities x V, output projection, residual
    "attn": ("emb", "heads", "qk", "v"),  # attn_qk and attn_v as one part, for runtimes that fuse attention
    "mlp": ("emb", "mlp"),  # norm2, fc1, GELU, fc2, residual
}
BLOCK_SPLITS: dict[str, tuple[str, ...]] = {
    "scores-values": ("attn_qk", "attn_v", "mlp"),  # the attention probabilities pass between two parts
    "fused-attention": ("attn", "mlp"),  # nothing but the residual stream passes between parts
    "whole-block": ("block",),
}
"""The ways a block is split into parts; a table's block parts come from one of them and add up to the block."""
MODEL_PARTS: dict[str, tuple[str, ...]] = {
    "stem": ("emb",),  # patch embedding, prefix tokens, position embedding
    "head": ("emb",),  # final norm and classifier
}
PART_AXES: dict[str, tuple[str, ...]] = {**BLOCK_PARTS, **MODEL_PARTS}

BackendName = Literal["torch-cpu", "torch-cuda", "onnxruntime", "tensorrt"]
"""The profiler's backends (`profiler/backends`): a table says which runtime its latencies are for."""
Precision = Literal["fp32", "fp16", "bf16"]
"""The precisions a backend times in (`profiler/backends/base.py: PRECISIONS`)."""
SweepLayout = Literal[
    "in-context-parts/v1",  # one block per pipeline run, split attn_qk | attn_v | mlp
    "in-context-pairs/v2",  # two blocks per run, the same split
    "in-context-pairs-fused-attention/v1",  # two blocks per run, split attn | mlp
    "in-context-pairs/v2+transfer",  # moved from another device by `profile --from`
]
"""How a sweep ran its blocks (`profiler/sweep.py`, `profiler/transfer.py`); a resume or merge needs the same one."""

MAX_AXIS_POINTS = 256
MAX_TABLE_CELLS = 2_000_000
MAX_AXIS_VALUE = 1 << 20
"""The widest a grid axis may reach (1,048,576 units): far beyond any ViT, and it bounds how far a group delta
extrapolates below the grid, so an accepted table cannot answer numbers beyond the float range."""
MAX_LATENCY_MS = 1e7
"""The largest latency a cell may hold (1e7 ms, nearly three hours): far above any part of a ViT on any device, and
low enough that a query's sums (100,000 blocks of a few parts) stay finite numbers that JSON can carry."""


class TableFormatError(ValueError):
    """A table file that does not follow the format; the message names the field at fault."""


# ---- field types ------------------------------------------------------------------------------------------------
JsonObject = dict[str, Any]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Percent = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NestedLatencies = Annotated[
    list[Any],
    WithJsonSchema(
        {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_LATENCY_MS},
                    {"type": "null"},
                    {"type": "array"},
                ]
            },
            "description": "nested lists, one level per axis of the part (shape = grid lengths along `axes`) of "
            f"latencies in ms, each above 0 and at most {MAX_LATENCY_MS:g}; null marks a cell not measured yet",
        }
    ),
]

_CLOSED = ConfigDict(strict=True, extra="forbid")
_OPEN = ConfigDict(strict=True, extra="allow")


class _Sparse(BaseModel):
    """A section whose optional keys are written only when given, so a document keeps the keys it came with."""

    @model_serializer(mode="wrap")
    def _given_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        declared = type(self).model_fields
        return {k: v for k, v in data.items() if k in self.model_fields_set or k not in declared}


# ---- sections ---------------------------------------------------------------------------------------------------
class Workload(BaseModel):
    """Everything a resumed sweep, a merge or `profiler measure` must reproduce."""

    model_config = _CLOSED
    backend: BackendName = Field(description="the runtime the latencies are for")
    precision: Precision
    batch: PositiveInt
    tokens: PositiveInt
    threads: int | None = Field(default=None, description="CPU threads; null where not applicable")
    options: JsonObject = Field(default_factory=dict, description="backend options, e.g. torch-cpu's allocator")


class VitModel(BaseModel):
    """The ViT around the blocks, present when the table has `stem`/`head` parts."""

    model_config = _OPEN
    image_size: PositiveInt
    patch_size: PositiveInt
    in_chans: PositiveInt
    num_classes: PositiveInt
    distilled: bool
    attn_scale: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    norm_eps: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Device(BaseModel):
    """The device fingerprint: `match` must equal this machine's for the table to apply; `recorded` is context."""

    model_config = _CLOSED
    name: str
    kind: Literal["cpu", "gpu"]
    match: JsonObject = Field(
        default_factory=dict,
        description="what must be equal for the table to apply (CPU identity, ISA flags, caches, threads; GPU "
        "name, compute capability, memory, SMs, ...); empty: the table cannot say which machine it describes",
    )
    recorded: JsonObject = Field(default_factory=dict, description="facts kept for reference (cores, OS, clocks, ...)")


class Software(BaseModel):
    """The software that changes kernels (`match`) and the rest of the environment (`recorded`)."""

    model_config = _CLOSED
    match: JsonObject = Field(default_factory=dict, description="torch, onnxruntime, TensorRT, CUDA, math modes...")
    recorded: JsonObject = Field(default_factory=dict, description="python, numpy, vitlut...")


class Part(_Sparse):
    """One measured part: statistics on the grid over `axes`."""

    model_config = _CLOSED
    axes: list[str]
    median_ms: NestedLatencies
    p10_ms: NestedLatencies | None = None
    p90_ms: NestedLatencies | None = None
    samples: list[Any] | None = Field(default=None, description="sample counts, same shape as median_ms")


class Shard(BaseModel):
    model_config = _CLOSED
    index: NonNegativeInt
    count: PositiveInt


class DerivedFrom(BaseModel):
    """The table a transferred table was fitted from, and how many measurements the transfer took."""

    model_config = _OPEN
    table_id: str
    content_hash: str
    budget: NonNegativeInt


class Sweep(_Sparse):
    """How the parts were measured: the raw records they derive from, progress, drift and provenance."""

    model_config = _OPEN
    layout: SweepLayout | None = None
    parts: list[str] | None = None
    records: list[JsonObject] | None = None
    measurements: NonNegativeInt | None = None
    units_done: NonNegativeInt | None = None
    units_planned: NonNegativeInt | None = None
    wall_s: float | None = None
    shard: Shard | None = None
    seed: int | None = None
    reference: JsonObject | None = None
    level_normalised: bool | None = Field(
        default=None, description="cells derived from records divided by the machine's level when each was measured"
    )
    flagged: list[JsonObject] | None = None
    merged_from: list[JsonObject] | None = None
    derived_from: DerivedFrom | None = None


class ApeFigures(_Sparse):
    """Absolute percentage error of predictions against measurements."""

    model_config = _OPEN
    median_ape_pct: Percent | None = None
    p95_ape_pct: Percent | None = None
    max_ape_pct: Percent | None = None


class ModelValidation(ApeFigures):
    """The raw table against whole models (their calibrated figures are `validation.models_calibrated`)."""

    count: int | None = None
    depth: int | None = None
    signed_median_pct: float | None = None


class Validation(ApeFigures):
    """What `profiler validate` found: the table against random off-grid blocks and whole models."""

    points: int | None = None
    signed_median_pct: float | None = None
    retest_noise_pct: float | None = None
    models: ModelValidation | None = None
    calibrated: ApeFigures | None = Field(default=None, description="the off-grid blocks, calibration applied")
    models_calibrated: ApeFigures | None = Field(
        default=None, description="the whole models, calibration applied (what `meets_model_bar` judges)"
    )
    table_level_pct: float | None = Field(
        default=None, description="the level the calibrated answers were at, in percent against the sweep"
    )
    why: list[str] | None = Field(
        default=None, description="for a bar missed as measured and met with the machine's level taken out: which, "
        "and how far the machine ran from the sweep and from the answers",
    )  # fmt: skip


class ErrorFigures(BaseModel):
    """Median, p95 and max absolute percentage error (all required)."""

    model_config = _OPEN
    median_ape_pct: Percent
    p95_ape_pct: Percent
    max_ape_pct: Percent


Factor = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Constant = Annotated[float, Field(allow_inf_nan=False)]


class Calibration(_Sparse):
    """A correction fitted to whole-model measurements; the part medians stay untouched beside it."""

    model_config = _CLOSED
    method: str
    form: str | None = Field(default=None, description="the fitted form: none, scale, parts or parts+constants")
    factors: dict[str, Factor] = Field(description="per part (attn_qk, attn_v, attn, mlp, block, stem, head): scale")
    block_ms: Constant = Field(description="added once per block")
    model_ms: Constant = Field(description="added once per model")
    fitted: JsonObject = Field(
        default_factory=dict, description="what it was fitted on (created, models, validations, points)"
    )
    before: ErrorFigures
    after: ErrorFigures = Field(description="cross-validated on held-out models")
    cross_validation: dict[str, Percent] = Field(
        default_factory=dict, description="leave-one-out mean absolute relative error of every form, in percent"
    )
    cross_validation_bound: Percent | None = Field(
        default=None, description="the lowest error plus one standard error: the simplest form within it is kept"
    )
    level: Factor = Field(
        default=1.0,
        description="the machine's typical speed relative to the sweep (the median of the recorded `levels` "
        "sessions, the sweep counted as 1): every calibrated answer is multiplied by it",
    )
    level_sessions: NonNegativeInt | None = Field(default=None, description="how many sessions `level` is taken from")
    level_spread_pct: Percent | None = Field(
        default=None,
        description="the 90th percentile of the sessions' departures from `level` (five sessions or more): the "
        "machine's wander over hours, which `profiler check` allows",
    )

    @field_validator("factors")
    @classmethod
    def _known_parts(cls, factors: dict[str, float]) -> dict[str, float]:
        for name in factors:
            if name not in PART_AXES:
                raise TableFormatError(f"calibration.factors.{name} is not a known part; parts are {list(PART_AXES)}")
        return factors


class Interpolation(BaseModel):
    """How the table is read between grid values, where linear interpolation is not what the device does."""

    model_config = _CLOSED
    steps: list[Literal["emb", "heads", "qk", "v", "mlp"]] = Field(
        description="axes answered as a staircase: a width between two grid values costs what the next grid value "
        "costs (GPU matrix products pad a width to the tile size; a grid in tile steps then holds every step); "
        "the other axes are interpolated linearly"
    )
    chosen: JsonObject = Field(
        default_factory=dict,
        description="what the choice was made on: the validation, its blocks, the best candidate, each candidate's "
        "error",
    )

    @field_validator("steps")
    @classmethod
    def _once_each(cls, steps: list[str]) -> list[str]:
        if not steps:
            raise TableFormatError("interpolation.steps is empty; a table read linearly has no `interpolation`")
        if len(set(steps)) != len(steps):
            raise TableFormatError(f"interpolation.steps names an axis twice: {steps}")
        return steps


MAX_LEVEL_SESSIONS = 500
"""The most sessions a table's level history keeps (the newest); a check a day for a year fits."""


class LevelSession(_Sparse):
    """The machine's speed during one session that timed the table's reference configuration again."""

    model_config = _OPEN
    created: str = Field(description="UTC time of the session (ISO 8601)")
    source: Literal["validate", "check"]
    level_pct: Annotated[float, Field(gt=-100, allow_inf_nan=False)] = Field(
        description="measured over the table's raw cells, minus 1, in percent (negative: the machine was faster)"
    )
    count: NonNegativeInt | None = Field(default=None, description="how many timings the level is the median of")
    device: str | None = Field(default=None, description="the device name where the session ran")


# ---- grid and part values ---------------------------------------------------------------------------------------
def validate_grid(grid: Any) -> dict[str, list[int]]:
    """Axis values: known axes, non-empty strictly increasing lists of integers from 1 to MAX_AXIS_VALUE, at most
    MAX_AXIS_POINTS of them."""
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
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_AXIS_VALUE:
                raise TableFormatError(f"{where} must hold integers from 1 to {MAX_AXIS_VALUE}, got {repr(v)[:32]}")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise TableFormatError(f"{where} must be strictly increasing, got {values}")
        out[axis] = list(values)
    return out


_CELL_TYPES = (int, float, np.integer, np.floating, type(None))


def check_part_values(values: Any, shape: tuple[int, ...], where: str, allow_missing: bool) -> np.ndarray:
    """A part's statistic as a float array of the grid's shape: positive finite latencies of at most MAX_LATENCY_MS
    (NaN where not measured). Numbers only: numpy would read "1.0" or true as a latency."""
    try:
        array = np.array(values, dtype=float)  # JSON null becomes nan
    except (TypeError, ValueError, OverflowError) as exc:
        raise TableFormatError(f"{where} must be a nested list of numbers: {exc}") from None
    if array.shape != shape:
        raise TableFormatError(f"{where} has shape {list(array.shape)}, the grid needs {list(shape)}")
    _check_cell_types(values, shape, where)
    bad_values = np.isinf(array) | (~np.isnan(array) & (array <= 0))
    if bad_values.any():
        index = tuple(int(i) for i in np.argwhere(bad_values)[0])
        raise TableFormatError(f"{where} must hold finite positive latencies; entry {list(index)} is {array[index]}")
    too_large = ~np.isnan(array) & (array > MAX_LATENCY_MS)
    if too_large.any():
        index = tuple(int(i) for i in np.argwhere(too_large)[0])
        raise TableFormatError(
            f"{where} must hold latencies of at most {MAX_LATENCY_MS:g} ms; entry {list(index)} is {array[index]:g}"
        )
    if not allow_missing and np.isnan(array).any():
        index = tuple(int(i) for i in np.argwhere(np.isnan(array))[0])
        raise TableFormatError(f"{where} entry {list(index)} is missing (null or NaN) in a complete table")
    return array


def _check_cell_types(values: Any, shape: tuple[int, ...], where: str) -> None:
    """Every cell a number or null; bool is an int to Python but not a latency."""
    cells = np.array(values, dtype=object).reshape(-1)
    kinds = set(map(type, cells))
    bad_kinds = {k for k in kinds if issubclass(k, bool) or not issubclass(k, _CELL_TYPES)}
    if not bad_kinds:
        return
    first = next(i for i, cell in enumerate(cells) if type(cell) in bad_kinds)
    index = [int(i) for i in np.unravel_index(first, shape)]
    cell = cells[first]
    raise TableFormatError(
        f"{where} must hold numbers (null where not measured yet); entry {index} is {repr(cell)[:40]}, a "
        f"{type(cell).__name__}"
    )


# ---- version 1 --------------------------------------------------------------------------------------------------
def upgrade_device(device: Any) -> Any:
    """A version 1 device (flat facts) as a version 2 one: no fingerprint, everything recorded."""
    if not isinstance(device, Mapping) or "match" in device:
        return device
    kind = device.get("kind") or "cpu"
    recorded = {k: v for k, v in device.items() if k not in ("name", "kind")}
    return {
        "name": device.get("name", "unknown"),
        "kind": "gpu" if kind in ("gpu", "cuda") else "cpu",
        "match": {},
        "recorded": recorded,
    }


def upgrade_software(software: Any) -> Any:
    """Version 1 software facts as version 2: nothing to match, everything recorded."""
    if not isinstance(software, Mapping) or "match" in software:
        return software
    return {"match": {}, "recorded": dict(software)}


def upgrade_v1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A version 1 document in version 2 form (device and software without fingerprint, no calibration unless the
    document carries one)."""
    out = dict(doc)
    out["version"] = FORMAT_VERSION
    if "device" in out:
        out["device"] = upgrade_device(out["device"])
    if "software" in out:
        out["software"] = upgrade_software(out["software"])
    out.setdefault("calibration", None)
    return out


# ---- error messages ---------------------------------------------------------------------------------------------
_EXPECTED = {
    "int_type": "int",
    "string_type": "str",
    "bool_type": "bool",
    "float_type": "float",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def field_path(loc: Sequence[int | str]) -> str:
    """("parts", "mlp", "axes", 0) -> "parts.mlp.axes[0]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "table"


def describe_error(error: ErrorDetails) -> str:
    """One pydantic error as a sentence that starts with the field it is about."""
    kind, where, ctx, value = error["type"], field_path(error["loc"]), error.get("ctx") or {}, error.get("input")
    if kind == "value_error" and isinstance(ctx.get("error"), TableFormatError):
        return str(ctx["error"])
    if kind == "missing":
        return f"{where} is missing"
    if kind == "extra_forbidden":
        return f"{where} is not a known field"
    if kind in _EXPECTED:
        return f"{where} must be {_EXPECTED[kind]}, got {type(value).__name__}"
    if kind == "finite_number":
        return f"{where} must be a finite number, got {value!r}"
    for bound, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"{where} must be {sign} {ctx[bound]}, got {value!r}"
    if kind == "literal_error":
        return f"{where} must be {ctx.get('expected')}, got {value!r}"
    return f"{where}: {error['msg']}"


# ---- the document -----------------------------------------------------------------------------------------------
class LatencyTableDocument(BaseModel):
    """A latency table (tables/README.md): workload, device fingerprint, software, protocol, grid, parts, and how
    they were measured, validated and calibrated. Version 1 documents are accepted and upgraded to version 2."""

    model_config = ConfigDict(strict=True, extra="forbid", title="LatencyTable")
    format: Literal["vitlut.latency-table"]
    version: Literal[2] = Field(description="2; version 1 documents are accepted and upgraded")
    complete: bool = Field(description="false while a sweep is running, was killed, or for a shard")
    created: str | None = Field(default=None, description="UTC time the sweep started (ISO 8601)")
    workload: Workload
    model: VitModel | None = None
    device: Device
    software: Software
    protocol: JsonObject = Field(description="the timing protocol the numbers were taken with")
    grid: dict[str, list[int]] = Field(description="axis values (emb, heads, qk, v, mlp), each strictly increasing")
    parts: dict[str, Part] = Field(
        description="block parts from one split (attn_qk, attn_v, mlp; or attn, mlp; or block), and stem, head where "
        "measured"
    )
    sweep: Sweep | None = None
    validation: Validation | None = None
    calibration: Calibration | None = None
    interpolation: Interpolation | None = Field(
        default=None, description="axes read as a staircase between grid values; absent: multilinear everywhere"
    )
    levels: Annotated[list[LevelSession], Field(max_length=MAX_LEVEL_SESSIONS)] | None = Field(
        default=None,
        description="the machine's speed at every later session that re-timed the table's reference (validations, "
        "recorded checks): where a shared machine's typical speed and its wander over hours are read from",
    )

    @model_serializer(mode="wrap")
    def _without_empty_history(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`levels` and `interpolation` are written only when there are some: a table without them stays readable by
        earlier readers (which refuse them, since they would answer otherwise)."""
        data = handler(self)
        if not data.get("levels"):
            data.pop("levels", None)
        if data.get("interpolation") is None:
            data.pop("interpolation", None)
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _one_error(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> LatencyTableDocument:
        """Check the header, upgrade version 1, and report the first problem as one TableFormatError."""
        if isinstance(data, Mapping):
            data = _upgraded(data)
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            raise TableFormatError(describe_error(errors[0]) if errors else "invalid table") from None

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, grid: Any) -> dict[str, list[int]]:
        return validate_grid(grid)

    @field_validator("parts", mode="before")
    @classmethod
    def _part_names(cls, parts: Any) -> Any:
        if not isinstance(parts, Mapping):
            return parts
        for name, part in parts.items():
            if name not in PART_AXES:
                raise TableFormatError(f"parts.{name} is not a known part; parts are {list(PART_AXES)}")
            if not isinstance(part, Mapping):
                raise TableFormatError(f"parts.{name} must be an object")
        if not any(name in BLOCK_PARTS for name in parts):
            raise TableFormatError(f"parts must include block parts (any of {list(BLOCK_PARTS)})")
        block_parts = set(parts) & set(BLOCK_PARTS)
        if not any(block_parts <= set(split) for split in BLOCK_SPLITS.values()):
            splits = "; ".join(f"{name}: {list(split)}" for name, split in BLOCK_SPLITS.items())
            raise TableFormatError(
                f"parts {sorted(block_parts)} mix two ways of splitting a block; the block parts of a table come from "
                f"one split ({splits})"
            )
        return parts

    @model_validator(mode="after")
    def _parts_fit_the_grid(self) -> LatencyTableDocument:
        cells = 0
        for name, part in self.parts.items():
            where = f"parts.{name}"
            if tuple(part.axes) != PART_AXES[name]:
                raise TableFormatError(f"{where}.axes must be {list(PART_AXES[name])}, got {part.axes}")
            missing_axes = [a for a in part.axes if a not in self.grid]
            if missing_axes:
                raise TableFormatError(f"{where} uses axes {missing_axes} that the grid does not define")
            shape = tuple(len(self.grid[a]) for a in part.axes)
            cells += math.prod(shape)
            if cells > MAX_TABLE_CELLS:
                raise TableFormatError(f"parts hold more than {MAX_TABLE_CELLS} cells")
            check_part_values(part.median_ms, shape, f"{where}.median_ms", not self.complete)
            for key in ("p10_ms", "p90_ms"):
                values = getattr(part, key)
                if values is not None:
                    check_part_values(values, shape, f"{where}.{key}", True)
        if self.calibration is not None:
            for name in self.calibration.factors:
                if name not in self.parts:
                    raise TableFormatError(f"calibration.factors.{name}: the table has no part {name!r}")
        if self.interpolation is not None:
            used = {axis for name in self.parts for axis in PART_AXES[name]}
            for axis in self.interpolation.steps:
                if axis not in used:
                    raise TableFormatError(f"interpolation.steps: no part of the table has the axis {axis!r}")
                if len(self.grid[axis]) < 2:
                    raise TableFormatError(
                        f"interpolation.steps: the grid has one {axis} value, nothing to step between"
                    )
        return self


def _upgraded(data: Mapping[str, Any]) -> Mapping[str, Any]:
    if data.get("format") != FORMAT_NAME:
        raise TableFormatError(f"format must be {FORMAT_NAME!r}, got {data.get('format')!r}")
    version = data.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise TableFormatError(f"version {version!r} is not supported; this build reads versions {readable}")
    return upgrade_v1(data) if version == 1 else data


def has_fingerprint(doc: Mapping[str, Any]) -> bool:
    """Whether the table says which machine it describes (a version 1 table never does)."""
    device = doc.get("device")
    return isinstance(device, Mapping) and bool(device.get("match"))
