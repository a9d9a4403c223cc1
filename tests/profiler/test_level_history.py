"""The machine's level over sessions: its median sets a calibrated table's speed, its spread the check's threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import read_table, validate_table, write_table
from lut_server.table_model import MAX_LEVEL_SESSIONS, TableFormatError
from profiler.calibrate import calibrate_table
from profiler.check import drift_threshold_pct, verdict_of, wander_pct
from profiler.level_history import level_spread_pct, record_level, typical_level
from profiler.validate import with_validation
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


def calibrated_as_now(doc: dict) -> dict:
    """The doc with the level and spread `calibrate` would store from its sessions now."""
    level, count = typical_level(doc)
    spread = level_spread_pct(doc)
    return doc | {"calibration": {"level": level, "level_sessions": count, "level_spread_pct": spread}}


def test_the_sessions_spread_widens_the_threshold_once_calibrate_kept_it():
    few = with_sessions([6.0, -6.0, 6.0])  # four sessions with the sweep: too few to speak of a spread
    assert level_spread_pct(few) is None
    assert wander_pct(calibrated_as_now(few)) <= 1.0 + 1e-9
    swinging = with_sessions([6.0, -6.0, 6.0, -6.0, 0.5, -0.5, 6.0, -6.0, 0.0])
    assert 5.5 < level_spread_pct(swinging) < 6.5
    assert wander_pct(swinging) <= 1.0 + 1e-9  # not calibrated since: the sessions widen nothing yet
    kept = calibrated_as_now(swinging)
    assert wander_pct(kept) == pytest.approx(level_spread_pct(swinging))  # the sweep's re-times moved 1% at most
    assert verdict_of([], [5.0, 5.5], drift_threshold_pct(wander_pct(swinging))) == "stale"
    assert verdict_of([], [5.0, 5.5], drift_threshold_pct(wander_pct(kept))) == "holds"
    assert verdict_of([], [12.0, 11.0], drift_threshold_pct(wander_pct(kept))) == "stale"


def test_sessions_recorded_after_a_lasting_change_do_not_excuse_it():
    """A steady machine, calibrated; then it runs 8% slower for good and every hourly `check --record` records
    that. Those sessions are the change itself: until the next `calibrate` they must not widen the threshold."""
    doc = calibrated_as_now(with_sessions([0.5, -0.5, 0.3, -0.2, 0.1, 0.0]))
    threshold = drift_threshold_pct(wander_pct(doc))
    assert threshold == 3.0
    for _ in range(8):
        record_level(doc, "check", 8.0, 14, DEVICE)
        assert drift_threshold_pct(wander_pct(doc)) == threshold
        assert verdict_of([], [8.0, 8.2], threshold) == "stale"
    assert level_spread_pct(doc) > 7.0  # what a calibrate now would keep: the history holds both machines


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
    for mine, theirs in zip(levelled.deltas(model).blocks, unlevelled.deltas(model).blocks, strict=True):
        assert mine["mlp"] == pytest.approx(0.95 * theirs["mlp"])  # a group's saving is at the same speed
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
    elsewhere = doc | {"levels": doc["levels"][:1], "validation": validation | {"device": "Other CPU"}}
    assert typical_level(elsewhere) == (pytest.approx(0.99**0.5), 2)  # a validation on another device is left out
    forced = doc | {"levels": doc["levels"][:1], "validation": validation | {"forced": True}}
    assert typical_level(forced) == (pytest.approx(0.99**0.5), 2)  # so is one forced past a fingerprint mismatch


def _result(created: str, level_pct: float, forced: bool = False) -> dict:
    return {"created": created, "forced": forced, "level": {"median_pct": level_pct, "reference_times": 40}}


def test_a_validation_keeps_what_was_recorded_meanwhile_and_the_validation_it_replaces():
    now = with_sessions([1.0])  # the table as it is when the validation ends: a check recorded +1% meanwhile
    now["validation"] = {"created": "2026-01-03T00:00:00Z", "device": DEVICE, "level": {"median_pct": -3.0}}
    doc = with_validation(now, _result("2026-01-04T00:00:00Z", 2.0), DEVICE)
    assert [s["level_pct"] for s in doc["levels"]] == [1.0, -3.0, 2.0]  # the replaced one kept, then this one
    assert doc["validation"]["created"] == "2026-01-04T00:00:00Z"
    assert typical_level(doc) == (pytest.approx(1.01**0.5), 4)  # -3, 0, +1, +2
    forced = with_validation(with_sessions([1.0]), _result("2026-01-05T00:00:00Z", 9.0, forced=True), DEVICE)
    assert [s["level_pct"] for s in forced["levels"]] == [1.0]  # forced past a mismatch: not this machine's level


def test_a_table_without_sessions_is_written_without_the_key(tmp_path: Path):
    write_table(tmp_path / "t.json", make_table_v2())
    assert "levels" not in json.loads((tmp_path / "t.json").read_text())


@pytest.mark.parametrize(
    ("session", "field"),
    [({"level_pct": -100.0}, "level_pct"), ({"level_pct": float("nan")}, "level_pct"),
     ({"source": "guess"}, "source"), ({"created": None}, "created")],
)  # fmt: skip
def test_a_bad_session_is_refused_naming_the_field(session: dict, field: str):
    good = {"created": "2026-01-03T00:00:00Z", "source": "check", "level_pct": 1.0}
    with pytest.raises(TableFormatError, match=field):
        validate_table(make_table_v2() | {"levels": [good | session]})
    with pytest.raises(TableFormatError, match="levels"):
        validate_table(make_table_v2() | {"levels": [good] * (MAX_LEVEL_SESSIONS + 1)})
