"""The machine's speed over time, as a table records it: one level per session that re-timed its reference.

A sweep gives a table its scale: every cell is at the speed the machine had during the minutes of the sweep. A
shared VM's speed moves by several percent over hours, so that scale is one draw. Every later session that times
the table's reference configuration again (each validation; each `check --record`) adds one draw: the machine's
level then, measured over the table's raw cells. The median of the draws, the sweep counted as level 1, is the
machine's typical speed. How far a session's level strays from it is the machine's wander over hours.

Two estimates of that wander, and the larger is kept. The changes between consecutive sessions estimate it where
sessions scatter independently, and a lasting change of the machine (a new host, a kernel update) is one large
change among many small ones, so it does not move their median. But a shared VM also keeps a speed for hours (a
busy host in the morning, a quiet one in the evening): consecutive sessions then differ little and that estimate
falls short. So the sessions' own departures from the typical level count too, each session read as the median
of it and its neighbours (one session in a burst of load vanishes, a speed kept for two sessions stays), over the
sessions before the latest run of sessions on one side (below, within or above the consecutive estimate around
the typical level): a speed the machine has left again is wander it has shown, while the latest run may be a
lasting change that has not ended, and a threshold that allowed it could never detect it.

The typical level is a median over hours, not over sessions: sessions come in series (a check every ten minutes
through one evening, none through the night), and a median over sessions is the speed of whichever hours were
checked most. Each hour of sessions (from its first session on) counts once, as its own median, and the sweep
counts as one hour at level 1, so how often a machine is checked does not move its typical speed.

`calibrate` stores both figures (`calibration.level`, `calibration.level_spread_pct`); `check` judges drift
against that level and allows that spread, and neither moves until `calibrate` runs again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from statistics import median
from typing import Any, Literal

import numpy as np

from lut_server.table_model import MAX_LEVEL_SESSIONS
from profiler.environment import utc_now

MIN_SESSIONS_FOR_SPREAD = 5
"""Fewer sessions than this say nothing about the spread over hours."""

PERIOD_S = 3600.0
"""Sessions within this long of an hour's first session are one hour of the typical level."""

P90_PER_MEDIAN_CHANGE = 1.6449 / (0.6745 * np.sqrt(2.0))
"""For levels that scatter independently around a typical level, the 90th percentile of their departures from it
per median absolute change between consecutive levels (normal scatter: a change has √2 times the spread of a
departure; the median absolute value is 0.6745 and the 90th percentile 1.6449 spreads)."""


def unrecorded_validation(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The latest validation as a session, where it tracked the level, ran on the table's fingerprint (not
    `--force`d past a mismatch) and predates the history (a validation now records its own session)."""
    validation = doc.get("validation") or {}
    level = (validation.get("level") or {}).get("median_pct")
    recorded = {s.get("created") for s in doc.get("levels") or []}
    created = validation.get("created")
    if level is None or validation.get("forced") or not isinstance(created, str) or created in recorded:
        return None
    session = {"created": validation.get("created"), "source": "validate", "level_pct": level}
    count = (validation.get("level") or {}).get("reference_times")
    return session | ({"count": count} if count is not None else {}) | {"device": validation.get("device")}


def in_time_order(sessions: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(sessions, key=lambda s: str(s.get("created") or ""))


def recorded_sessions(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every recorded session, the latest validation included where it predates the history, in time order."""
    earlier = unrecorded_validation(doc)
    return in_time_order([*(doc.get("levels") or []), *([earlier] if earlier else [])])


def _sessions_here(doc: Mapping[str, Any], until: str | None = None) -> list[Mapping[str, Any]]:
    device = (doc.get("device") or {}).get("name")
    return [
        s
        for s in recorded_sessions(doc)
        if s.get("device") in (None, device) and (until is None or str(s.get("created") or "") <= until)
    ]


def session_levels(doc: Mapping[str, Any], until: str | None = None) -> list[float]:
    """The level of every session on the table's device, as a ratio, in time order: the sweep's (1) first.
    `until`: only the sessions recorded up to that time (ISO 8601, UTC)."""
    recorded = [1.0 + float(s["level_pct"]) / 100.0 for s in _sessions_here(doc, until)]
    return [1.0, *recorded] if doc.get("sweep") else recorded


