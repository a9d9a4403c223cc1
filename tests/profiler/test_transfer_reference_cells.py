"""A transferred table's reference cells are the reference pair as its re-times measured it, not the fitted ratio."""

from __future__ import annotations

import numpy as np
import pytest

from lut_server.dims import BlockDims
from profiler.machine_level import LevelledMeasurements, predicted_pair_ms
from profiler.transfer import default_budget, full_sweep_runs, measured_reference_cells, set_reference_cells
from tests.table_factory import make_table_v2

REFERENCE_STAGES = (0.5, 1.0, 0.8, 3.0, 1.2, 0.6, 3.2, 0.2)
"""stem, (attn_qk, attn_v, mlp) twice, head: 10.5 ms in all."""


def levelled(scales: list[float]) -> LevelledMeasurements:
    """Re-times of one reference pair on a machine running at `scales` of its speed, each timed as a whole."""
    stages = [tuple(s * v for v in REFERENCE_STAGES) for s in scales]
    series = [{"order": k, "median_ms": float(sum(st)), "level": float(sum(st))} for k, st in enumerate(stages)]
    return LevelledMeasurements([], [], series, len(scales), [], stages)


def test_each_re_time_is_scaled_to_the_median_level_and_the_two_blocks_are_averaged():
    parts = ["attn_qk", "attn_v", "mlp", "stem", "head"]
    cells = measured_reference_cells(levelled([0.9, 1.0, 1.3, 1.1]), 12.0, parts, with_model=True)
    scale = 12.0 / 10.5
    assert cells == pytest.approx(
        {"stem": 0.5 * scale, "attn_qk": 1.1 * scale, "attn_v": 0.7 * scale, "mlp": 3.1 * scale, "head": 0.2 * scale}
    )
    blocks_only = levelled([1.0, 1.0])
    blocks_only.reference_stages = [st[1:-1] for st in blocks_only.reference_stages]
    for s in blocks_only.series:
        s["median_ms"] = 9.8
    assert measured_reference_cells(blocks_only, 9.8, ["attn_qk", "attn_v", "mlp"], with_model=False) == (
        pytest.approx({"attn_qk": 1.1, "attn_v": 0.7, "mlp": 3.1})
    )


def test_setting_the_cells_moves_the_reference_pair_and_no_other_cell():
    doc = make_table_v2()
    reference = BlockDims(**{a: doc["grid"][a][1] for a in ("emb", "heads", "qk", "v", "mlp")})
    before = {name: np.array(entry["median_ms"], dtype=float) for name, entry in doc["parts"].items()}
    target = {name: 1.5 for name in ("attn_qk", "attn_v", "mlp")}
    replaced = set_reference_cells(doc, reference, target)
    assert set(replaced) == set(target)
    for name, entry in doc["parts"].items():
        after = np.array(entry["median_ms"], dtype=float)
        index = tuple(doc["grid"][a].index(getattr(reference, a)) for a in entry["axes"])
        if name in target:
            assert after[index] == pytest.approx(1.5)
            assert replaced[name]["fitted_ms"] == pytest.approx(before[name][index], abs=1e-6)
            changed = after != before[name]
            assert changed.sum() == 1 and changed[index]
        else:
            np.testing.assert_array_equal(after, before[name])
    with_model = {"stem", "head"} & set(doc["parts"])
    expected = 2 * 4.5 + sum(float(before[p][doc["grid"]["emb"].index(reference.emb)]) for p in with_model)
    assert predicted_pair_ms(doc, reference) == pytest.approx(expected, rel=1e-5)


def test_the_default_budget_is_a_hundred_runs_or_a_full_sweeps_on_a_small_grid():
    tiny = make_table_v2(grid={"emb": [32, 64], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [32, 64]})
    tiny["protocol"]["passes"] = 2  # 8 grid combinations, two per run: 4 runs a pass
    assert (full_sweep_runs(tiny), default_budget(tiny)) == (8, 8)
    tiny["protocol"]["passes"] = 1
    assert (full_sweep_runs(tiny), default_budget(tiny)) == (4, 4)
    wide = make_table_v2(grid={**tiny["grid"], "emb": list(range(32, 545, 32)), "heads": [1, 2, 3, 4, 6]})
    wide["protocol"]["passes"] = 2
    assert full_sweep_runs(wide) > 100 and default_budget(wide) == 100
