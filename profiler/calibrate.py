"""`python -m profiler calibrate TABLE [--steps auto|none|AXES]`: fit the table's whole-model correction to the models
validations timed, after setting how the table is read between grid values where `--steps` asks.

The reading (multilinear, or a staircase along some axes: `profiler/interpolation_choice.py`) is set before the fit,
since the fit corrects the answers of that reading. It is opt-in: it changes every answer between grid values, so a
table gets it from its own validation's blocks (group deltas stay those of the linear reading: `LatencyTable.deltas`).

The fit itself (forms, ridge, leave-one-out choice) lives in `lut_server/calibration.py`, next to the reader that
applies it, so the server and the local `LatencyTable` answer with the same correction. The models it is fitted on
are stored with it, so a later validation (which replaces the validation's model list) does not lose them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lut_server.atomic_file import require_writable
from lut_server.calibration import CalibrationRow, fit_calibration
from lut_server.dims import AXES, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import incomplete_reason, read_table, write_table
from profiler.calibration_points import model_points, validations_used
from profiler.environment import utc_now
from profiler.interpolation_choice import MIN_BLOCKS, choose_steps, timed_blocks
from profiler.level_history import level_spread_pct, typical_level


def calibration_rows(table: LatencyTable, points: list[Mapping[str, Any]]) -> list[CalibrationRow]:
    rows = []
    for point in points:
        dims = ModelDims.from_dict(point["dims"])
        rows.append(CalibrationRow(table.raw_part_sums(dims), dims.depth, float(point["measured_ms"])))
    return rows


def steps_argument(value: str) -> str | list[str]:
    """`auto`, `none`, or a comma-separated list of axes."""
    if value in ("auto", "none"):
        return value
    axes = [a.strip() for a in value.split(",") if a.strip()]
    unknown = [a for a in axes if a not in AXES]
    if not axes or unknown or len(set(axes)) != len(axes):
        raise argparse.ArgumentTypeError(
            f"--steps takes auto, none or distinct axes among {', '.join(AXES)}; got {value!r}"
        )
    return axes


def set_steps(doc: dict[str, Any], steps: str | list[str]) -> None:
    """Set `interpolation` as `--steps` asks: chosen on the validation's blocks, removed, or the given axes."""
    if steps == "auto":
        chosen = choose_steps(doc)
        if chosen is None:
            raise ValueError(
                f"--steps auto chooses on the latest validation's timed blocks, at least {MIN_BLOCKS}; the table has "
                f"{len(timed_blocks(doc))} (run `python -m profiler validate` with --points)"
            )
        doc["interpolation"] = chosen if chosen["steps"] else None
    elif steps == "none":
        doc["interpolation"] = None
    else:
        doc["interpolation"] = {"steps": list(steps), "chosen": {"given": True, "created": utc_now()}}


def calibrate_table(path: str | Path, steps: str | list[str] | None = None) -> dict[str, Any]:
    """Fit, store the calibration beside the untouched raw medians, return it.

    The factors are fitted at the sweep's speed (level-normalised models); `level` then moves every answer to the
    machine's typical speed, the median over the sessions the table recorded, and `level_spread_pct` keeps their
    spread for `check` (`profiler/level_history.py`)."""
    path = Path(path)
    doc = read_table(path)
    if not doc.get("complete"):
        raise ValueError(f"{incomplete_reason(path.name)}; a calibration corrects a whole table")
    require_writable(path)
    if steps is not None:
        set_steps(doc, steps)
    points = model_points(doc)
    raw = LatencyTable(doc, path.stem, calibrated=False)
    calibration = fit_calibration(calibration_rows(raw, points))
    level, sessions = typical_level(doc)
    if sessions > 1:  # the sweep alone: answers stay at its speed, and the table stays readable by earlier readers
        calibration["level"] = round(level, 5)
        calibration["level_sessions"] = sessions
    spread = level_spread_pct(doc)
    if spread is not None:
        calibration["level_spread_pct"] = round(spread, 3)
    calibration["fitted"] = {
        "created": utc_now(),
        "models": len(points),
        "validations": validations_used(doc),
        "points": points,
    }
    doc["calibration"] = calibration
    write_table(path, doc)
    return calibration


def register(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="fit a whole-model correction to the models validations measured")
    p.add_argument("table", type=Path)
    p.add_argument(
        "--steps",
        type=steps_argument,
        default=None,
        help="read these axes as a staircase between grid values (a width costs what the next grid value costs, as "
        "GPU tile padding does): 'auto' chooses them on the latest validation's off-grid blocks, 'none' reads every "
        "axis linearly, or e.g. 'emb,mlp'; default: the table's reading stays. Group deltas stay those of the linear "
        "reading (each group's share of its step). The stored validation describes the reading it was made with: "
        "validate again after changing it",
    )
    p.set_defaults(handler=_cmd_calibrate)


def _cmd_calibrate(args: Any) -> int:
    calibration = calibrate_table(args.table, args.steps)
    shown = {k: v for k, v in calibration.items() if k != "fitted"}
    interpolation = read_table(args.table).get("interpolation")
    steps = {"interpolation_steps": interpolation["steps"] if interpolation else []}
    print(json.dumps(shown | {"models": calibration["fitted"]["models"]} | steps, indent=1))
    return 0
