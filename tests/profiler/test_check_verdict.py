"""The check's verdict: a differing fingerprint wins; drift counts only beyond noise and the profiling's own wander."""

from __future__ import annotations

import numpy as np
import pytest

from profiler.check import drift_threshold_pct, profiling_wander_pct, verdict_of


def test_fingerprint_mismatch_is_different_whatever_the_drift():
    assert verdict_of(["device.cpu.family: table 25, here 26"], 0.0, 3.0) == "different"


@pytest.mark.parametrize(
    ("drift", "noise", "wander", "verdict"),
    [(2.0, 0.5, 0.0, "holds"), (-3.5, 0.5, 0.0, "stale"), (-3.5, 2.0, 0.0, "holds"), (6.0, 1.0, 7.5, "holds"),
     (9.0, 1.0, 7.5, "stale")],
)  # fmt: skip
def test_drift_is_judged_against_floor_noise_and_wander(drift, noise, wander, verdict):
    assert verdict_of([], drift, drift_threshold_pct(noise, wander)) == verdict


def test_wander_is_a_high_percentile_of_the_references_departures_from_their_median():
    series = (10.0, 10.5, 11.0, 9.5, 10.2, 10.2, 10.1, 9.9, 10.3, 14.0)  # one burst of load at the end
    doc = {"sweep": {"reference": {"series": [{"median_ms": v} for v in series]}}}
    departures = sorted(100 * abs(v - 10.2) / 10.2 for v in series)
    assert profiling_wander_pct(doc) == pytest.approx(float(np.percentile(departures, 90)))
    assert profiling_wander_pct(doc) < 100 * (14.0 - 10.2) / 10.2  # the burst alone does not set it
    short = {"sweep": {"reference": {"series": [{"median_ms": 5.0}, {"median_ms": 9.0}]}}}
    assert profiling_wander_pct(short) == 0.0  # two re-times say nothing about wander
    assert profiling_wander_pct({"sweep": None}) == 0.0
