"""`python -m profiler profile --from TABLE --budget N`: a table for this machine from another machine's table.

A full sweep times every grid combination in two passes (several hundred pipeline runs). Moving a table to a new
CPU or GPU mostly changes how fast each part runs, smoothly across sizes, so the source table's cells keep the
shape and N measurements here give the ratio new/old of every part (`transfer_fit`): every cell of the new table is
the source cell times the fitted ratio at that cell.

The measurements go where the table will be asked: pairs of blocks of one EMB drawn on the pruning lattice, the
distribution `validate` judges a table on, each timed once as the sweep times a run (stem, two blocks, head) so one
run gives attention, MLP, stem and head ratios at once. One measurement in ten is a whole random model, which
calibrates the new table the way validations calibrate a swept one. The table's reference pair is re-timed every
few runs and every measurement is divided by the machine's level around it, so a VM that speeds up or slows down
during the transfer does not bend the fitted ratios. Those re-times also give the reference pair's own cells,
measured rather than fitted: every level `check` and `validate` take is measured over them.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lut_server.atomic_file import require_writable
from lut_server.calibration import MIN_ROWS, CalibrationRow, fit_calibration
from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import PART_AXES, incomplete_reason, read_table, write_table
from lut_server.table_identity import content_hash
from profiler.backends import BackendUnavailable, create_backend
from profiler.environment import utc_now
from profiler.grids import GridSpec
from profiler.machine_level import LevelledMeasurements, measure_tracking_level, predicted_pair_ms
from profiler.sweep import LAYOUT, new_table, plan_combos, reference_dims
from profiler.timing import Protocol, Runner
from profiler.transfer_fit import RatioPoint, apply_ratio, fit_ratio
from profiler.validate import lattice_values, random_blocks, random_models, workload_for_table
from profiler.workload import BLOCK_STAGES, build_model, build_pipeline

TRANSFER_LAYOUT = f"{LAYOUT}+transfer"
DEFAULT_BUDGET = 100
MODEL_EVERY = 10
"""One measurement in this many is a whole model (used only when that gives enough models to calibrate on)."""
MODEL_DEPTH = 12


def grid_spec(doc: Mapping[str, Any]) -> GridSpec:
    """The grid and parts a table holds (a transfer's source need not record a sweep)."""
    return GridSpec({a: list(v) for a, v in doc["grid"].items()}, tuple(doc["parts"]))


def full_sweep_runs(doc: Mapping[str, Any]) -> int:
    """About how many pipeline runs a full sweep of the table's grid times: two grid combinations per run, in every
    pass of its protocol."""
    spec = grid_spec(doc)
    passes = max(1, int(doc["protocol"].get("passes", 1)))
    return passes * -(-len(plan_combos(spec)) // 2)


def default_budget(doc: Mapping[str, Any]) -> int:
    """`DEFAULT_BUDGET` runs, or a full sweep's on a grid so small that it times fewer."""
    return min(DEFAULT_BUDGET, full_sweep_runs(doc))


@dataclasses.dataclass(frozen=True)
class TransferPlan:
    runs: list[tuple[BlockDims, BlockDims]]
    models: list[ModelDims]


def plan_transfer(source: LatencyTable, budget: int, rng: random.Random) -> TransferPlan:
    """`budget` measurements: runs of two lattice blocks of one EMB, and whole models when they can calibrate."""
    with_model = bool({"stem", "head"} & set(source.data["parts"]))
    if budget < (2 if with_model else 1):  # a run times two blocks but one stem and head; a fit needs two points
        raise ValueError(f"--budget must be >= {2 if with_model else 1} for this table, got {budget}")
    n_models = budget // MODEL_EVERY if with_model and budget // MODEL_EVERY >= MIN_ROWS else 0
    embs = lattice_values(source, "emb")
    runs = []
    for _ in range(budget - n_models):
        first, second = random_blocks(source, 2, rng, emb=rng.choice(embs), off_grid=False)
        runs.append((first, second))
    return TransferPlan(runs, random_models(source, n_models, MODEL_DEPTH, rng))


def _ratio_points(
    source: LatencyTable, runs: list[tuple[BlockDims, BlockDims]], stages: list[np.ndarray], with_model: bool
) -> dict[str, list[RatioPoint]]:
    """measured stage / source prediction, per part, at the part's own axis values."""
    points: dict[str, list[RatioPoint]] = {part: [] for part in source.data["parts"]}
    offset = 1 if with_model else 0
    for (a, b), measured in zip(runs, stages, strict=True):
        for j, dims in enumerate((a, b)):
            d = dims.as_dict()
            for s, part in enumerate(BLOCK_STAGES):
                predicted = float(source.part_latency(part, [dims])[0])
                points[part].append(
                    ([d[axis] for axis in PART_AXES[part]], float(measured[offset + 3 * j + s]) / predicted)
                )
        for part, position in (("stem", 0), ("head", len(measured) - 1)):
            if part in points:
                predicted = float(source.part_latency(part, [a])[0])
                points[part].append(([a.emb], float(measured[position]) / predicted))
    return points


def measured_reference_cells(
    levelled: LevelledMeasurements, reference_ms: float, parts: list[str], with_model: bool
) -> dict[str, float]:
    """Each part at the reference dims as the reference's re-times measured it, at the transfer's median level: every
    re-time's stages scaled so their pipeline takes `reference_ms`, then the median over re-times (a block part: the
    mean of the pair's two blocks)."""
    offset = 1 if with_model else 0
    scaled = np.array(
        [np.asarray(st) * reference_ms / s["median_ms"] for st, s in zip(levelled.reference_stages, levelled.series,
                                                                         strict=True)]
    )  # fmt: skip
    cells = {}
    for k, part in enumerate(BLOCK_STAGES):
        cells[part] = float(np.median((scaled[:, offset + k] + scaled[:, offset + 3 + k]) / 2))
    if with_model:
        for part, column in (("stem", 0), ("head", scaled.shape[1] - 1)):
            if part in parts:
                cells[part] = float(np.median(scaled[:, column]))
    return cells


def set_reference_cells(doc: dict[str, Any], reference: BlockDims, cells: Mapping[str, float]) -> dict[str, Any]:
    """Put the measured reference cells into the new table (its spread scaled with its median); return, per part,
    the fitted value each replaced and the measured one."""
    replaced = {}
    dims = reference.as_dict()
    for part, value in cells.items():
        entry = doc["parts"][part]
        index = tuple(doc["grid"][axis].index(dims[axis]) for axis in entry["axes"])
        fitted = float(np.asarray(entry["median_ms"], dtype=float)[index])
        for key in ("median_ms", "p10_ms", "p90_ms"):
            if entry.get(key) is not None:
                values = np.array(entry[key], dtype=float)
                values[index] = round(float(values[index]) * value / fitted, 6)
                entry[key] = values.tolist()
        replaced[part] = {"fitted_ms": round(fitted, 6), "measured_ms": round(value, 6)}
    return replaced


def _calibration(doc: dict[str, Any], models: list[ModelDims], measured_ms: list[float]) -> dict[str, Any] | None:
    """The whole-model correction of the new table, fitted on the transfer's models (as `profiler calibrate` fits
    a swept table on its validations' models); later validations add their models to these."""
    if len(models) < MIN_ROWS:
        return None
    raw = LatencyTable(doc, calibrated=False)
    rows = [CalibrationRow(raw.raw_part_sums(m), m.depth, ms) for m, ms in zip(models, measured_ms, strict=True)]
    calibration = fit_calibration(rows)
    calibration["fitted"] = {
        "created": utc_now(),
        "models": len(models),
        "validations": [],
        "points": [
            {"dims": m.as_dict(), "measured_ms": round(ms, 4)} for m, ms in zip(models, measured_ms, strict=True)
        ],
    }
    return calibration


def transfer_table(
    source_path: str | Path,
    out: str | Path,
    budget: int | None,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure `budget` configurations here (None: `default_budget`), fit the per-part ratios, write the new table
    (atomically), return it."""
    source_path, out = Path(source_path), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first")
    require_writable(out)  # before minutes of timing
    source_doc = read_table(source_path)
    if not source_doc["complete"]:
        raise ValueError(f"{incomplete_reason(source_path.name)}; a transfer needs a complete source table")
    missing = [p for p in BLOCK_STAGES if p not in source_doc["parts"]]
    if missing:
        raise ValueError(
            f"{source_path.name} lacks the parts {missing}; a transfer corrects attn_qk, attn_v and mlp (a table "
            "split as attn | mlp is profiled, not transferred)"
        )
    source = LatencyTable(source_doc, source_path.stem, calibrated=False)
    spec = grid_spec(source_doc)
    sweep_runs = full_sweep_runs(source_doc)
    if budget is None:
        budget = default_budget(source_doc)
    elif budget > sweep_runs:
        raise ValueError(
            f"--budget {budget} is more runs than a full sweep of this grid times (about {sweep_runs}: two grid "
            "combinations per run, every pass); profile the table here instead: a sweep measures every cell"
        )
    w = source_doc["workload"]
    try:
        backend = create_backend(
            w["backend"], w["precision"], w.get("threads"), **{**(w.get("options") or {}), **(options or {})}
        )
    except BackendUnavailable as exc:
        raise BackendUnavailable(
            f"{source_path.name} is a {w['backend']} table, and `profile --from` times that backend here: {exc}"
        ) from None
    workload = workload_for_table(source_doc)
    # One pass per configuration: the fit averages over runs, and a second run says more than a second pass.
    protocol = dataclasses.replace(Protocol.from_dict(source_doc["protocol"]), passes=1)
    with_model = bool({"stem", "head"} & set(spec.parts))
    rng = random.Random(seed)
    plan = plan_transfer(source, budget, rng)
    reference = reference_dims(spec)

    def pipeline(blocks: list[BlockDims]) -> Callable[[], Runner]:
        return lambda: backend.prepare_pipeline(*build_pipeline(blocks, workload, with_model)[1:])

    jobs = [pipeline([a, b]) for a, b in plan.runs] + [
        lambda m=m: backend.prepare(*build_model(m, workload)) for m in plan.models
    ]
    started = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"transfer {out.name}", unit="run", disable=not progress, file=sys.stderr)
    try:
        levelled = measure_tracking_level(
            jobs, pipeline([reference, reference]), 1.0, protocol, rng, lambda: bar.update(1)
        )
    finally:
        bar.close()
    reference_ms = float(np.median([s["median_ms"] for s in levelled.series]))
    # Each measurement at the median level of the transfer: the level the new table describes.
    stages = [s * reference_ms for s in levelled.normalised_stages()[: len(plan.runs)]]
    model_ms = [v * reference_ms for v in levelled.normalised()[len(plan.runs) :]]
    doc = new_table(backend, workload, spec, Protocol.from_dict(source_doc["protocol"]), None, seed=seed)
    doc["parts"] = {name: dict(entry) for name, entry in source_doc["parts"].items()}
    if source.steps:  # the ratios are fitted against the source as it reads: the new cells are read the same way
        steps = list(source_doc["interpolation"]["steps"])
        doc["interpolation"] = {"steps": steps, "chosen": {"derived_from": source_path.stem}}
    fits = {}
    for part, points in _ratio_points(source, plan.runs, stages, with_model).items():
        fits[part] = fit_ratio(spec.grid, part, points)
        apply_ratio(doc, part, fits[part]["coef"])
    fitted_reference = predicted_pair_ms(doc, reference)
    # The reference pair, re-timed every few runs, is the configuration measured most: its cells are measured, not
    # fitted. A source table's local error there would otherwise bias every level `check` and `validate` take.
    cells = measured_reference_cells(levelled, reference_ms, list(spec.parts), with_model)
    reference_cells = set_reference_cells(doc, reference, cells)
    predicted_reference = predicted_pair_ms(doc, reference)
    reference_series = [s["median_ms"] for s in levelled.series]
    doc["sweep"].update(
        {
            "layout": TRANSFER_LAYOUT,
            "measurements": levelled.count,
            "units_done": 2 * len(plan.runs),  # blocks timed, as a sweep counts them
            "units_planned": 2 * len(plan.runs),
            "wall_s": round(time.perf_counter() - started, 2),
            "reference": {
                "dims": reference.as_dict(),
                "series": [{"order": s["order"], "median_ms": round(s["median_ms"], 5)} for s in levelled.series],
                "drift_pct": round(100 * (max(reference_series) - min(reference_series)) / reference_ms, 3),
            },
            "derived_from": {
                "table_id": source_path.stem,
                "content_hash": content_hash(source_doc),
                "device": source_doc["device"].get("name"),
                "created": source_doc.get("created"),
                "budget": budget,
                "runs": len(plan.runs),
                "models": len(plan.models),
                "method": "per-part ratio, quadratic in log widths with the ridge chosen by leave-one-out; "
                "runs drawn on the pruning lattice; measurements level-normalised by the reference pair",
                "fits": fits,
                # The new table's own prediction of the reference pair against the pair timed: a table that
                # contradicts its reference would mislead `check` and level-normalised validation.
                "reference_error_pct": round(100 * (predicted_reference - reference_ms) / reference_ms, 3),
                "reference_error_fitted_pct": round(100 * (fitted_reference - reference_ms) / reference_ms, 3),
                "reference_cells": reference_cells,
            },
            "records": [
                {"dims": [a.as_dict(), b.as_dict()], "stage_median_ms": [round(float(v), 6) for v in s]}
                for (a, b), s in zip(plan.runs, stages, strict=True)
            ],
        }
    )
    doc["complete"] = True
    calibration = _calibration(doc, plan.models, model_ms)
    if calibration is not None:
        doc["calibration"] = calibration
    write_table(out, doc)
    return doc
