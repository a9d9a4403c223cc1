"""The check's verdict: a differing fingerprint wins; a table is stale only when every pass drifted beyond the floor
and the machine's recorded wander on the same side."""

from __future__ import annotations

import numpy as np
import pytest

from lut_server.dims import BlockDims
from profiler.check import CheckPoint, drift_threshold_pct, pass_drifts_pct, verdict_of, wander_pct

DIMS = BlockDims(emb=64, heads=2, qk=16, v=16, mlp=128)


def test_fingerprint_mismatch_is_different_whatever_the_drift():
    assert verdict_of(["device.cpu.family: table 25, here 26"], [0.0, 0.0], 3.0) == "different"


@pytest.mark.parametrize(
    ("passes", "wander", "verdict"),
    [([2.0, 2.5], 0.0, "holds"), ([-3.5, -3.4], 0.0, "stale"), ([6.0, 7.0], 7.5, "holds"), ([9.0, 8.0], 7.5, "stale"),
     ([-67.0, -40.0], 0.0, "stale"),  # a table three times too slow, on a machine whose passes differ by 80%
     ([40.0, 1.0], 0.0, "holds"),  # a burst of load during one pass
     ([-20.0, 20.0], 0.0, "holds")],  # passes that disagree on the side
)  # fmt: skip
def test_stale_needs_every_pass_beyond_the_floor_or_the_recorded_wander_on_one_side(passes, wander, verdict):
    assert verdict_of([], passes, drift_threshold_pct(wander)) == verdict


def test_drift_is_judged_as_a_ratio_so_too_fast_and_too_slow_by_one_factor_agree():
    threshold = drift_threshold_pct(50.0)  # the table may be off by a factor of 1.5 either way
    assert verdict_of([], [100 * (1 / 1.49 - 1)] * 2, threshold) == "holds"  # 32.9% faster
    assert verdict_of([], [100 * (1 / 1.51 - 1)] * 2, threshold) == "stale"  # 33.8% faster
    assert verdict_of([], [49.0, 49.0], threshold) == "holds"
    assert verdict_of([], [51.0, 51.0], threshold) == "stale"


def test_each_pass_drift_is_a_median_over_points_so_one_burst_does_not_move_it():
    points = [
        CheckPoint(DIMS, 10.0, (12.0, 10.0)),
        CheckPoint(DIMS, 5.0, (6.0, 5.0)),
        CheckPoint(DIMS, 2.0, (2.4, 9.0)),
    ]
    first, second = pass_drifts_pct(points)
    assert first == pytest.approx(20.0)
    assert second == pytest.approx(0.0)  # the 4.5x burst on the last point is outvoted


def test_wander_is_a_high_percentile_of_the_references_departures_from_their_median():
    series = (10.0, 10.5, 11.0, 9.5, 10.2, 10.2, 10.1, 9.9, 10.3, 14.0)  # one burst of load at the end
    doc = {"sweep": {"reference": {"series": [{"median_ms": v} for v in series]}}}
    departures = sorted(100 * abs(v - 10.2) / 10.2 for v in series)
    assert wander_pct(doc) == pytest.approx(float(np.percentile(departures, 90)))
    assert wander_pct(doc) < 100 * (14.0 - 10.2) / 10.2  # the burst alone does not set it
    short = {"sweep": {"reference": {"series": [{"median_ms": 5.0}, {"median_ms": 9.0}]}}}
    assert wander_pct(short) == 0.0  # two re-times say nothing about wander
    assert wander_pct({"sweep": None}) == 0.0


def _validation(levels: list[float], device: str = "cpu-a") -> dict:
    blocks = [{"measured_ms": 2.0 + k / 10, "level_normalised_ms": (2.0 + k / 10) / lv} for k, lv in enumerate(levels)]
    unlevelled = [{"measured_ms": 3.0, "predicted_ms": 2.0}]  # a point without level tracking adds nothing
    return {"device": device, "blocks": blocks + unlevelled, "model_points": []}


STEADY_SWEEP = {"reference": {"series": [{"median_ms": v} for v in (10.0, 10.1, 9.9, 10.0, 10.05, 9.95)]}}


def test_a_validation_that_saw_the_machine_wander_widens_the_threshold():
    """The sweep saw a steady machine; a validation later saw its speed swing by about 8% around its middle: that
    is the machine's wander as the table recorded it, and the threshold follows it."""
    steady = {"device": {"name": "cpu-a"}, "sweep": STEADY_SWEEP}
    swinging = {**steady, "validation": _validation([1.0, 1.08, 0.92, 1.0, 1.09, 0.91, 1.0, 1.0, 1.08, 0.92])}
    assert wander_pct(steady) <= 1.0 + 1e-9
    assert 7.0 < wander_pct(swinging) <= 9.0
    assert verdict_of([], [7.0, 6.5], drift_threshold_pct(wander_pct(steady))) == "stale"
    assert verdict_of([], [7.0, 6.5], drift_threshold_pct(wander_pct(swinging))) == "holds"
    assert verdict_of([], [-30.0, -25.0], drift_threshold_pct(wander_pct(swinging))) == "stale"


