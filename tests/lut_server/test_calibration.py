"""Whole-model calibration recovers a known bias injected into synthetic measurements and is applied on reading."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lut_server.calibration import CalibrationRow, Correction, fit_calibration, fit_form
from lut_server.dims import BlockWidths, ModelDims
from lut_server.latency_table import LatencyTable
from tests.table_factory import SMALL_GRID, make_table

TRUE_FACTORS = {"attn_qk": 1.25, "attn_v": 0.9, "mlp": 1.1, "stem": 1.0, "head": 1.0}
TRUE_MODEL_MS = 0.8


def random_models(count: int, depth: int, seed: int) -> list[ModelDims]:
    rng = random.Random(seed)
    g = SMALL_GRID
    models = []
    for _ in range(count):
        emb = rng.randint(g["emb"][0], g["emb"][-1])
        blocks = tuple(
            BlockWidths(
                rng.randint(1, g["heads"][-1]),
                rng.randint(g["qk"][0], g["qk"][-1]),
                rng.randint(g["v"][0], g["v"][-1]),
                rng.randint(g["mlp"][0], g["mlp"][-1]),
            )
            for _ in range(depth)
        )
        models.append(ModelDims(emb, blocks))
    return models


def biased_rows(table: LatencyTable, models: list[ModelDims], noise: float, seed: int) -> list[CalibrationRow]:
    rng = np.random.default_rng(seed)
    truth = Correction(TRUE_FACTORS, model_ms=TRUE_MODEL_MS)
    rows = []
    for model in models:
        parts = table.raw_part_sums(model)
        exact = truth.predict(CalibrationRow(parts, model.depth, 1.0))
        rows.append(CalibrationRow(parts, model.depth, exact * (1 + noise * rng.standard_normal())))
    return rows


def test_fit_recovers_injected_part_factors_and_constant():
    table = LatencyTable(make_table(), "synthetic", calibrated=False)
    rows = biased_rows(table, random_models(40, 12, seed=0), noise=0.0, seed=0)
    correction = fit_form("parts+constants", sorted(TRUE_FACTORS), rows, ridge=1e-6)
    for part, factor in TRUE_FACTORS.items():
        assert correction.factors[part] == pytest.approx(factor, rel=0.02), part
    # One depth cannot tell a cost per model from one per block: the constant is kept per block.
    assert correction.model_ms == 0.0
    assert 12 * correction.block_ms == pytest.approx(TRUE_MODEL_MS, rel=0.05)


def test_models_of_two_depths_separate_a_cost_per_model_from_one_per_block():
    table = LatencyTable(make_table(), "synthetic", calibrated=False)
    models = random_models(20, 12, seed=5) + random_models(20, 4, seed=6)
    truth = Correction(TRUE_FACTORS, block_ms=0.05, model_ms=TRUE_MODEL_MS)
    rows = []
    for model in models:
        parts = table.raw_part_sums(model)
        rows.append(CalibrationRow(parts, model.depth, truth.predict(CalibrationRow(parts, model.depth, 1.0))))
    correction = fit_form("parts+constants", sorted(TRUE_FACTORS), rows, ridge=1e-6)
    assert correction.model_ms == pytest.approx(TRUE_MODEL_MS, rel=0.05)
    assert correction.block_ms == pytest.approx(0.05, rel=0.05)


def test_a_constant_fitted_on_deep_models_is_shared_out_to_a_shallow_one_not_carried_whole():
    table = LatencyTable(make_table(), "synthetic", calibrated=False)
    rows = biased_rows(table, random_models(30, 12, seed=8), noise=0.0, seed=8)
    correction = fit_form("parts+constants", sorted(TRUE_FACTORS), rows, ridge=1e-6)
    shallow = random_models(1, 4, seed=9)[0]
    parts = table.raw_part_sums(shallow)
    factored = sum(TRUE_FACTORS[p] * v for p, v in parts.items())
    predicted = correction.predict(CalibrationRow(parts, shallow.depth, 1.0))
    assert predicted - factored == pytest.approx(TRUE_MODEL_MS * 4 / 12, rel=0.05)


def test_calibration_is_chosen_by_cross_validation_and_beats_the_raw_table_on_unseen_models():
    table = LatencyTable(make_table(), "synthetic", calibrated=False)
    rows = biased_rows(table, random_models(24, 12, seed=1), noise=0.005, seed=1)
    calibration = fit_calibration(rows)
    assert calibration["form"] in ("parts", "parts+constants")
    assert calibration["before"]["median_ape_pct"] > 5.0  # the injected bias
    assert calibration["after"]["median_ape_pct"] < 1.5  # leave-one-out: models the fit did not see

    doc = make_table() | {"calibration": calibration}
    calibrated, raw = LatencyTable(doc, "cal"), LatencyTable(doc, "cal", calibrated=False)
    unseen = random_models(20, 12, seed=2)
    truth = Correction(TRUE_FACTORS, model_ms=TRUE_MODEL_MS)
    exact = np.array([truth.predict(CalibrationRow(raw.raw_part_sums(m), m.depth, 1.0)) for m in unseen])
    served = np.array([calibrated.model_latency(m) for m in unseen])
    unserved = np.array([raw.model_latency(m) for m in unseen])
    assert np.median(np.abs(served - exact) / exact) < 0.01
    assert np.median(np.abs(unserved - exact) / exact) > 0.05
    summary = calibrated.summary()["calibration"]
    assert summary["form"] == calibration["form"] and summary["after"] == calibration["after"]
    assert raw.summary()["calibration"] is None


def test_group_deltas_scale_with_the_part_factor_and_constants_cancel():
    table = LatencyTable(make_table(), "synthetic", calibrated=False)
    figures = {"median_ape_pct": 1.0, "p95_ape_pct": 2.0, "max_ape_pct": 3.0}
    calibration = {"method": "test", "factors": {"mlp": 2.0}, "block_ms": 0.3, "model_ms": 5.0, "before": figures,
                   "after": figures}  # fmt: skip
    calibrated = LatencyTable(make_table() | {"calibration": calibration}, "cal")
    model = ModelDims.uniform(128, 4, heads=2, qk=16, v=16, mlp=256)
    raw_deltas, cal_deltas = table.deltas(model), calibrated.deltas(model)
    for raw_block, cal_block in zip(raw_deltas.blocks, cal_deltas.blocks, strict=True):
        assert cal_block["mlp"] == pytest.approx(2.0 * raw_block["mlp"])
        assert cal_block["heads"] == pytest.approx(raw_block["heads"])
    assert cal_deltas.total_ms == pytest.approx(calibrated.model_latency(model))


def test_too_few_models_is_a_clear_error():
    table = LatencyTable(make_table(), "synthetic", calibrated=False)
    with pytest.raises(ValueError, match="at least 6 measured models"):
        fit_calibration(biased_rows(table, random_models(3, 12, seed=3), noise=0.0, seed=3))


def test_a_uniform_bias_in_noisy_models_is_corrected_by_one_scale_not_six_parameters():
    table = LatencyTable(make_table(), "synthetic", calibrated=False)
    rng = np.random.default_rng(4)
    chosen = []
    for seed in range(16):  # ten models 8% slower than the table, with 4% noise, sixteen times over
        models = random_models(10, 12, seed=100 + seed)
        measured = [1.08 * table.model_latency(m) * (1 + 0.04 * rng.standard_normal()) for m in models]
        rows = [CalibrationRow(table.raw_part_sums(m), m.depth, ms) for m, ms in zip(models, measured, strict=True)]
        chosen.append(fit_calibration(rows)["form"])
    # The richer forms win leave-one-out by chance in about a third of these; within one standard error they lose.
    assert chosen == ["scale"] * 16, chosen


def test_one_model_timed_in_a_burst_does_not_keep_a_bias_every_other_model_shows():
    table = LatencyTable(make_table(), "synthetic", calibrated=False)
    chosen = []
    for seed in range(6):  # eleven models 4% slower than the table (1% noise), one 30% slower: a burst of load
        rng = np.random.default_rng(seed)
        models = random_models(12, 4, seed=seed)
        slower = [1.04 * (1 + 0.01 * rng.standard_normal()) for _ in models]
        slower[5] = 1.30
        rows = [
            CalibrationRow(table.raw_part_sums(m), m.depth, f * table.model_latency(m))
            for m, f in zip(models, slower, strict=True)
        ]
        calibration = fit_calibration(rows)
        chosen.append(calibration["form"])
        assert calibration["before"]["median_ape_pct"] > 3.5
        assert calibration["after"]["median_ape_pct"] < 2.0
    # Chosen by squared error, the one model outweighs the rest and all six keep the uncorrected table.
    assert chosen == ["scale"] * 6, chosen


def test_the_summary_names_the_depths_a_calibration_was_fitted_on_and_skips_malformed_points():
    from lut_server.latency_table import fitted_depths

    points = [{"dims": ModelDims.uniform(64, d, heads=2, qk=16, v=16, mlp=128).as_dict()} for d in (12, 4, 12)]
    assert fitted_depths({"fitted": {"points": points}}) == [4, 12]
    assert fitted_depths({"fitted": {"points": [*points, {}, {"dims": {"blocks": 3}}, "x"]}}) == [4, 12]
    assert fitted_depths({"fitted": {"points": [{}]}}) is None
    assert fitted_depths({"fitted": {}}) is None and fitted_depths({}) is None
