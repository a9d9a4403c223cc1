"""The point-by-point path the server's small queries take gives the same numbers as the vectorised scipy path."""

from __future__ import annotations

import numpy as np

from lut_server.dims import AXES
from lut_server.latency_table import SMALL_QUERY_POINTS, LatencyTable
from tests.table_factory import make_table

GRID = {"emb": [32, 96, 100, 768], "heads": [1, 3, 12], "qk": [8, 64], "v": [8, 16, 64], "mlp": [16, 700, 3072]}


def test_small_queries_equal_the_scipy_path_inside_and_outside_the_grid() -> None:
    table = LatencyTable(make_table(GRID))
    rng = np.random.default_rng(7)
    lo = np.array([1.0] * len(AXES))  # below the grid: the deltas' linear extrapolation from the edge cell
    hi = np.array([max(GRID[a]) for a in AXES], dtype=float)
    points = rng.uniform(lo, hi, size=(400, len(AXES)))
    points[:50] = np.array([[rng.choice(GRID[a]) for a in AXES] for _ in range(50)])  # exact grid points
    for part in table._parts.values():
        columns = {a: points[:, i] for i, a in enumerate(AXES)}
        vectorised = part(columns)  # 400 points: one scipy call
        assert len(points) > SMALL_QUERY_POINTS
        one_by_one = np.concatenate([part({a: points[k : k + 1, i] for i, a in enumerate(AXES)}) for k in range(400)])
        np.testing.assert_allclose(one_by_one, vectorised, rtol=1e-13, atol=0)


def test_block_latency_agrees_across_query_sizes() -> None:
    table = LatencyTable(make_table(GRID))
    rng = np.random.default_rng(3)
    rows = np.column_stack([rng.integers(min(GRID[a]), max(GRID[a]) + 1, size=64) for a in AXES]).astype(float)
    together = table.block_latency(rows)
    alone = np.concatenate([table.block_latency(rows[k : k + 1]) for k in range(len(rows))])
    np.testing.assert_allclose(alone, together, rtol=1e-13, atol=0)
