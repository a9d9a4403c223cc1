"""`python -m profiler profile --from TABLE --budget N`: a table for this machine from another machine's table.

A full sweep times every grid combination in two passes (several hundred pipeline runs). Moving a table to a new
CPU or GPU mostly changes how fast each part runs at each size, smoothly: a new ISA speeds all GEMMs up, a bigger
cache flattens the curve at large widths. So the source table's cells keep the shape, and N runs here measure the
ratio new/old of every part, fitted per part as a quadratic in the log widths of the part's own axes (ridge-pulled
towards a constant ratio). Every cell of the new table is the source cell times the fitted ratio at that cell.

The N runs are chosen where they inform the fit most: greedy D-optimal design over the fit's features (each next
run is the candidate whose features the runs so far predict worst), two blocks of one EMB per run as the sweep
times them, so the same measurement gives the attention, MLP, stem and head ratios at once.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lut_server.dims import BlockDims
from lut_server.table_format import PART_AXES, part_median, read_table, write_table
from lut_server.table_identity import content_hash
from profiler.backends import create_backend
from profiler.grids import GridSpec
from profiler.sweep import LAYOUT, new_table, reference_dims
from profiler.timing import Protocol, measure
from profiler.validate import workload_for_table
from profiler.workload import BLOCK_STAGES, build_pipeline

Candidate = tuple[int, int, int, int]
"""Indices into the emb, heads, qk (= v) and mlp grids: one block."""

RIDGE = 1.0
"""Pull of the non-constant ratio terms towards zero, on features scaled to [-1, 1]."""
TRANSFER_LAYOUT = f"{LAYOUT}+transfer"


def _scaled_logs(grid: Mapping[str, list[int]], axes: Sequence[str], values: Sequence[float]) -> list[float]:
    out = []
    for axis, value in zip(axes, values, strict=True):
        lo, hi = math.log(grid[axis][0]), math.log(grid[axis][-1])
        out.append(0.0 if hi == lo else 2 * (math.log(value) - lo) / (hi - lo) - 1)
    return out


def ratio_features(grid: Mapping[str, list[int]], part: str, values: Sequence[float]) -> np.ndarray:
    """1, the scaled log widths of the part's axes, their squares and pairwise products."""
    x = _scaled_logs(grid, PART_AXES[part], values)
    squares = [v * v for v in x]
    products = [a * b for a, b in itertools.combinations(x, 2)]
    return np.array([1.0, *x, *squares, *products])


def _block_features(grid: Mapping[str, list[int]], dims: BlockDims) -> np.ndarray:
    return np.concatenate(
        [
            ratio_features(grid, "attn_qk", (dims.emb, dims.heads, dims.qk)),
            ratio_features(grid, "mlp", (dims.emb, dims.mlp))[1:],
        ]
    )


def _dims(grid: Mapping[str, list[int]], c: Candidate) -> BlockDims:
    ie, ih, iq, im = c
    return BlockDims(grid["emb"][ie], grid["heads"][ih], grid["qk"][iq], grid["v"][iq], grid["mlp"][im])


def choose_runs(grid: Mapping[str, list[int]], budget: int) -> list[tuple[BlockDims, BlockDims]]:
    """`budget` runs of two blocks of one EMB, chosen greedily to maximise the information of the ratio fit."""
    if budget < 1:
        raise ValueError(f"--budget must be >= 1, got {budget}")
    candidates = list(itertools.product(*(range(len(grid[a])) for a in ("emb", "heads", "qk", "mlp"))))
    features = np.array([_block_features(grid, _dims(grid, c)) for c in candidates])
    inverse = np.eye(features.shape[1]) / 1e-3
    chosen: list[int] = []

    def take(allowed: np.ndarray) -> int:
        nonlocal inverse
        variance = np.einsum("ij,jk,ik->i", features, inverse, features)
        variance[~allowed] = -np.inf
        variance[chosen] = -np.inf
        best = int(np.argmax(variance))
        x = features[best]
        ix = inverse @ x
        inverse = inverse - np.outer(ix, ix) / (1.0 + x @ ix)
        chosen.append(best)
        return best

    emb_of = np.array([c[0] for c in candidates])
    runs = []
    everything = np.ones(len(candidates), dtype=bool)
    for _ in range(budget):
        if len(chosen) + 2 > len(candidates):
            break
        lead = take(everything)
        partner = take(emb_of == candidates[lead][0])
        runs.append((_dims(grid, candidates[lead]), _dims(grid, candidates[partner])))
    return runs


def _source_cell(doc: Mapping[str, Any], part: str, dims: Mapping[str, int]) -> float:
    grid = doc["grid"]
    index = tuple(grid[axis].index(dims[axis]) for axis in PART_AXES[part])
    return float(part_median(doc, part)[index])


def fit_ratio(
    grid: Mapping[str, list[int]], part: str, points: list[tuple[Sequence[float], float]], ridge: float = RIDGE
) -> dict[str, Any]:
    """Ridge fit of log(new/old) for one part; returns the coefficients and the leave-one-out residual."""
    design = np.array([ratio_features(grid, part, values) for values, _ in points])
    target = np.log(np.array([ratio for _, ratio in points]))
    penalty = np.sqrt(ridge) * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the overall ratio is free
    stacked = np.vstack([design, penalty])
    coef, *_ = np.linalg.lstsq(stacked, np.concatenate([target, np.zeros(design.shape[1])]), rcond=None)
    hat = design @ np.linalg.pinv(stacked.T @ stacked) @ design.T
    residual = target - design @ coef
    loo = residual / np.clip(1.0 - np.diag(hat), 1e-6, None)
    return {
        "coef": [round(float(c), 6) for c in coef],
        "points": len(points),
        "mean_ratio": round(float(np.exp(np.mean(target))), 4),
        "loo_rms_pct": round(100.0 * float(np.sqrt(np.mean(loo**2))), 3),
    }


