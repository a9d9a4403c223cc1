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
from profiler.level_history import (
    calibrated_level_range_pct,
    hourly_levels,
    level_spread_pct,
    record_level,
    session_levels,
    typical_level,
)
from profiler.validate import store_validation, with_validation
from tests.table_factory import calibration, make_table_v2

DEVICE = "Test CPU"
STEADY_SWEEP = {"reference": {"series": [{"median_ms": v} for v in (10.0, 10.1, 9.9, 10.0, 10.05, 9.95)]}}


def hour(k: int) -> str:
    """The k-th hour after the sweep, as a session's `created`."""
    return f"2026-02-{1 + k // 24:02d}T{k % 24:02d}:00:00Z"


def with_sessions(levels_pct: list[float], device: str = DEVICE, first_hour: int = 1) -> dict:
    doc = {"device": {"name": DEVICE}, "sweep": STEADY_SWEEP}
    for k, level in enumerate(levels_pct):
        record_level(doc, "check", level, 14, device, created=hour(first_hour + k))
    return doc


def test_the_typical_level_is_the_median_session_with_the_sweep_counted_as_one():
    level, count = typical_level(with_sessions([-4.0, -2.0, -3.0, 5.0]))  # the sweep's 0 makes five
    assert count == 5
    assert level == pytest.approx(0.98)  # -4, -3, -2, 0, +5 (without the sweep it would be -2.5)
    assert typical_level({"device": {"name": DEVICE}, "sweep": STEADY_SWEEP}) == (1.0, 1)
    assert typical_level({"device": {"name": DEVICE}, "sweep": None}) == (1.0, 0)


def at(hour_k: int, minute: int) -> str:
    return hour(hour_k)[:-6] + f"{minute:02d}:00Z"


