"""The transfer draws its runs where the table is asked, and its ratio fit recovers a known ratio, keeps it flat, and
is not pulled by runs a burst of load slowed."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from lut_server.latency_table import LatencyTable
from profiler.transfer import MODEL_EVERY, plan_transfer
from profiler.transfer_fit import apply_ratio, fit_ratio, ratio_features
from tests.table_factory import make_table

GRID = {
    "emb": [32, 64, 128, 256, 384, 512, 768],
    "heads": [1, 2, 3, 4, 6, 8, 10, 12],
    "qk": [8, 16, 24, 32, 48, 64],
    "v": [8, 16, 24, 32, 48, 64],
    "mlp": [16, 256, 512, 1024, 1536, 2048, 2560, 3072],
}


def test_plan_draws_lattice_pairs_of_one_emb_and_whole_models_for_calibration():
    source = LatencyTable(make_table(GRID), "source")
    plan = plan_transfer(source, 100, random.Random(3))
    assert len(plan.runs) + len(plan.models) == 100 and len(plan.models) == 100 // MODEL_EVERY
    assert all(a.emb == b.emb for a, b in plan.runs)
    blocks = [b for run in plan.runs for b in run]
    assert all(b.emb % 16 == 0 and b.mlp % 16 == 0 and b.qk % 8 == 0 and b.v % 8 == 0 for b in blocks)
    for axis in ("emb", "heads", "qk", "v", "mlp"):
        values = [getattr(b, axis) for b in blocks]
        assert GRID[axis][0] <= min(values) and max(values) <= GRID[axis][-1]
        assert len(set(values)) > len(GRID[axis]) // 2, axis  # spread over the lattice, not stuck at corners
    assert all(m.depth == 12 for m in plan.models)
    assert plan_transfer(source, 100, random.Random(3)) == plan  # the seed decides
    small = plan_transfer(source, 40, random.Random(0))  # 4 models could not calibrate: all runs
    assert len(small.runs) == 40 and small.models == []
    with pytest.raises(ValueError, match="budget"):
        plan_transfer(source, 0, random.Random(0))
    with pytest.raises(ValueError, match="budget must be >= 2 for this table"):  # before any timing, not after
        plan_transfer(source, 1, random.Random(0))


def test_fit_recovers_a_smooth_ratio_and_apply_scales_every_cell():
    def true_ratio(emb, heads, qk):  # faster at large widths, a bend in heads
        return 0.8 * (emb / 256) ** -0.1 * math.exp(0.05 * math.log(heads) ** 2) * (qk / 32) ** 0.03

    rng = np.random.default_rng(0)
    cells = list(itertools.product(GRID["emb"], GRID["heads"], GRID["qk"]))
    picked = [cells[i] for i in rng.choice(len(cells), 60, replace=False)]
    fit = fit_ratio(GRID, "attn_qk", [(c, true_ratio(*c)) for c in picked])
    assert fit["ridge"] != "constant" and fit["loo_mae_pct"] < 2.0
    shape = (len(GRID["emb"]), len(GRID["heads"]), len(GRID["qk"]))
    doc = {"grid": GRID, "parts": {"attn_qk": {"axes": ["emb", "heads", "qk"], "median_ms": np.ones(shape).tolist()}}}
    apply_ratio(doc, "attn_qk", fit["coef"])
    scaled = np.array(doc["parts"]["attn_qk"]["median_ms"])
    truth = np.array([[[true_ratio(e, h, q) for q in GRID["qk"]] for h in GRID["heads"]] for e in GRID["emb"]])
    cell_errors = np.abs(scaled / truth - 1)
    assert np.median(cell_errors) < 0.01
    assert np.max(cell_errors) < 0.07  # the worst cells are corners no measurement is near: (768, 1, 8)
    assert ratio_features(GRID, "mlp", (32, 16))[1:3].tolist() == [-1.0, -1.0]  # log widths scaled to [-1, 1]


def test_noise_around_a_constant_ratio_keeps_the_ratio_flat():
    rng = np.random.default_rng(1)
    cells = list(itertools.product(GRID["emb"], GRID["mlp"]))
    points = [(cells[i], 0.7 * math.exp(rng.normal(0, 0.12))) for i in rng.integers(0, len(cells), 60)]
    fit = fit_ratio(GRID, "mlp", points)
    assert fit["ridge"] == "constant"  # 12% noise and no shape: a curve would fit the noise
    assert fit["coef"][1:] == [0.0] * (len(fit["coef"]) - 1)
    assert math.exp(fit["coef"][0]) == pytest.approx(0.7, rel=0.05)
    by_ridge = fit["loo_mae_pct_by_ridge"]
    assert fit["loo_mae_pct"] == by_ridge["constant"] <= 1.05 * min(by_ridge.values())  # within noise of the best


def test_runs_slowed_by_bursts_do_not_pull_the_ratio():
    rng = np.random.default_rng(2)
    cells = list(itertools.product(GRID["emb"], GRID["mlp"]))
    points = []
    for i in rng.integers(0, len(cells), 180):
        ratio = 0.9 * math.exp(rng.normal(0, 0.03))
        if rng.random() < 0.25:  # a quarter of the runs ran in a burst: 15-40% slower, never faster
            ratio *= rng.uniform(1.15, 1.4)
        points.append((cells[i], ratio))
    fit = fit_ratio(GRID, "mlp", points)
    assert fit["ridge"] == "constant"
    assert math.exp(fit["coef"][0]) == pytest.approx(0.9, rel=0.02)
    assert fit["mean_ratio"] > 0.9 * 1.05  # what a least-squares fit in log space would have answered
