"""The machine's speed over time, as a table records it: one level per session that re-timed its reference.

A sweep gives a table its scale: every cell is at the speed the machine had during the minutes of the sweep. A
shared VM's speed moves by several percent over hours, so that scale is one draw. Every later session that times
the table's reference configuration again (each validation; each `check --record`) adds one draw: the machine's
level then, measured over the table's raw cells. The median of the draws, the sweep counted as level 1, is the
machine's typical speed, which `calibrate` stores as `calibration.level`; their spread around it is the wander
over hours that `check` allows before it calls a table stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import median
from typing import Any

import numpy as np

from lut_server.table_model import MAX_LEVEL_SESSIONS
from profiler.environment import utc_now

MIN_SESSIONS_FOR_SPREAD = 5
"""Fewer sessions than this say nothing about the spread over hours."""


def _sessions(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The recorded sessions, and the latest validation where it predates the history (it tracked the level too)."""
    sessions = list(doc.get("levels") or [])
    validation = doc.get("validation") or {}
    level = (validation.get("level") or {}).get("median_pct")
    if level is not None and validation.get("created") not in {s.get("created") for s in sessions}:
        sessions.append({"level_pct": level, "device": validation.get("device")})
    return sessions


def session_levels(doc: Mapping[str, Any]) -> list[float]:
    """The level of every session on the table's device, as a ratio: the sweep's (1), then the recorded ones."""
    device = (doc.get("device") or {}).get("name")
    recorded = [1.0 + float(s["level_pct"]) / 100.0 for s in _sessions(doc) if s.get("device") in (None, device)]
    return [1.0, *recorded] if doc.get("sweep") else recorded


def typical_level(doc: Mapping[str, Any]) -> tuple[float, int]:
    """The median session level (geometric: a session 5% slow and one 5% fast cancel) and how many sessions."""
    levels = session_levels(doc)
    if not levels:
        return 1.0, 0
    return float(np.exp(median(np.log(levels)))), len(levels)


def session_departures_pct(doc: Mapping[str, Any]) -> list[float]:
    """How far each session's level lay from the sessions' median, in percent (none for too few sessions)."""
    levels = session_levels(doc)
    if len(levels) < MIN_SESSIONS_FOR_SPREAD:
        return []
    middle, _ = typical_level(doc)
    return [100.0 * abs(v / middle - 1.0) for v in levels]


def record_level(
    doc: dict[str, Any], source: str, level_pct: float, count: int, device: str | None, created: str | None = None
) -> None:
    """Append one session to the table's history (the newest `MAX_LEVEL_SESSIONS` are kept)."""
    session = {
        "created": created or utc_now(),
        "source": source,
        "level_pct": round(float(level_pct), 3),
        "count": int(count),
    }
    if device is not None:
        session["device"] = device
    doc["levels"] = [*(doc.get("levels") or []), session][-MAX_LEVEL_SESSIONS:]
