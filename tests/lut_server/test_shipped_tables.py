"""Every shipped table says which machine it describes, carries its validation and calibration, and serves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lut_server.dims import ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import has_fingerprint, read_table

ROOT = Path(__file__).resolve().parents[2]


def shipped_tables() -> list[Path]:
    """The tables the repository tracks: a user's own `tables/my-cpu.json` is theirs to validate, not a test's."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "tables/*.json"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # an unpacked source tree without git: all it holds shipped
        return sorted((ROOT / "tables").glob("*.json"))
    return sorted(ROOT / name for name in listed)


SHIPPED = shipped_tables()


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
