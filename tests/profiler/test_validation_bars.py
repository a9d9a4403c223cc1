"""The accuracy bars a validation is judged against: raw blocks, and models as the table answers them."""

from __future__ import annotations

from profiler.validate import bars


def _figures(median: float, p95: float) -> dict[str, float]:
    return {"median_ape_pct": median, "p95_ape_pct": p95, "max_ape_pct": p95}


def test_the_block_bar_widens_with_retest_noise_and_models_are_judged_calibrated():
    result = {
        **_figures(3.5, 9.0),
        "retest_noise_pct": 2.4,  # 1.5 x 2.4 = 3.6% > 3%
        "models": _figures(2.5, 6.0),  # raw models miss ...
        "models_calibrated": _figures(1.9, 4.9),  # ... the answers the table gives meet it
    }
    judged = bars(result)
    assert judged["meets_bar"] is True and judged["bar"]["median_ape_pct_max"] == 3.6
    assert judged["meets_model_bar"] is True and judged["bar"]["models"] == "calibrated"


def test_each_bar_fails_on_its_own_figure():
    quiet = {"retest_noise_pct": 1.0, "models": _figures(1.0, 5.1)}  # bar 3%; an uncalibrated table's models
    assert bars({**_figures(3.01, 5.0), **quiet})["meets_bar"] is False
    assert bars({**_figures(2.0, 10.5), **quiet})["meets_bar"] is False
    judged = bars({**_figures(2.0, 5.0), **quiet})
    assert judged["meets_bar"] is True
    assert judged["meets_model_bar"] is False and judged["bar"]["models"] == "raw"  # p95 5.1% > 5%
    assert "meets_model_bar" not in bars({**_figures(2.0, 5.0), "retest_noise_pct": 1.0, "models": None})
