"""Models measured by validations accumulate for `calibrate`, whether or not it ran between the validations."""

from __future__ import annotations

import pytest

from profiler.calibration_points import model_points, uncalibrated_models, validations_used
from profiler.validate import with_validation
from tests.table_factory import make_table_v2

MODEL = {"emb": 64, "blocks": [{"heads": 1, "qk": 8, "v": 8, "mlp": 32}]}


def _validation(created: str, count: int, forced: bool = False) -> dict:
    return {
        "created": created,
        "forced": forced,
        "model_points": [
            {"dims": MODEL, "measured_ms": 1.0 + i, "predicted_ms": 1.0, "level_normalised_ms": 2.0 + i}
            for i in range(count)
        ],
    }


def test_models_of_replaced_validations_are_carried_until_a_calibration_uses_them():
    doc = make_table_v2()
    with_validation(doc, _validation("2026-01-01T00:00:00Z", 3), "cpu")
    with_validation(doc, _validation("2026-01-02T00:00:00Z", 3), "cpu")
    assert [p["validation"] for p in doc["validation"]["pending_models"]] == ["2026-01-01T00:00:00Z"] * 3
    points = model_points(doc)
    assert len(points) == 6  # three carried, three of the latest: enough for a fit, which needs six
    assert [p["measured_ms"] for p in points] == [2.0, 3.0, 4.0, 2.0, 3.0, 4.0]  # level-normalised where given
    assert validations_used(doc) == ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]

    # after a calibrate used them, a new validation carries nothing more
    doc["calibration"] = {"fitted": {"points": points, "validations": validations_used(doc)}}
    with_validation(doc, _validation("2026-01-03T00:00:00Z", 2), "cpu")
    assert "pending_models" not in doc["validation"]
    assert len(model_points(doc)) == 8 and validations_used(doc)[-1] == "2026-01-03T00:00:00Z"


def test_a_validation_forced_on_another_device_contributes_no_models():
    doc = make_table_v2()
    with_validation(doc, _validation("2026-01-01T00:00:00Z", 3, forced=True), "other")
    with_validation(doc, _validation("2026-01-02T00:00:00Z", 1), "cpu")
    assert uncalibrated_models(doc) == [{"dims": MODEL, "measured_ms": 2.0, "validation": "2026-01-02T00:00:00Z"}]


def test_no_models_is_a_clear_error():
    with pytest.raises(ValueError, match="no measured whole models to calibrate on"):
        model_points(make_table_v2())


def test_models_of_a_validation_without_a_date_are_used_once():
    doc = make_table_v2()
    doc["validation"] = {k: v for k, v in _validation("x", 6).items() if k != "created"}
    for fits in (1, 2):
        points = model_points(doc)
        doc["calibration"] = {"fitted": {"points": points, "validations": validations_used(doc)}}
        assert len(points) == 6, fits
