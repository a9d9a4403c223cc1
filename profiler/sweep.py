"""A resumable sweep: stacks of two blocks timed stage by stage, every finished measurement persisted atomically.

One measurement runs two blocks of one EMB (between the stem and the head when the table has them) and times each
block's stages inside the running pipeline, so each block fills a cell of `attn_qk` (emb, heads, qk), a cell of
`attn_v` (emb, heads, v) — the qk and v grids are the same list, measured with qk = v — a sample of `mlp` (emb, mlp)
and samples of `stem`/`head` (emb). The mlp width of each grid run (combo) cycles through the mlp grid, so each mlp
cell is the median of several runs with different attention around it. Parts timed in isolation keep their weights
hot in cache and come out faster than the same block timed whole (a median 9% on a CPU, docs/measurement.md);
timed inside the running block they add up to it. Two blocks per pipeline, each a different combo in shuffled
pairs, time every block next to another one, as in a model: with one block per pipeline, whole 4-block models on
the demo workload run a median 4-5% slower than such a table predicts. Pairs also halve the number of runs.

Every combo is measured in `passes` shuffled passes (so a burst of load on a shared machine hits one pass, not a
neighbourhood of the grid, and each pass pairs it with another partner); a combo whose passes disagree by more
than `max_pass_gap`, or whose IQR/median was wider than `max_rel_iqr`, is measured once more and the median of its
passes kept. The reference pair is re-timed periodically; cells are derived from the records divided by the
machine's level when each was measured (`record_levels`), so drift during the sweep does not dent the grid.

Runtimes that fuse attention (TensorRT, ONNX Runtime's CUDA provider: `Backend.block_stages`) time each block as
attn | mlp instead: a run fills a cell of `attn` (emb, heads, qk, v), qk and v each run over their own grid (so the
qk = v grid takes len(v) times the runs), and the layout is FUSED_LAYOUT.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from tqdm import tqdm

from lut_server.dims import BlockDims
from lut_server.table_compat import compatibility_mismatches
from lut_server.table_format import PART_AXES, new_table_document, read_table, write_table
from profiler.backends import Backend
from profiler.environment import utc_now
from profiler.grids import GridSpec
from profiler.machine_level import running_median_of_three
from profiler.timing import Measurement, Protocol, combine_passes, measure, passes_disagree
from profiler.workload import FUSED_ATTENTION, SCORES_VALUES, Workload, block_stages_of, build_pipeline

Combo = tuple[int, ...]
"""One block of a pipeline run: indices into the emb, heads and qk (= v) grids (scores-values split), or into the
emb, heads, qk and v grids (fused-attention split: the attn part has both axes)."""
Unit = tuple[int, Combo]
"""(pass, combo): one record of the table."""

LAYOUT = "in-context-pairs/v2"
"""v1 (`in-context-parts/v1`) timed one block per pipeline; its records have the same shape and still derive."""
FUSED_LAYOUT = "in-context-pairs-fused-attention/v1"
"""Pairs as v2, each block timed as attn | mlp, its combo indexing the qk and v grids separately."""


def layout_of(spec: GridSpec) -> str:
    return FUSED_LAYOUT if block_stages_of(spec.parts) == FUSED_ATTENTION else LAYOUT


def combo_axes(spec: GridSpec) -> tuple[str, ...]:
    """The grid axes a combo indexes (mlp cycles through its grid across combos)."""
    if block_stages_of(spec.parts) == FUSED_ATTENTION:
        return ("emb", "heads", "qk", "v")
    return ("emb", "heads", "qk")


@dataclass(frozen=True)
class PipelineRun:
    """One timed pipeline in pass `pass_index`: the blocks of `combos`, stacked (one EMB), each recorded; plus a
    `companion` block timed only as context when a combo had no partner left."""

    pass_index: int
    combos: tuple[Combo, ...]
    companion: Combo | None = None

    def stack(self) -> tuple[Combo, ...]:
        return self.combos + ((self.companion,) if self.companion is not None else ())


def pair_units(units: list[Unit], pool: list[Combo]) -> list[PipelineRun]:
    """Pair units of one pass and EMB in their (shuffled) order; a unit left alone gets a context-only companion
    of its EMB from `pool` (none when its EMB has a single combo)."""
    waiting: dict[tuple[int, int], Combo] = {}
    runs: list[PipelineRun] = []
    for p, combo in units:
        partner = waiting.pop((p, combo[0]), None)
        if partner is None:
            waiting[(p, combo[0])] = combo
        else:
            runs.append(PipelineRun(p, (partner, combo)))
    for (p, ie), combo in waiting.items():
        companion = next((c for c in pool if c[0] == ie and c != combo), None)
        runs.append(PipelineRun(p, (combo,), companion))
    return sorted(runs, key=lambda run: run.pass_index)  # stable: pass by pass, shuffled order within


class SweepMismatch(ValueError):
    """A partial table whose settings differ from the requested sweep; mixing them would corrupt the table."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like i/n (e.g. 0/3), got {text!r}") from None
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"--shard {text}: need 0 <= i < n")
        return cls(i, n)

    def as_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def check_layout(spec: GridSpec) -> None:
    """A sweep measures one block split's parts in the same runs. Split scores-values, attn_qk and attn_v cells
    come from the same runs, so their grids must agree; split fused-attention has qk and v as axes of one part."""
    stages = block_stages_of(spec.parts) if "block" not in spec.parts else ()
    block_parts = [p for p in spec.parts if p not in ("stem", "head")]
    if not stages or sorted(block_parts) != sorted(stages):
        raise ValueError(
            f"a sweep measures the parts {list(SCORES_VALUES)} or {list(FUSED_ATTENTION)} (+ stem, head); grid parts "
            f"are {list(spec.parts)}"
        )
    if stages == SCORES_VALUES and spec.grid["qk"] != spec.grid["v"]:
        raise ValueError(f"grid qk {spec.grid['qk']} and v {spec.grid['v']} must be the same list (timed as qk = v)")
    if math.prod(len(spec.grid[a]) for a in combo_axes(spec)[1:]) < len(spec.grid["mlp"]):
        raise ValueError("each emb needs at least as many runs as there are mlp grid values")


