"""Every shipped table says which machine it describes, carries its validation and calibration, and serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from lut_server.dims import ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import has_fingerprint, read_table

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "tables").glob("*.json"))


def test_tables_are_shipped():
    assert len(SHIPPED) >= 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_table_is_fingerprinted_validated_calibrated_and_serves(path):
    doc = read_table(path)
    assert doc["version"] == 2 and doc["complete"]
    assert has_fingerprint(doc)
    cpu = doc["device"]["match"]["cpu"]
    assert {"vendor", "family", "model", "stepping", "isa"} <= set(cpu)
    assert doc["validation"]["points"] >= 100 and doc["validation"]["models"]["count"] >= 20
    assert "level_normalised" in doc["validation"]
    assert doc["calibration"]["fitted"]["models"] >= 20
    table = LatencyTable(doc, path.stem)
    raw = LatencyTable(doc, path.stem, calibrated=False)
    deit_b = ModelDims.uniform(768, 12, heads=12, qk=64, v=64, mlp=3072)
    assert table.model_latency(deit_b) > 0 and raw.model_latency(deit_b) > 0
    summary = table.summary()
    assert summary["calibration"]["form"] == doc["calibration"]["form"]
    assert summary["fingerprint"]["device"] == doc["device"]["match"]
