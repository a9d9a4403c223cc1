"""`make bench`'s interpolation benchmark runs on its default table, which carries a calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.interpolation_throughput import DEFAULT_TABLE, main, per_config_scipy, random_configs
from lut_server.latency_table import LatencyTable


def test_default_table_is_calibrated() -> None:
    """The case the benchmark must handle: its default table's calibrated answers differ from the raw parts."""
    calibrated = LatencyTable.load(DEFAULT_TABLE)
    raw = LatencyTable.load(DEFAULT_TABLE, calibrated=False)
    configs = random_configs(raw, 50)
    assert calibrated.calibration is not None
    assert not np.allclose(calibrated.block_latency(configs), raw.block_latency(configs), rtol=1e-6)


def test_per_config_baseline_equals_vectorised_raw_answers() -> None:
    raw = LatencyTable.load(DEFAULT_TABLE, calibrated=False)
    configs = random_configs(raw, 200, seed=3)
    np.testing.assert_allclose(raw.block_latency(configs), per_config_scipy(raw, configs), rtol=1e-9)


def test_main_on_the_default_table_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--configs", "300", "--repeats", "1"])
    result = json.loads(capsys.readouterr().out)
    assert result["table"] == DEFAULT_TABLE.name
    assert result["configs"] == 300
    assert result["vectorised_s"] >= 0 and result["per_config_scipy_s"] > 0
