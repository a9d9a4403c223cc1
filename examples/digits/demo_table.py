"""Makes sure the latency service holds a table for the demo model's workload: profiles this machine if not.

The grid covers the demo model's dims down to small widths (175 cells: the three block parts plus stem and head),
timed with the profiler's own Sweep and protocol on torch-cpu with 1 thread, validated on a few random off-grid
blocks and whole models, calibrated on those models, and uploaded through the client.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lut_server.client import LatencyClient, LatencyServiceError
from lut_server.dims import ModelDims
from lut_server.table_format import read_table
from profiler.backends import Backend, create_backend
from profiler.backends.glibc_malloc import default_allocator
from profiler.calibrate import calibrate_table
from profiler.fingerprint import summary_mismatches
from profiler.grids import DEFAULT_PARTS, GridSpec
from profiler.sweep import Sweep, SweepMismatch
from profiler.timing import Protocol
from profiler.validate import validate_table_file
from profiler.vit import VitConfig
from profiler.workload import Workload

DEMO_GRID = GridSpec(
    {
        "emb": [32, 48, 64, 80, 96, 112, 128],
        "heads": [1, 2, 4],
        "qk": [8, 16, 32],
        "v": [8, 16, 32],
        "mlp": [16, 128, 256, 384, 512],
    },
    DEFAULT_PARTS,
)
"""EMB at every multiple of its group size (16): it scales every operation, and latency along it bends where
activations stop fitting in cache, so interpolating across 32-wide EMB cells can misjudge an EMB group by up to 2x."""
DEMO_PROTOCOL = Protocol(warmup_s=0.2, min_repeats=15, min_duration_s=0.5, max_rel_iqr=0.06, remeasure=2)
"""Longer than the default: on a small shared machine (2 cores, other work beside) timings wander by 10-20%
between repeats, and more repeats over a longer window keep a cell's median within the table's noise."""
DEMO_BATCH = 64
"""Inference batch of the demo's latency: large enough that latency is compute-bound and scales with the widths
(at batch 1 this small model is dominated by per-operator overhead and barely gets faster when pruned)."""
DEMO_CALIBRATION_MODELS = 12
"""Whole 4-block models timed by validation and fitted by the calibration (the parts' sum is not the model)."""
DEMO_BACKEND = "torch-cpu"
DEMO_THREADS = 1
DEMO_OPTIONS = {"allocator": default_allocator()}
"""Fixed malloc thresholds (profiler/backends/glibc_malloc.py): with glibc's defaults, whether a batch-64 MLP
re-faults its activations on every call depends on what the process allocated before, which moves cells by up to
2x."""


def demo_backend() -> Backend:
    """The backend the demo table is profiled with and the demo's models are measured with."""
    return create_backend(DEMO_BACKEND, "fp32", DEMO_THREADS, **DEMO_OPTIONS)


def table_matches(summary: dict[str, Any], dims: ModelDims, config: VitConfig) -> str | None:
    """Why a served table cannot serve the demo model (None when it can)."""
    if summary.get("backend") != DEMO_BACKEND or summary.get("batch") != DEMO_BATCH:
        found = f"{summary.get('backend')} at batch {summary.get('batch')}"
        return f"it is {found}, the demo needs {DEMO_BACKEND} at batch {DEMO_BATCH}"
    if summary.get("options", {}) != DEMO_OPTIONS:
        return f"it was timed with backend options {summary.get('options', {})}, the demo measures with {DEMO_OPTIONS}"
    if summary.get("tokens") != config.tokens:
        return f"it has {summary.get('tokens')} tokens, the demo model has {config.tokens}"
    ranges = summary.get("ranges", {})
    for axis, value in [("emb", dims.emb)] + [(a, getattr(dims.blocks[0], a)) for a in ("heads", "qk", "v", "mlp")]:
        lo, hi = ranges.get(axis, (None, None))
        if lo is None or not lo <= value <= hi:
            return f"its {axis} range {lo}..{hi} does not cover {value}"
    if not {"stem", "head"} <= set(summary.get("parts", [])):
        return "it has no stem/head parts"
    mismatches = summary_mismatches(summary, demo_backend().environment())
    if mismatches:
        return "it describes another machine (" + "; ".join(mismatches) + ")"
    return None


def profile_demo_table(path: Path, config: VitConfig, progress: bool = True) -> dict[str, Any]:
    """Sweep the demo grid on this machine (resuming a killed sweep) and validate it; returns the table."""
    backend = demo_backend()
    workload = Workload(DEMO_BATCH, config.tokens, config)
    try:
        sweep = Sweep(path, backend, workload, DEMO_GRID, DEMO_PROTOCOL, resume=path.exists(), seed=0)
    except SweepMismatch as exc:
        print(f"starting {path} afresh: an earlier demo left it with other settings ({exc})", file=sys.stderr)
        path.unlink()
        sweep = Sweep(path, backend, workload, DEMO_GRID, DEMO_PROTOCOL, seed=0)
    sweep.run(progress=progress)
    if read_table(path).get("validation") is None:
        validate_table_file(path, points=24, models=DEMO_CALIBRATION_MODELS, depth=4, retest=8, progress=progress)
    if read_table(path).get("calibration") is None:
        calibrate_table(path)
    return read_table(path)


def ensure_demo_table(
    client: LatencyClient, dims: ModelDims, config: VitConfig, work_dir: Path, progress: bool = True
) -> tuple[dict[str, Any], bool]:
    """The served table's summary, profiling and uploading one first if the server lacks it; (summary, profiled)."""
    try:
        summary = client.summary()
    except LatencyServiceError as exc:
        if exc.status != 404:
            raise
        summary = None
    if summary is not None:
        problem = table_matches(summary, dims, config)
        if problem:
            raise ValueError(
                f"table {client.table_id!r} on the server cannot serve the demo model: {problem}; pass another "
                "--table id (the demo profiles it) or remove that table from the server's tables directory"
            )
        return summary, False
    path = work_dir / f"{client.table_id}.json"
    print(f"table {client.table_id!r} is not on the server: profiling this machine into {path}", file=sys.stderr)
    doc = profile_demo_table(path, config, progress)
    summary = client.upload(doc)
    return summary, True