def _seconds(created: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def hourly_levels(doc: Mapping[str, Any]) -> list[float]:
    """One level per hour of sessions, as a ratio: the median log level of the sessions from an hour's first
    session to `PERIOD_S` later (a session without a readable time is an hour of its own); the sweep's (1) first."""
    hours: list[list[float]] = []
    opened: float | None = None
    for session in _sessions_here(doc):
        at = _seconds(session.get("created"))
        if at is None or opened is None or at - opened >= PERIOD_S:
            hours.append([])
            opened = at
        hours[-1].append(float(np.log1p(float(session["level_pct"]) / 100.0)))
    recorded = [float(np.exp(median(logs))) for logs in hours]
    return [1.0, *recorded] if doc.get("sweep") else recorded


def calibrated_level_range_pct(doc: Mapping[str, Any]) -> tuple[float, float, int] | None:
    """The lowest and highest level the sessions reached, in percent against the sweep, and how many sessions (the
    sweep included): those the latest `calibrate` saw, or all of them on an uncalibrated table. None for fewer than
    `MIN_SESSIONS_FOR_SPREAD`. Sessions recorded since the calibration are left out, as they are from the spread: a
    stale check recorded on a changed machine must not make the next one look like an hour the table has seen."""
    fitted = ((doc.get("calibration") or {}).get("fitted") or {}).get("created")
    levels = session_levels(doc, until=fitted if isinstance(fitted, str) else None)
    if len(levels) < MIN_SESSIONS_FOR_SPREAD:
        return None
    return 100.0 * (min(levels) - 1.0), 100.0 * (max(levels) - 1.0), len(levels)


def typical_level(doc: Mapping[str, Any]) -> tuple[float, int]:
    """The median hour's level (geometric: an hour 5% slow and one 5% fast cancel; module doc) and how many
    sessions, the sweep included."""
    hours = hourly_levels(doc)
    if not hours:
        return 1.0, 0
    return float(np.exp(median(np.log(hours)))), len(session_levels(doc))


def consecutive_spread(logs: np.ndarray) -> float:
    """The 90th percentile departure, as a log ratio, from the median change between consecutive sessions."""
    return P90_PER_MEDIAN_CHANGE * float(np.median(np.abs(np.diff(logs))))


def running_median(logs: np.ndarray) -> np.ndarray:
    """Each session as the median of it and its neighbours (at either end, of the three nearest), so one session in a
    burst of load vanishes and a speed kept for two sessions or more stays."""
    if len(logs) < 3:
        return logs.copy()
    return np.array([np.median(logs[min(max(i - 1, 0), len(logs) - 3) :][:3]) for i in range(len(logs))])


def settled_sessions(logs: np.ndarray, band: float) -> np.ndarray:
    """The sessions before the latest run on one side, as their running median: each session's side (below, within
    or above `band` around the median) is read from the running median, and the latest run of equal sides is left
    out."""
    middle = float(np.median(logs))
    smoothed = running_median(logs)
    sides = np.where(smoothed > middle + band, 1, np.where(smoothed < middle - band, -1, 0))
    start = len(sides)
    while start > 0 and sides[start - 1] == sides[-1]:
        start -= 1
    return smoothed[:start]


def level_spread_pct(doc: Mapping[str, Any]) -> float | None:
    """How far a session's level strays from the typical level, 90th percentile, in percent: the larger of the
    estimate from consecutive changes and the departures of the settled sessions (as their running median) from the
    median of all sessions, the typical level `check` compares with (module doc);
    None for fewer than `MIN_SESSIONS_FOR_SPREAD` sessions. Neither one lasting change nor one session in a burst
    of load sets it."""
    levels = session_levels(doc)
    if len(levels) < MIN_SESSIONS_FOR_SPREAD:
        return None
    logs = np.log(levels)
    spread = consecutive_spread(logs)
    settled = settled_sessions(logs, spread)
    if len(settled) >= MIN_SESSIONS_FOR_SPREAD:
        spread = max(spread, float(np.percentile(np.abs(settled - np.median(logs)), 90)))
    return float(100.0 * np.expm1(spread))


def record_level(
    doc: dict[str, Any],
    source: Literal["validate", "check"],
    level_pct: float,
    count: int,
    device: str | None,
    created: str | None = None,
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
    doc["levels"] = in_time_order([*(doc.get("levels") or []), session])[-MAX_LEVEL_SESSIONS:]