def apply_ratio(doc: dict[str, Any], part: str, coef: Sequence[float]) -> None:
    """Scale a part's cells (median and spread) by the fitted ratio at each cell."""
    grid = doc["grid"]
    entry = doc["parts"][part]
    axes = PART_AXES[part]
    shape = tuple(len(grid[a]) for a in axes)
    ratio = np.empty(shape)
    for index in itertools.product(*(range(n) for n in shape)):
        values = [grid[a][i] for a, i in zip(axes, index, strict=True)]
        ratio[index] = math.exp(float(ratio_features(grid, part, values) @ np.asarray(coef)))
    for key in ("median_ms", "p10_ms", "p90_ms"):
        if key in entry and entry[key] is not None:
            entry[key] = (np.array(entry[key], dtype=float) * ratio).round(6).tolist()
    entry["samples"] = np.zeros(shape, dtype=int).tolist()


def transfer_table(
    source_path: str | Path,
    out: str | Path,
    budget: int,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure `budget` runs here, fit the per-part ratios, write the new table (atomically) and return it."""
    source_path, out = Path(source_path), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first")
    source = read_table(source_path)
    if not source["complete"]:
        raise ValueError(f"{source_path.name} is incomplete; a transfer needs a complete source table")
    missing = [p for p in BLOCK_STAGES if p not in source["parts"]]
    if missing:
        raise ValueError(f"{source_path.name} lacks the parts {missing}; a transfer corrects attn_qk, attn_v and mlp")
    w = source["workload"]
    backend_options = {**(w.get("options") or {}), **(options or {})}
    backend = create_backend(w["backend"], w["precision"], w.get("threads"), **backend_options)
    workload = workload_for_table(source)
    protocol = Protocol.from_dict(source["protocol"])
    spec = GridSpec({a: list(v) for a, v in source["grid"].items()}, tuple(source["parts"]))
    with_model = bool({"stem", "head"} & set(spec.parts))
    runs = choose_runs(spec.grid, budget)
    started = time.perf_counter()
    samples: dict[str, list[tuple[list[int], float]]] = {part: [] for part in spec.parts}
    records = []
    series = []
    reference = reference_dims(spec)
    timed_runs = [(reference, reference), *runs, (reference, reference)]
    bar = tqdm(total=len(timed_runs), desc=f"transfer {out.name}", unit="run", disable=not progress, file=sys.stderr)
    try:
        for k, (a, b) in enumerate(timed_runs):
            names, stages, inputs = build_pipeline([a, b], workload, with_model)
            m = measure(backend.prepare_pipeline(stages, inputs), protocol)
            bar.update(1)
            if k in (0, len(timed_runs) - 1):
                series.append({"at_s": round(time.perf_counter() - started, 2), "median_ms": m.median_ms})
                continue
            stage = dict(enumerate(m.stage_median_ms))
            offset = 1 if with_model else 0
            for j, dims in enumerate((a, b)):
                d = dims.as_dict()
                for s, part in enumerate(BLOCK_STAGES):
                    measured = stage[offset + 3 * j + s]
                    values = [d[axis] for axis in PART_AXES[part]]
                    samples[part].append((values, measured / _source_cell(source, part, d)))
            for part, position in (("stem", 0), ("head", len(names) - 1)):
                if part in spec.parts:
                    samples[part].append(([a.emb], stage[position] / _source_cell(source, part, a.as_dict())))
            records.append(
                {"dims": [a.as_dict(), b.as_dict()], "stages": names, "stage_median_ms": list(m.stage_median_ms),
                 "rel_iqr": round(m.rel_iqr, 4), "samples": m.samples}
            )  # fmt: skip
    finally:
        bar.close()
    doc = new_table(backend, workload, spec, protocol, None, seed=0)
    doc["parts"] = {name: dict(entry) for name, entry in source["parts"].items()}
    fits = {}
    for part in spec.parts:
        fits[part] = fit_ratio(spec.grid, part, samples[part])
        apply_ratio(doc, part, fits[part]["coef"])
    medians = [s["median_ms"] for s in series]
    doc["sweep"].update(
        {
            "layout": TRANSFER_LAYOUT,
            "measurements": len(timed_runs),
            "units_done": sum(len(r["dims"]) for r in records),  # blocks timed, as a sweep counts them
            "units_planned": 2 * len(runs),
            "wall_s": round(time.perf_counter() - started, 2),
            "reference": {
                "dims": reference.as_dict(),
                "series": series,
                "drift_pct": round(100 * (max(medians) - min(medians)) / medians[0], 3),
            },
            "derived_from": {
                "table_id": source_path.stem,
                "content_hash": content_hash(source),
                "device": source["device"].get("name"),
                "created": source.get("created"),
                "budget": budget,
                "method": "per-part ratio, ridge quadratic in log widths, D-optimal runs",
                "fits": fits,
            },
            "records": records,
        }
    )
    doc["complete"] = True
    write_table(out, doc)
    return doc
