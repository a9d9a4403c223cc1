"""Sweep cells are divided by the machine's level when each run was measured, so a slow minute leaves no dent."""

from __future__ import annotations

import numpy as np
import pytest

from profiler.grids import GridSpec
from profiler.sweep import derive_parts, mlp_index, record_levels

GRID = {"emb": [16, 32], "heads": [1], "qk": [8, 16], "v": [8, 16], "mlp": [16, 32]}
PARTS = ("attn_qk", "attn_v", "mlp")


def true_ms(part: str, ie: int, ix: int, im: int) -> float:
    return {"attn_qk": 1.0 + ie + 0.5 * ix, "attn_v": 2.0 + ie + 0.25 * ix, "mlp": 3.0 + ie + im}[part]


def sweep_doc(slowdown: list[float], series: list[tuple[int, float]]) -> dict:
    """Four runs in order; run k measured while the machine ran `slowdown[k]` times slower than usual."""
    spec = GridSpec(GRID, PARTS)
    records = []
    for k, (ie, ix) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        im = mlp_index(spec, (ie, 0, ix))
        values = {p: true_ms(p, ie, ix, im) * slowdown[k] for p in PARTS}
        records.append({"combo": [ie, 0, ix], "pass": 0, "unit": k, "median_ms": values, "p10_ms": values,
                        "p90_ms": values, "samples": 5})  # fmt: skip
    reference = {"series": [{"units_done": u, "median_ms": ms} for u, ms in series]}
    return {"grid": GRID, "sweep": {"parts": list(PARTS), "records": records, "reference": reference}}


def cells(doc: dict, part: str) -> np.ndarray:
    return np.array(doc["parts"][part]["median_ms"], dtype=float)


def test_cells_measured_in_a_slow_minute_are_brought_to_the_sweeps_level():
    # The reference pair (10 ms at the usual speed) took 15 ms during the last two runs: 1.5x slower.
    doc = sweep_doc([1.0, 1.0, 1.5, 1.5], [(0, 10.0), (1, 10.0), (2, 15.0), (3, 15.0), (4, 15.0)])
    levels = record_levels(doc)
    assert levels == pytest.approx([10 / 15, 10 / 15, 1.0, 1.0])  # relative to the median re-time, 15 ms
    derive_parts(doc)
    assert doc["sweep"]["level_normalised"] is True
    spec = GridSpec(GRID, PARTS)
    for ie in range(2):
        for ix in range(2):
            im = mlp_index(spec, (ie, 0, ix))
            # every cell at the 15 ms level: the fast runs scaled up by 1.5, the slow ones kept
            assert cells(doc, "attn_qk")[ie, 0, ix] == pytest.approx(1.5 * true_ms("attn_qk", ie, ix, im))
            assert cells(doc, "mlp")[ie, im] == pytest.approx(1.5 * true_ms("mlp", ie, ix, im))
    assert doc["sweep"]["records"][0]["median_ms"]["attn_qk"] == true_ms("attn_qk", 0, 0, 0)  # records stay raw


def test_without_enough_reference_times_or_positions_the_cells_are_the_raw_records():
    few = sweep_doc([1.0, 1.0, 1.5, 1.5], [(0, 10.0), (4, 15.0)])
    assert record_levels(few) is None
    derive_parts(few)
    assert few["sweep"]["level_normalised"] is False
    assert cells(few, "attn_qk")[1, 0, 0] == pytest.approx(1.5 * true_ms("attn_qk", 1, 0, 0))
    merged = sweep_doc([1.0] * 4, [(0, 10.0), (1, 10.0), (2, 10.0)])
    for record in merged["sweep"]["records"]:
        del record["unit"]  # merged shards: positions from different processes
    assert record_levels(merged) is None