def test_a_series_of_sessions_within_an_hour_counts_as_one_hour():
    """Fourteen checks in two fast evening hours and six hours of sessions near the sweep's speed: the typical
    level is the hours' median, not the sessions'."""
    doc = with_sessions([1.0, -1.0, 2.0, 0.5, -0.5, 1.5], first_hour=1)
    for k in range(14):
        record_level(doc, "check", -10.0, 14, DEVICE, created=at(20 + k // 7, 8 * (k % 7)))
    level, count = typical_level(doc)
    assert count == 21  # every session is still counted
    assert level == pytest.approx(1.0)  # hours: -10, -10, -1, -0.5, 0 (the sweep), +0.5, +1, +1.5, +2
    assert np.exp(np.median(np.log(session_levels(doc)))) == pytest.approx(0.9)  # the median session is the evening
    assert hourly_levels(doc)[-2:] == pytest.approx([0.9, 0.9])


def test_an_hour_opens_at_its_first_session_and_a_session_without_a_time_is_an_hour_of_its_own():
    doc = {"device": {"name": DEVICE}, "sweep": STEADY_SWEEP}
    for created, level in ((at(1, 0), -4.0), (at(1, 59), -2.0), (at(2, 0), 6.0), (at(2, 10), 8.0)):
        record_level(doc, "check", level, 14, DEVICE, created=created)
    doc["levels"].append({"created": "not a time", "source": "check", "level_pct": 3.0, "count": 14, "device": DEVICE})
    hours = hourly_levels(doc)
    assert len(hours) == 4  # the sweep, 01:00-01:59, 02:00-02:10, the session without a time
    assert hours[1] == pytest.approx(np.sqrt(0.96 * 0.98))
    assert hours[2] == pytest.approx(np.sqrt(1.06 * 1.08))
    assert hours[3] == pytest.approx(1.03)


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


def test_the_spread_is_a_wandering_machines_p90_departure_and_widens_the_threshold_once_calibrate_kept_it():
    few = with_sessions([6.0, -6.0, 6.0])  # four sessions with the sweep: too few to speak of a spread
    assert level_spread_pct(few) is None
    assert wander_pct(calibrated_as_now(few)) <= 1.0 + 1e-9
    rng = np.random.default_rng(3)
    scatter = 100.0 * np.expm1(rng.normal(0.0, 0.04, size=60))  # a machine whose level scatters by 4% (one sigma)
    wandering = with_sessions(list(scatter))
    p90 = 100.0 * np.expm1(1.6449 * 0.04)
    assert 0.75 * p90 < level_spread_pct(wandering) < 1.25 * p90
    assert wander_pct(wandering) <= 1.0 + 1e-9  # not calibrated since: the sessions widen nothing yet
    kept = calibrated_as_now(wandering)
    assert wander_pct(kept) == pytest.approx(level_spread_pct(wandering))  # the sweep's re-times moved 1% at most
    assert verdict_of([], [5.0, 5.5], drift_threshold_pct(wander_pct(wandering))) == "stale"
    assert verdict_of([], [5.0, 5.5], drift_threshold_pct(wander_pct(kept))) == "holds"
    assert verdict_of([], [14.0, 13.0], drift_threshold_pct(wander_pct(kept))) == "stale"


def test_one_burst_among_few_sessions_does_not_set_the_spread():
    assert level_spread_pct(with_sessions([0.3, -0.2, 20.0, 0.1, -0.3])) < 3.0


def hours_at(level_pct: float, count: int, rng: np.random.Generator) -> list[float]:
    """`count` hourly sessions of a machine keeping one speed, each with 0.5% of noise."""
    return list(level_pct + rng.normal(0.0, 0.5, size=count))


def holding(doc: dict, levels_pct: list[float]) -> int:
    """How many checks at these levels (against the sweep) `check` would call `holds` on the calibrated table."""
    level, threshold = doc["calibration"]["level"], drift_threshold_pct(wander_pct(doc))
    drifts = [100.0 * ((1.0 + v / 100.0) / level - 1.0) for v in levels_pct]
    return sum(verdict_of([], [d, d], threshold) == "holds" for d in drifts)


def test_a_speed_the_machine_left_again_is_wander_and_one_it_has_not_left_is_not_yet():
    """A shared VM at its usual speed by day and 9% faster for an evening: consecutive sessions differ by about 0.7%,
    so the consecutive estimate alone would call every evening check stale. While the first evening lasts, it may
    be a lasting change, and the threshold stays; once the machine has come back from it, the evening is wander,
    and the threshold holds the machine's sessions nine times in ten, as `check` promises."""
    rng = np.random.default_rng(5)
    morning, evening, next_day = hours_at(0.0, 12, rng), hours_at(-9.0, 6, rng), hours_at(0.0, 12, rng)
    first_evening = calibrated_as_now(with_sessions(morning + evening))
    assert first_evening["calibration"]["level_spread_pct"] < 3.0
    assert holding(first_evening, evening) == 0

    returned = calibrated_as_now(with_sessions(morning + evening + next_day))
    assert returned["calibration"]["level"] == pytest.approx(1.0, abs=0.01)
    assert 8.0 < returned["calibration"]["level_spread_pct"] < 11.0  # the evening's 9% departure, as a ratio
    every_session = morning + evening + next_day
    assert holding(returned, every_session) >= 0.9 * len(every_session)
    assert holding(returned, morning + next_day) == len(morning + next_day)
    assert holding(returned, [-8.0, -7.5]) == 2  # an evening a little milder than the first
    assert holding(returned, [-15.0, -16.0]) == 0


def test_a_burst_in_one_session_starts_no_run_of_its_own():
    rng = np.random.default_rng(6)
    steady = hours_at(0.0, 15, rng)
    for at in (0, 7, len(steady) - 1, len(steady)):  # the first, one in the middle, the one before the last, the last
        with_burst = [*steady[:at], 12.0, *steady[at:]]
        assert level_spread_pct(with_sessions(with_burst)) < 2.0, at
    assert level_spread_pct(with_sessions([0.3, -0.2, 0.1, 20.0, -0.3])) < 2.0  # a burst among five sessions


def test_sessions_recorded_after_a_lasting_change_do_not_excuse_it_before_or_after_calibrate():
    """A steady machine, calibrated; then it runs 8% slower for good and every hourly `check --record` records
    that. Those sessions are the change itself: they must not widen the threshold, neither before the next
    `calibrate` nor after it, until most of the history is the new machine and the level has moved to it."""
    steady = [0.5, -0.5, 0.3, -0.2, 0.1, 0.0, -0.3, 0.2, 0.4, -0.1]
    doc = calibrated_as_now(with_sessions(steady))
    assert drift_threshold_pct(wander_pct(doc)) == 3.0
    for k in range(len(steady)):  # up to half of the history at the new speed
        record_level(doc, "check", 8.0 + (0.3 if k % 2 else -0.3), 14, DEVICE, created=hour(100 + k))
        assert drift_threshold_pct(wander_pct(doc)) == 3.0  # not calibrated since
        recalibrated = calibrated_as_now(doc)  # and a daily calibrate meanwhile
        level = recalibrated["calibration"]["level"]
        assert drift_threshold_pct(wander_pct(recalibrated)) == 3.0
        drift = 100.0 * (1.08 / level - 1.0)  # what a check then measures against the table's answers
        assert verdict_of([], [drift, drift], drift_threshold_pct(wander_pct(recalibrated))) == "stale"
    for k in range(3):  # most of the history at the new speed: the level has moved, the table holds again
        record_level(doc, "check", 8.0, 14, DEVICE, created=hour(200 + k))
    moved = calibrated_as_now(doc)
    assert moved["calibration"]["level"] == pytest.approx(1.08, abs=0.004)
    assert verdict_of([], [0.2, -0.1], drift_threshold_pct(wander_pct(moved))) == "holds"


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


def test_calibrate_stores_the_median_hour_level(tmp_path: Path):
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
    for k, level in enumerate((4.0, 5.0, 6.0, -1.0)):
        record_level(doc, "check", level, 14, DEVICE, created=hour(100 + k))
    path = tmp_path / "t.json"
    write_table(path, doc)
    stored = calibrate_table(path)
    assert stored["form"] == "none"  # the level-normalised models match the cells
    assert stored["level"] == pytest.approx(1.04) and stored["level_sessions"] == 5
    assert stored["level_spread_pct"] == pytest.approx(level_spread_pct(read_table(path)), abs=1e-3)
    only_sweep = tmp_path / "sweep-only.json"
    write_table(only_sweep, read_table(path) | {"levels": None, "validation": doc["validation"] | {"level": None}})
    assert {"level", "level_sessions", "level_spread_pct"}.isdisjoint(calibrate_table(only_sweep))
    served = LatencyTable.load(path)
    for m in models:
        assert served.model_latency(m) == pytest.approx(1.04 * raw.model_latency(m), rel=1e-4)


def test_a_validation_from_before_the_history_counts_once():
    """A table validated before it kept sessions still has that validation's level; recorded, it is not counted
    twice."""
    validation = {"created": hour(5), "device": DEVICE, "level": {"median_pct": -3.0}}
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
    now = with_sessions([1.0], first_hour=3)  # the table as it is when the validation ends: a check meanwhile
    now["validation"] = {"created": hour(1), "device": DEVICE, "level": {"median_pct": -3.0}}
    doc = with_validation(now, _result(hour(4), 2.0), DEVICE)
    assert [s["level_pct"] for s in doc["levels"]] == [-3.0, 1.0, 2.0]  # the replaced one kept, all in time order
    assert doc["validation"]["created"] == hour(4)
    assert typical_level(doc) == (pytest.approx(1.01**0.5), 4)  # -3, 0, +1, +2
    forced = with_validation(with_sessions([1.0]), _result(hour(5), 9.0, forced=True), DEVICE)
    assert [s["level_pct"] for s in forced["levels"]] == [1.0]  # forced past a mismatch: not this machine's level


def test_a_validation_is_stored_into_the_table_as_it_is_on_disk_when_it_ends(tmp_path: Path):
    path = tmp_path / "t.json"
    doc = make_table_v2()
    write_table(path, doc)  # what validate read when it began
    meanwhile = read_table(path)
    record_level(meanwhile, "check", 1.5, 14, "Test CPU", created=hour(2))
    write_table(path, meanwhile)  # a `check --record` while the validation ran
    store_validation(path, _result(hour(3), -1.0) | {"device": "Test CPU"}, "Test CPU")
    stored = read_table(path)
    assert [s["level_pct"] for s in stored["levels"]] == [1.5, -1.0]
    assert stored["validation"]["created"] == hour(3)


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


def test_the_range_a_stale_check_compares_with_is_of_the_sessions_the_calibration_saw():
    doc = with_sessions([-4.0, 2.0, 6.0, -1.0])  # hours 1-4; the sweep's 0 makes five
    assert calibrated_level_range_pct(doc) == (pytest.approx(-4.0), pytest.approx(6.0), 5)
    foreign = with_sessions([30.0], device="Other CPU", first_hour=5)
    doc["levels"] += foreign["levels"]  # another device's session says nothing about this one
    assert calibrated_level_range_pct(doc)[1] == pytest.approx(6.0)
    doc["calibration"] = {"fitted": {"created": hour(4)}}
    record_level(doc, "check", -16.0, 14, DEVICE, created=hour(6))  # after the calibration: a changed machine
    assert calibrated_level_range_pct(doc) == (pytest.approx(-4.0), pytest.approx(6.0), 5)
    del doc["calibration"]
    assert calibrated_level_range_pct(doc) == (pytest.approx(-16.0), pytest.approx(6.0), 6)
    assert calibrated_level_range_pct(with_sessions([-4.0, 2.0, 6.0])) is None  # four sessions say too little
