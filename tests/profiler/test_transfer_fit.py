"""The transfer's design picks informative runs, and its ratio fit recovers a known ratio surface."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from profiler.transfer import apply_ratio, choose_runs, fit_ratio, ratio_features

GRID = {
    "emb": [32, 64, 128, 256, 384, 512, 768],
    "heads": [1, 2, 3, 4, 6, 8, 10, 12],
    "qk": [8, 16, 24, 32, 48, 64],
    "v": [8, 16, 24, 32, 48, 64],
    "mlp": [16, 256, 512, 1024, 1536, 2048, 2560, 3072],
}


def test_runs_pair_two_distinct_blocks_of_one_emb_and_span_the_grid():
    runs = choose_runs(GRID, 40)
    assert len(runs) == 40
    blocks = [b for run in runs for b in run]
    assert len(set(blocks)) == len(blocks)
    assert all(a.emb == b.emb for a, b in runs)
    for axis in ("emb", "heads", "qk", "mlp"):  # D-optimal designs put points at the ends of every axis
        values = {getattr(b, axis) for b in blocks}
        assert {GRID[axis][0], GRID[axis][-1]} <= values, axis
    with pytest.raises(ValueError, match="budget"):
        choose_runs(GRID, 0)


def test_fit_recovers_a_smooth_ratio_and_apply_scales_every_cell():
    def true_ratio(emb, heads, qk):  # faster at large widths, a bend in heads
        return 0.8 * (emb / 256) ** -0.1 * math.exp(0.05 * math.log(heads) ** 2) * (qk / 32) ** 0.03

    rng = np.random.default_rng(0)
    cells = list(itertools.product(GRID["emb"], GRID["heads"], GRID["qk"]))
    picked = [cells[i] for i in rng.choice(len(cells), 60, replace=False)]
    fit = fit_ratio(GRID, "attn_qk", [(c, true_ratio(*c)) for c in picked], ridge=1e-6)
    assert fit["loo_rms_pct"] < 2.0
    shape = (len(GRID["emb"]), len(GRID["heads"]), len(GRID["qk"]))
    doc = {"grid": GRID, "parts": {"attn_qk": {"axes": ["emb", "heads", "qk"], "median_ms": np.ones(shape).tolist()}}}
    apply_ratio(doc, "attn_qk", fit["coef"])
    scaled = np.array(doc["parts"]["attn_qk"]["median_ms"])
    truth = np.array([[[true_ratio(e, h, q) for q in GRID["qk"]] for h in GRID["heads"]] for e in GRID["emb"]])
    assert np.max(np.abs(scaled / truth - 1)) < 0.03
    assert ratio_features(GRID, "mlp", (32, 16))[1:3].tolist() == [-1.0, -1.0]  # log widths scaled to [-1, 1]
