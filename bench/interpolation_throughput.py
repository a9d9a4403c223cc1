"""Interpolation throughput: 100,000 block configs in one vectorised query vs one scipy call per config.

The per-config baseline is how NViT queries its table (a RegularGridInterpolator call per point); it uses the same
table and the same interpolators, so the ratio isolates the cost of querying one config at a time. Both sides read
the raw medians: a table's calibration is applied on top of the interpolated parts and the baseline has none.

    python -m bench.interpolation_throughput [--table tables/ID.json] [--configs 100000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from lut_server.dims import AXES
from lut_server.latency_table import LatencyTable, monotone_fit
from lut_server.table_format import BLOCK_PARTS, PART_AXES

DEFAULT_TABLE = Path(__file__).resolve().parent.parent / "tables" / "epyc-f26m2-torch-cpu-fp32-b1-t197.json"


def random_configs(table: LatencyTable, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(table.ranges[a][0], table.ranges[a][1] + 1, n) for a in AXES]).astype(float)


def per_config_scipy(table: LatencyTable, configs: np.ndarray) -> np.ndarray:
    """One interpolator call per config and part, as a pruning loop written against scipy directly does it."""
    parts = []
    for name in table.block_parts:
        axes = PART_AXES[name]
        values = monotone_fit(np.array(table.data["parts"][name]["median_ms"], dtype=float))
        interp = RegularGridInterpolator(tuple(np.asarray(table.grid[a], float) for a in axes), values)
        parts.append((interp, [AXES.index(a) for a in axes]))
    out = np.empty(len(configs))
    for i, row in enumerate(configs):
        out[i] = sum(float(interp(row[cols])[0]) for interp, cols in parts)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--configs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    table = LatencyTable.load(args.table, calibrated=False)
    assert set(table.block_parts) <= set(BLOCK_PARTS)
    configs = random_configs(table, args.configs)

    vector_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        vectorised = table.block_latency(configs)
        vector_times.append(time.perf_counter() - start)
    vector_s = float(np.median(vector_times))

    start = time.perf_counter()
    baseline = per_config_scipy(table, configs)
    baseline_s = time.perf_counter() - start
    np.testing.assert_allclose(vectorised, baseline, rtol=1e-9)  # same answers, or the comparison means nothing

    result = {
        "table": args.table.name,
        "configs": args.configs,
        "vectorised_s": round(vector_s, 4),
        "vectorised_configs_per_s": round(args.configs / vector_s),
        "per_config_scipy_s": round(baseline_s, 2),
        "per_config_configs_per_s": round(args.configs / baseline_s),
        "speedup": round(baseline_s / vector_s, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