def plan_combos(spec: GridSpec) -> list[Combo]:
    """Every pipeline run of the grid, in a fixed order (shards slice this order)."""
    return list(itertools.product(*(range(len(spec.grid[a])) for a in combo_axes(spec))))


def mlp_index(spec: GridSpec, combo: Combo) -> int:
    """The mlp grid value a run uses: cycles through the grid so every (emb, mlp) cell gets runs (the combo's
    position among its emb's runs, offset by the emb index)."""
    position = 0
    for axis, index in zip(combo_axes(spec)[1:], combo[1:], strict=True):
        position = position * len(spec.grid[axis]) + index
    return (position + combo[0]) % len(spec.grid["mlp"])


def combo_dims(spec: GridSpec, combo: Combo) -> BlockDims:
    g = spec.grid
    ie, ih, iq = combo[:3]
    iv = combo[3] if len(combo) == 4 else iq  # scores-values: timed with qk = v
    return BlockDims(g["emb"][ie], g["heads"][ih], g["qk"][iq], g["v"][iv], g["mlp"][mlp_index(spec, combo)])


def reference_dims(spec: GridSpec) -> BlockDims:
    """A mid-grid block, re-timed through the sweep to record drift."""
    return BlockDims(**{axis: values[len(values) // 2] for axis, values in spec.grid.items()})


def workload_settings(backend: Backend, workload: Workload) -> dict[str, Any]:
    return {**backend.settings(), "batch": workload.batch, "tokens": workload.tokens}


def new_table(
    backend: Backend, workload: Workload, spec: GridSpec, protocol: Protocol, shard: Shard | None, seed: int
) -> dict:
    env = backend.environment()
    with_model = bool({"stem", "head"} & set(spec.parts))
    sweep = {
        "layout": layout_of(spec),
        "measurements": 0,
        "units_done": 0,
        "units_planned": len(plan_combos(spec)) * protocol.passes,
        "wall_s": 0.0,
        "shard": shard.as_dict() if shard else None,
        "seed": seed,
        "reference": {"dims": reference_dims(spec).as_dict(), "series": []},
        "parts": list(spec.parts),
        "flagged": [],
        "records": [],
    }
    skeleton = {"grid": spec.grid, "sweep": sweep}
    derive_parts(skeleton)
    return new_table_document(
        workload=workload_settings(backend, workload),
        model=workload.model.as_dict() if workload.model and with_model else None,
        device=env["device"],
        software=env["software"],
        protocol={**protocol.as_dict(), "stage_timing": backend.stage_timing},
        grid=spec.grid,
        parts=skeleton["parts"],
        sweep=sweep,
        created=utc_now(),
    )


def check_resumable(doc: dict, fresh: dict) -> None:
    """Refuse to continue a partial table measured with other settings, on another device or grid."""
    mismatches = compatibility_mismatches(doc, fresh, labels=("the partial table", "this sweep"))
    old_shard, new_shard = (doc.get("sweep") or {}).get("shard"), fresh["sweep"]["shard"]
    if old_shard != new_shard:
        mismatches.append(f"sweep.shard: the partial table {old_shard!r}, this sweep {new_shard!r}")
    if mismatches:
        raise SweepMismatch("cannot resume: the settings differ in " + "; ".join(mismatches))


def _combo_value(records: list[dict], key: str, stage: str) -> float:
    return combine_passes([r[key][stage] for r in records])


def _grouped(doc: dict) -> dict[Combo, list[dict]]:
    groups: dict[Combo, list[dict]] = {}
    for record in doc["sweep"]["records"]:
        groups.setdefault(tuple(record["combo"]), []).append(record)
    return groups


def record_levels(doc: dict) -> list[float] | None:
    """The machine's speed level at each record, relative to the sweep's median level, or None where it cannot be
    told (fewer than three re-times of the reference, or records that do not say when they were measured, as in
    merged shards).

    The reference pair is re-timed every `reference_every` blocks; a shared VM drifts by tens of percent over a
    sweep of several minutes, so cells measured in a slow minute would otherwise be slow against the rest. The
    level at a record is the running median of three consecutive re-times, interpolated at the record's position.
    """
    series = [p for p in doc["sweep"]["reference"].get("series") or [] if "units_done" in p]
    records = doc["sweep"]["records"]
    if len(series) < 3 or not records or any("unit" not in r for r in records):
        return None
    at = np.array([p["units_done"] for p in series], dtype=float)
    ms = np.array([p["median_ms"] for p in series], dtype=float)
    smooth = running_median_of_three(ms)
    level = np.interp([r["unit"] for r in records], at, smooth) / float(np.median(ms))
    return level.tolist()


def derive_parts(doc: dict) -> None:
    """Rebuild the part arrays from the raw records (null where nothing was measured yet), each record divided by
    the machine's level when it was measured (`record_levels`); the records themselves stay raw."""
    out = doc
    levels = record_levels(doc)
    if levels is not None:
        doc = {**doc, "sweep": {**doc["sweep"], "records": [
            {**r, **{key: {n: v / lv for n, v in r[key].items()} for key in ("median_ms", "p10_ms", "p90_ms")}}
            for r, lv in zip(doc["sweep"]["records"], levels, strict=True)
        ]}}  # fmt: skip
    spec = spec_of(doc)
    g = spec.grid
    shapes = {p: [len(g[a]) for a in PART_AXES[p]] for p in spec.parts}
    stats = {p: {k: np.full(shapes[p], np.nan) for k in ("median_ms", "p10_ms", "p90_ms")} for p in spec.parts}
    samples = {p: np.zeros(shapes[p], dtype=int) for p in spec.parts}
    pooled: dict[tuple[str, tuple[int, ...]], dict[str, list[float]]] = {}
    for combo, records in _grouped(doc).items():
        ie, ih, iq = combo[:3]
        cells = {"attn_qk": (ie, ih, iq), "attn_v": (ie, ih, iq), "attn": combo, "mlp": (ie, mlp_index(spec, combo)),
                 "stem": (ie,), "head": (ie,)}  # fmt: skip
        for part in spec.parts:
            entry = pooled.setdefault((part, cells[part]), {"median_ms": [], "p10_ms": [], "p90_ms": []})
            for key in entry:
                entry[key].append(_combo_value(records, key, part))
            samples[part][cells[part]] += sum(r["samples"] for r in records)
    for (part, cell), entry in pooled.items():
        for key, values in entry.items():
            stats[part][key][cell] = float(median(values))
    out["sweep"]["level_normalised"] = levels is not None
    out["parts"] = {
        part: {
            "axes": list(PART_AXES[part]),
            **{key: _json_array(stats[part][key]) for key in ("median_ms", "p10_ms", "p90_ms")},
            "samples": samples[part].tolist(),
        }
        for part in spec.parts
    }


def spec_of(doc: dict) -> GridSpec:
    return GridSpec({a: list(v) for a, v in doc["grid"].items()}, tuple(doc["sweep"]["parts"]))


def _json_array(values: np.ndarray) -> list:
    out = values.astype(object)
    out[np.isnan(values)] = None
    return out.tolist()


class Sweep:
    """Measure the runs a table (or a shard of it) still lacks; persist after each one."""

    def __init__(
        self,
        out: Path,
        backend: Backend,
        workload: Workload,
        spec: GridSpec,
        protocol: Protocol,
        resume: bool = False,
        shard: Shard | None = None,
        seed: int = 0,
    ):
        check_layout(spec)
        self.block_stages = block_stages_of(spec.parts)
        self.out = Path(out)
        self.backend, self.workload, self.spec, self.protocol = backend, workload, spec, protocol
        self.shard = shard
        self.with_model = bool({"stem", "head"} & set(spec.parts))
        fresh = new_table(backend, workload, spec, protocol, shard, seed)
        if self.out.exists():
            if not resume:
                raise FileExistsError(f"{self.out} exists; pass --resume to continue it or remove it first")
            self.doc = read_table(self.out)
            check_resumable(self.doc, fresh)
        else:
            self.doc = fresh

    def my_combos(self) -> list[Combo]:
        combos = plan_combos(self.spec)
        return combos[self.shard.index :: self.shard.count] if self.shard else combos

    def _done(self) -> set[Unit]:
        return {(r["pass"], tuple(r["combo"])) for r in self.doc["sweep"]["records"]}

    def todo(self) -> list[Unit]:
        """Units not measured yet: pass by pass, each pass in its own shuffled order."""
        done = self._done()
        seed = self.doc["sweep"]["seed"]
        units: list[Unit] = []
        for p in range(self.protocol.passes):
            remaining = [(p, c) for c in self.my_combos() if (p, c) not in done]
            random.Random(seed * 1000 + p).shuffle(remaining)
            units.extend(remaining)
        return units

    def extra_units(self) -> list[Unit]:
        """A further pass for combos whose passes disagree by more than the protocol allows, or whose spread was wide
        (re-measured later rather than at once: on a shared machine a burst of load outlasts an immediate retry).
        A one-pass protocol has none: its wide runs stay flagged (`sweep.flagged`)."""
        extra: list[Unit] = []
        groups = _grouped(self.doc)
        for combo in self.my_combos():
            records = groups.get(combo, [])
            if len(records) != self.protocol.passes or self.protocol.passes < 2:
                continue
            wide = any(r["rel_iqr"] > self.protocol.max_rel_iqr for r in records)
            if wide or passes_disagree([r["total_ms"] for r in records], self.protocol.max_pass_gap):
                extra.append((self.protocol.passes, combo))
        return extra

    def _persist(self) -> None:
        derive_parts(self.doc)
        finished = not self.todo() and not self.extra_units()
        self.doc["complete"] = self.shard is None and finished
        write_table(self.out, self.doc)

    def _measure(self, stack: list[BlockDims]) -> tuple[list[str], Measurement]:
        names, stages, inputs = build_pipeline(stack, self.workload, self.with_model, block_stages=self.block_stages)
        m = measure(self.backend.prepare_pipeline(stages, inputs), self.protocol)
        return names, m

    def _time_reference(self, clock_start: float, elapsed_before: float) -> None:
        """Two blocks of the reference dims (as a sweep run times them); the series holds their stage total."""
        reference = BlockDims(**self.doc["sweep"]["reference"]["dims"])
        _, m = self._measure([reference, reference])
        sweep = self.doc["sweep"]
        sweep["measurements"] += m.attempts
        sweep["reference"]["series"].append(
            {
                "at_s": round(elapsed_before + time.perf_counter() - clock_start, 2),
                "median_ms": m.median_ms,
                "units_done": sweep["units_done"],
            }
        )
        medians = [p["median_ms"] for p in sweep["reference"]["series"]]
        sweep["reference"]["drift_pct"] = round(100 * (max(medians) - min(medians)) / medians[0], 3)

    def _records(self, run: PipelineRun, names: list[str], m: Measurement, first_unit: int) -> list[dict]:
        """One record per recorded block: its own stages, and the run's stem and head; `unit` is the block's
        position in the sweep's order, which places it between two re-times of the reference."""
        offset = 1 if self.with_model else 0
        shared = [i for i, name in enumerate(names) if name in ("stem", "head")]
        columns = {"median_ms": m.stage_median_ms, "p10_ms": m.stage_p10_ms, "p90_ms": m.stage_p90_ms}
        records = []
        n = len(self.block_stages)
        for k, combo in enumerate(run.combos):
            mine = shared + [offset + n * k + j for j in range(n)]
            stats = {key: {names[i]: values[i] for i in mine} for key, values in columns.items()}
            others = [c for c in run.stack() if c != combo]
            records.append({
                "combo": list(combo), "pass": run.pass_index, "unit": first_unit + k,
                "dims": combo_dims(self.spec, combo).as_dict(),
                "with": [list(c) for c in others], "total_ms": sum(stats["median_ms"].values()), **stats,
                "rel_iqr": round(m.rel_iqr, 4), "samples": m.samples, "attempts": m.attempts,
            })  # fmt: skip
        return records

    def _run_units(self, units: list[Unit], bar: tqdm, clock_start: float, elapsed_before: float) -> None:
        sweep = self.doc["sweep"]
        every = max(1, self.protocol.reference_every)
        for run in pair_units(units, self.my_combos()):
            names, m = self._measure([combo_dims(self.spec, c) for c in run.stack()])
            records = self._records(run, names, m, sweep["units_done"])
            sweep["records"].extend(records)
            sweep["measurements"] += m.attempts
            before = sweep["units_done"]
            sweep["units_done"] += len(records)
            if m.flagged:
                sweep["flagged"] += [{"pass": r["pass"], "dims": r["dims"], "rel_iqr": r["rel_iqr"]} for r in records]
            if sweep["units_done"] // every > before // every:
                self._time_reference(clock_start, elapsed_before)
            sweep["wall_s"] = round(elapsed_before + time.perf_counter() - clock_start, 2)
            self._persist()
            bar.update(len(records))

    def run(self, progress: bool = True) -> dict:
        todo = self.todo()
        sweep = self.doc["sweep"]
        elapsed_before = float(sweep.get("wall_s", 0.0))
        clock_start = time.perf_counter()
        bar = tqdm(total=len(todo), desc=f"profile {self.out.name}", unit="block", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)  # fmt: skip
        try:
            if todo and not sweep["reference"]["series"]:
                self._time_reference(clock_start, elapsed_before)
            self._run_units(todo, bar, clock_start, elapsed_before)
            extra = self.extra_units()
            bar.total += len(extra)
            self._run_units(extra, bar, clock_start, elapsed_before)
        finally:
            bar.close()
        if todo:
            self._time_reference(clock_start, elapsed_before)
        self._persist()
        return self.doc


def grid_step_monotonicity(doc: dict) -> float | None:
    """Share of neighbouring grid steps that get faster as a width grows (noise indicator), in percent; None where
    the grid has no step (one value on every axis)."""
    backwards = total = 0
    for part in doc["parts"].values():
        values = np.array(part["median_ms"], dtype=float)
        for axis in range(values.ndim):
            diff = np.diff(values, axis=axis)
            ok = np.isfinite(diff)
            total += int(ok.sum())
            backwards += int((diff[ok] < 0).sum())
    return 100.0 * backwards / total if total else None
