"""The machine's level over sessions: its median sets a calibrated table's speed, its spread the check's threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import read_table, write_table
from lut_server.table_model import MAX_LEVEL_SESSIONS
from profiler.calibrate import calibrate_table
from profiler.check import drift_threshold_pct, verdict_of, wander_pct
from profiler.level_history import record_level, session_departures_pct, typical_level
from tests.table_factory import calibration, make_table_v2

DEVICE = "Test CPU"
STEADY_SWEEP = {"reference": {"series": [{"median_ms": v} for v in (10.0, 10.1, 9.9, 10.0, 10.05, 9.95)]}}


def with_sessions(levels_pct: list[float], device: str = DEVICE) -> dict:
    doc = {"device": {"name": DEVICE}, "sweep": STEADY_SWEEP}
    for level in levels_pct:
        record_level(doc, "check", level, 14, device)
    return doc


def test_the_typical_level_is_the_median_session_with_the_sweep_counted_as_one():
    level, count = typical_level(with_sessions([-4.0, -2.0, -3.0, 5.0]))  # the sweep's 0 makes five
    assert count == 5
    assert level == pytest.approx(0.98)  # -4, -3, -2, 0, +5 (without the sweep it would be -2.5)
    assert typical_level({"device": {"name": DEVICE}, "sweep": STEADY_SWEEP}) == (1.0, 1)
    assert typical_level({"device": {"name": DEVICE}, "sweep": None}) == (1.0, 0)


def test_sessions_on_another_device_are_left_out():
    doc = with_sessions([-4.0, -4.0])
    foreign = with_sessions([30.0, 30.0, 30.0], device="Other CPU")
    doc["levels"] += foreign["levels"]
    assert typical_level(doc) == (pytest.approx(0.96), 3)


def test_the_history_keeps_the_newest_sessions_and_writes_as_a_table(tmp_path: Path):
    doc = make_table_v2()
    for k in range(MAX_LEVEL_SESSIONS + 3):
        record_level(doc, "check", float(k % 7), 14, DEVICE)
    assert len(doc["levels"]) == MAX_LEVEL_SESSIONS
    assert doc["levels"][-1]["level_pct"] == float((MAX_LEVEL_SESSIONS + 2) % 7)
    write_table(tmp_path / "t.json", doc)
    assert read_table(tmp_path / "t.json")["levels"] == doc["levels"]


def test_the_sessions_spread_widens_the_threshold_only_with_enough_sessions():
    few = with_sessions([6.0, -6.0, 6.0])  # four sessions with the sweep: too few to speak of a spread
    assert session_departures_pct(few) == []
    assert wander_pct(few) <= 1.0 + 1e-9
    swinging = with_sessions([6.0, -6.0, 6.0, -6.0, 0.5, -0.5, 6.0, -6.0, 0.0])
    assert 5.5 < wander_pct(swinging) < 6.5  # the sweep's own re-times moved by 1% at most
    assert verdict_of([], [5.0, 5.5], drift_threshold_pct(wander_pct(few))) == "stale"
    assert verdict_of([], [5.0, 5.5], drift_threshold_pct(wander_pct(swinging))) == "holds"
    assert verdict_of([], [12.0, 11.0], drift_threshold_pct(wander_pct(swinging))) == "stale"


def test_a_steady_history_does_not_excuse_a_new_offset():
    steady = with_sessions([0.5, -0.5, 0.3, -0.2, 0.1, 0.0])
    assert wander_pct(steady) <= 1.0 + 1e-9
    assert verdict_of([], [9.0, 8.5], drift_threshold_pct(wander_pct(steady))) == "stale"


def test_calibrated_answers_are_moved_by_the_level_and_raw_ones_are_not():
    doc = make_table_v2() | {"calibration": calibration() | {"level": 0.95}}
    unlevelled = LatencyTable(make_table_v2() | {"calibration": calibration()}, "a")
    levelled = LatencyTable(doc, "b")
    raw = LatencyTable(doc, "c", calibrated=False)
    blocks = [BlockDims(emb=96, heads=2, qk=24, v=20, mlp=200), BlockDims(emb=64, heads=1, qk=16, v=16, mlp=128)]
    model = ModelDims.uniform(96, 3, heads=2, qk=24, v=20, mlp=200)
    np.testing.assert_allclose(levelled.block_latency(blocks), 0.95 * unlevelled.block_latency(blocks))
    assert levelled.model_latency(model) == pytest.approx(0.95 * unlevelled.model_latency(model))
    assert levelled.deltas(model).total_ms == pytest.approx(levelled.model_latency(model))
    assert raw.model_latency(model) == pytest.approx(LatencyTable(make_table_v2(), "d").model_latency(model))
    assert levelled.summary()["calibration"]["level"] == 0.95


def test_calibrate_stores_the_median_session_level(tmp_path: Path):
    """Models measured exactly at the table's cells (at the sweep's speed): the fitted correction is none, and the
    level comes from the sessions alone."""
    doc = make_table_v2()
    raw = LatencyTable(doc, "raw", calibrated=False)
    rng = np.random.default_rng(0)
    models = [
        ModelDims.uniform(int(rng.choice([64, 96, 128])), 2, heads=2, qk=16, v=16, mlp=int(rng.choice([128, 256])))
        for _ in range(10)
    ]
    doc["validation"] = {
        "created": "2026-01-03T00:00:00Z",
        "model_points": [
            {"dims": m.as_dict(), "measured_ms": 1.3 * (ms := raw.model_latency(m)), "level_normalised_ms": ms}
            for m in models
        ],
    }
    for level in (4.0, 5.0, 6.0, -1.0):
        record_level(doc, "check", level, 14, DEVICE)
    path = tmp_path / "t.json"
    write_table(path, doc)
    stored = calibrate_table(path)
    assert stored["form"] == "none"  # the level-normalised models match the cells
    assert stored["level"] == pytest.approx(1.04) and stored["level_sessions"] == 5
    served = LatencyTable.load(path)
    for m in models:
        assert served.model_latency(m) == pytest.approx(1.04 * raw.model_latency(m), rel=1e-4)


def test_a_validation_from_before_the_history_counts_once():
    """A table validated before it kept sessions still has that validation's level; recorded, it is not counted
    twice."""
    validation = {"created": "2026-01-03T00:00:00Z", "device": DEVICE, "level": {"median_pct": -3.0}}
    doc = with_sessions([-1.0]) | {"validation": validation}
    assert typical_level(doc) == (pytest.approx(0.99), 3)  # 0, -1, -3
    record_level(doc, "validate", -3.0, 40, DEVICE, created=validation["created"])
    assert typical_level(doc) == (pytest.approx(0.99), 3)
    forced = doc | {"levels": doc["levels"][:1], "validation": validation | {"device": "Other CPU"}}
    assert typical_level(forced) == (pytest.approx(0.99**0.5), 2)  # a validation forced elsewhere is left out