def test_an_offset_the_validation_found_is_drift_and_does_not_excuse_itself():
    """Validated while the machine ran a steady 9% slower than the cells: that offset is what `check` calls drift,
    so validating the stale table again must not raise the threshold to cover it."""
    doc = {"device": {"name": "cpu-a"}, "sweep": STEADY_SWEEP, "validation": _validation([1.09, 1.091, 1.089] * 4)}
    assert wander_pct(doc) <= 1.0 + 1e-9
    assert verdict_of([], [9.0, 9.2], drift_threshold_pct(wander_pct(doc))) == "stale"


def test_a_validation_forced_on_another_device_says_nothing_about_this_ones_wander():
    swinging = [1.0, 1.3, 0.7, 1.0, 1.3, 0.7, 1.0, 1.3]
    here = {"device": {"name": "cpu-a"}, "sweep": STEADY_SWEEP, "validation": _validation(swinging)}
    forced = {**here, "validation": _validation(swinging, device="cpu-b")}
    assert wander_pct(here) > 20.0
    assert wander_pct(forced) <= 1.0 + 1e-9


def test_the_report_of_a_stale_table_says_why_and_what_to_do():
    from profiler.check import format_report

    stale = {
        "table": "t.json",
        "device": {"table": "cpu", "here": "cpu"},
        "fingerprint": {"device": {}, "software": {}},
        "mismatches": [],
        "points": [],
        "drift_pct": None,
        "verdict": "stale",
        "exit_code": 3,
        "next": "python -m profiler profile --from t.json --budget 100 --out t-here.json",
    }
    report = format_report(stale).splitlines()
    assert report[-3] == "verdict stale (exit 3)"
    assert report[-2].startswith("why     ") and "check again in a while" in report[-2]
    assert report[-1] == "next    python -m profiler profile --from t.json --budget 100 --out t-here.json"
    assert not any(line.startswith("why") for line in format_report({**stale, "verdict": "holds", "exit_code": 0,
                                                                      "next": None}).splitlines())  # fmt: skip


@pytest.mark.parametrize(("level", "evidence"), [(-16.3, "lies outside all 21 sessions"), (-4.0, "can be a slow hour")])
def test_a_stale_report_says_whether_this_level_is_one_the_sessions_reached(level: float, evidence: str):
    from profiler.check import stale_reason

    sessions = {"count": 22, "typical_level_pct": 1.3, "range_pct": [-5.14, 8.77], "range_count": 21}
    result = {"level_pct": level, "sessions": sessions}
    reason = stale_reason(result)
    assert evidence in reason and "-5.14% … +8.77%" in reason and f"{level:+.2f}%" in reason
    assert "check again" in reason and "re-derive" in reason
    assert "slow hour" not in stale_reason({"level_pct": level, "sessions": {**sessions, "range_pct": None}})


def test_a_table_that_holds_on_one_pass_says_why_the_median_beyond_the_threshold_did_not_make_it_stale():
    from profiler.check import format_report, verdict_of

    result = {
        "table": "t.json",
        "device": {"table": "cpu", "here": "cpu"},
        "fingerprint": {"device": {}, "software": {}},
        "mismatches": [],
        "points": [],
        "drift_pct": 13.58,
        "pass_drift_pct": [14.9, 4.1],
        "noise_pct": 1.9,
        "wander_pct": 9.28,
        "threshold_pct": 9.28,
        "level_pct": 11.0,
        "table_level_pct": -2.25,
        "sessions": {"count": 38, "typical_level_pct": -2.25},
        "verdict": verdict_of([], [14.9, 4.1], 9.28),
        "exit_code": 0,
        "next": None,
    }
    assert result["verdict"] == "holds"
    why = [line for line in format_report(result).splitlines() if line.startswith("why")]
    assert why and "pass +4.10% lay within it" in why[0] and "check again" in why[0]
    level = [line for line in format_report(result).splitlines() if line.startswith("level")]
    assert level and "(sessions: 38, median -2.25%)" in level[0]
    in_hours = {**result, "sessions": {"count": 38, "hours": 10, "typical_level_pct": -1.1}}
    assert "(sessions: 38 in 10 hours, median -1.10%)" in format_report(in_hours)
    both_sides = {**result, "pass_drift_pct": [14.9, -12.0], "verdict": verdict_of([], [14.9, -12.0], 9.28)}
    assert both_sides["verdict"] == "holds"
    assert "both sides" in format_report(both_sides)
    within = {**result, "drift_pct": 5.0, "pass_drift_pct": [4.0, 6.0]}
    assert not any(line.startswith("why") for line in format_report(within).splitlines())
    assert verdict_of([], [14.9, 10.0], 9.28) == "stale" and verdict_of([], [-9.0, -10.0], 9.28) == "stale"
