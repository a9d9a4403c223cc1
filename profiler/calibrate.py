"""`python -m profiler calibrate TABLE`: fit the table's whole-model correction to the models validations timed.

The fit itself (forms, ridge, leave-one-out choice) lives in `lut_server/calibration.py`, next to the reader that
applies it, so the server and the local `LatencyTable` answer with the same correction. The models it is fitted on
are stored with it, so a later validation (which replaces the validation's model list) does not lose them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lut_server.calibration import CalibrationRow, fit_calibration
from lut_server.dims import ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import incomplete_reason, read_table, write_table
from profiler.calibration_points import model_points, validations_used
from profiler.environment import utc_now
from profiler.level_history import level_spread_pct, typical_level


def calibration_rows(table: LatencyTable, points: list[Mapping[str, Any]]) -> list[CalibrationRow]:
    rows = []
    for point in points:
        dims = ModelDims.from_dict(point["dims"])
        rows.append(CalibrationRow(table.raw_part_sums(dims), dims.depth, float(point["measured_ms"])))
    return rows


def calibrate_table(path: str | Path) -> dict[str, Any]:
    """Fit, store the calibration beside the untouched raw medians, return it.

    The factors are fitted at the sweep's speed (level-normalised models); `level` then moves every answer to the
    machine's typical speed, the median over the sessions the table recorded, and `level_spread_pct` keeps their
    spread for `check` (`profiler/level_history.py`)."""
    path = Path(path)
    doc = read_table(path)
    if not doc.get("complete"):
        raise ValueError(f"{incomplete_reason(path.name)}; a calibration corrects a whole table")
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
    p.set_defaults(handler=_cmd_calibrate)


def _cmd_calibrate(args: Any) -> int:
    calibration = calibrate_table(args.table)
    shown = {k: v for k, v in calibration.items() if k != "fitted"}
    print(json.dumps(shown | {"models": calibration["fitted"]["models"]}, indent=1))
    return 0
