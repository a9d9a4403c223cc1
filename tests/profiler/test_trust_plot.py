"""`profiler plot`: the figure draws the table's own records (its validation's errors, the answers it serves now,
its sessions' levels and the band where `check` holds), and refuses a table with nothing to draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import write_table
from profiler.check import verdict_of
from profiler.cli import main
from profiler.level_history import record_level
from profiler.trust_plot import holds_band_pct, plot_table, signed_error_pct, trust_figures
from tests.table_factory import calibration, make_table_v2

VALIDATED = "2026-01-03T00:00:00Z"
BLOCK_ERRORS = np.array([-4.0, -1.0, 0.5, 2.0, 6.0])
"""Percent by which each validated block was predicted above its measurement."""


def validated_table(fitted_on_it: bool) -> dict:
    doc = make_table_v2()
    raw = LatencyTable(doc, "t", calibrated=False)
    blocks = [BlockDims(emb=96 + 16 * i, heads=2 + i % 2, qk=16, v=24, mlp=128 + 64 * i) for i in range(5)]
    predicted = raw.block_latency(blocks)
    measured = predicted / (1 + BLOCK_ERRORS / 100)
    models = [ModelDims.from_blocks([b, b, b]) for b in blocks[:3]]
    doc["validation"] = {
        "created": VALIDATED,
        "seed": 7,
        "median_ape_pct": 2.0,
        "p95_ape_pct": 5.6,
        "bar": {"median_ape_pct_max": 3.0, "p95_ape_pct_max": 10.0},
        "blocks": [
            b.as_dict() | {"measured_ms": m, "predicted_ms": p}
            for b, m, p in zip(blocks, measured, predicted, strict=True)
        ],
        "model_points": [
            {"dims": m.as_dict(), "measured_ms": 1.03 * raw.model_latency(m), "predicted_ms": raw.model_latency(m)}
            for m in models
        ],
    }
    doc["calibration"] = calibration({"attn_qk": 1.1, "attn_v": 1.1, "mlp": 1.1, "stem": 1.0, "head": 1.0})
    doc["calibration"]["fitted"]["validations"] = [VALIDATED] if fitted_on_it else ["2026-01-02T00:00:00Z"]
    for hour, level in ((5, 2.0), (1, -3.0)):  # recorded out of order: drawn in time order
        record_level(doc, "check", level, 14, doc["device"]["name"], created=f"2026-01-04T{hour:02d}:00:00Z")
    record_level(doc, "check", 40.0, 14, "Another CPU", created="2026-01-04T03:00:00Z")  # not this table's device
    return doc


def test_the_figures_are_the_validation_as_recorded_and_the_answers_served_now():
    doc = validated_table(fitted_on_it=False)
    figures = trust_figures(doc, "t")
    assert signed_error_pct(figures.block_predicted_ms, figures.block_measured_ms) == pytest.approx(BLOCK_ERRORS)
    assert figures.block_bar_pct == 3.0
    served = LatencyTable(doc, "t")
    models = [ModelDims.from_dict(m["dims"]) for m in doc["validation"]["model_points"]]
    assert figures.model_served_ms == pytest.approx([served.model_latency(m) for m in models])
    assert not np.allclose(figures.model_served_ms, figures.model_raw_ms)  # the calibration moves the answers
    assert signed_error_pct(figures.model_raw_ms, figures.model_measured_ms) == pytest.approx([100 / 1.03 - 100] * 3)
    assert not figures.served_saw_models
    assert trust_figures(validated_table(fitted_on_it=True), "t").served_saw_models
    assert [(s.source, s.level_pct) for s in figures.sessions] == [("sweep", 0.0), ("check", -3.0), ("check", 2.0)]
    assert "seed 7" in figures.validation_note and VALIDATED in figures.validation_note
    assert (figures.answers_at_pct, figures.threshold_pct) == (0.0, 3.0)  # no level, no recorded wander: the floor


def test_the_band_follows_the_calibrations_level_and_spread():
    doc = validated_table(fitted_on_it=False)
    doc["calibration"] |= {"level": 1.04, "level_sessions": 9, "level_spread_pct": 7.0}
    figures = trust_figures(doc, "t")
    assert figures.answers_at_pct == pytest.approx(4.0)
    assert figures.threshold_pct == pytest.approx(7.0)
    assert holds_band_pct(figures.answers_at_pct, figures.threshold_pct) == pytest.approx((104 / 1.07 - 100, 11.28))


def test_the_answers_drawn_are_the_tables_now_not_those_recorded_at_validation():
    doc = validated_table(fitted_on_it=False)
    for block in doc["validation"]["blocks"]:
        block["predicted_ms"] *= 2  # as if the table had been read otherwise when it was validated
    figures = trust_figures(doc, "t")
    assert signed_error_pct(figures.block_predicted_ms, figures.block_measured_ms) == pytest.approx(BLOCK_ERRORS)


def test_an_uncalibrated_table_has_no_served_series():
    doc = validated_table(fitted_on_it=False)
    del doc["calibration"]
    figures = trust_figures(doc, "t")
    assert figures.model_served_ms is None
    assert figures.answers_at_pct == 0.0


@pytest.mark.parametrize(("answers_at", "threshold"), [(0.0, 3.0), (2.5, 6.0), (-4.0, 4.5)])
def test_the_band_drawn_is_where_check_says_holds(answers_at: float, threshold: float):
    low, high = holds_band_pct(answers_at, threshold)
    for level, inside in ((low + 0.05, True), (high - 0.05, True), (low - 0.05, False), (high + 0.05, False)):
        drift = 100.0 * ((1 + level / 100) / (1 + answers_at / 100) - 1)
        assert verdict_of([], [drift, drift], threshold) == ("holds" if inside else "stale"), level


def test_plot_writes_a_png_and_leaves_no_temporary_file(tmp_path: Path):
    table = tmp_path / "t.json"
    write_table(table, validated_table(fitted_on_it=False))
    out = plot_table(table, tmp_path / "figs" / "t.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 1000 and image.height > 300
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.png"]


def test_the_command_prints_the_path_and_refuses_what_it_cannot_draw(tmp_path: Path, capsys):
    table = tmp_path / "t.json"
    write_table(table, validated_table(fitted_on_it=False))
    assert main(["plot", str(table), "--out", str(tmp_path / "x.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.png")
    assert main(["plot", str(table), "--out", str(tmp_path / "x.svg")]) == 2
    assert "--out must name a .png file" in capsys.readouterr().err
    bare = tmp_path / "bare.json"
    write_table(bare, make_table_v2())
    assert main(["plot", str(bare)]) == 2
    assert "holds no validation to draw" in capsys.readouterr().err
    broken = validated_table(fitted_on_it=False)
    del broken["validation"]["blocks"][0]["measured_ms"]
    write_table(bare, broken)
    assert main(["plot", str(bare)]) == 2
    assert "lacks its dims or measurement" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["plot", str(table), "--out", str(tmp_path / "a-file" / "x.png")]) == 2
    assert "cannot write" in capsys.readouterr().err
