"""Every shipped table says which machine it describes, carries its validation and calibration, and serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lut_server.dims import ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import has_fingerprint, read_table

ROOT = Path(__file__).resolve().parents[2]


def shipped_tables(folder: str = "tables") -> list[Path]:
    """The tables the repository tracks in `folder` (not below it): a user's own `tables/my-cpu.json` is theirs to
    validate, not a test's."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", f":(glob){folder}/*.json"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # an unpacked source tree without git: all it holds shipped
        return sorted((ROOT / folder).glob("*.json"))
    return sorted(ROOT / name for name in listed)


SHIPPED = shipped_tables()
SHIPPED_GPU = shipped_tables("tables/gpu")
"""Tables measured on a GPU this project was lent once: served and checked like any, but no CPU machine is theirs."""


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


def test_a_gpu_table_is_shipped():
    assert len(SHIPPED_GPU) >= 1


@pytest.mark.parametrize("path", SHIPPED_GPU, ids=lambda p: p.stem)
def test_shipped_gpu_table_is_fingerprinted_validated_calibrated_serves_and_is_different_here(path):
    doc = read_table(path)
    assert doc["version"] == 2 and doc["complete"] and has_fingerprint(doc)
    assert doc["device"]["kind"] == "gpu"
    assert {"name", "compute_capability", "memory_mib", "sm_count"} <= set(doc["device"]["match"]["gpu"])
    assert doc["validation"]["points"] >= 60 and doc["validation"]["models"]["count"] >= 12
    assert doc["calibration"]["fitted"]["models"] >= 12
    deit_b = ModelDims.uniform(768, 12, heads=12, qk=64, v=64, mlp=3072)
    calibrated = LatencyTable(doc, path.stem).model_latency(deit_b)
    raw = LatencyTable(doc, path.stem, calibrated=False).model_latency(deit_b)
    factors = set(doc["calibration"]["factors"].values()) or {1.0}
    assert len(factors) == 1  # no correction or one scale: calibrated answers are the raw ones times it and the level
    assert calibrated == pytest.approx(raw * factors.pop() * doc["calibration"]["level"], rel=1e-9)
    assert doc["interpolation"]["steps"] == ["emb", "mlp"]  # the GPU's tile staircase, as docs/gpu.md shows
    validation = doc["validation"]
    assert validation["meets_bar"] and validation["meets_model_bar"]
    assert validation["created"] != doc["interpolation"]["chosen"]["validation"]  # held out from the choice
    assert validation["created"] not in doc["calibration"]["fitted"]["validations"]  # and from the fit

    here = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True
    )
    if here.stdout.strip() != "False":
        pytest.skip("a GPU is here: `check` would time the table, not only compare fingerprints")
    done = subprocess.run(
        [sys.executable, "-m", "profiler", "check", str(path), "--json"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 4, done.stderr
    result = json.loads(done.stdout)
    assert result["verdict"] == "different" and result["mismatches"][0].startswith("workload.backend: torch-cuda")


def makefile_pins() -> dict[str, str]:
    line = next(ln for ln in (ROOT / "Makefile").read_text().splitlines() if ln.startswith("PINS :="))
    return dict(pin.split("==") for pin in line.split(":=", 1)[1].split())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_makefile_installs_the_software_a_shipped_table_was_measured_with(path):
    """A fresh clone's `make` must give the versions the table's fingerprint matches, or `check` says different."""
    pins = makefile_pins()
    software = read_table(path)["software"]["match"]
    for package in ("torch", "onnxruntime", "onnx"):
        if package in software:
            assert package in pins, f"the Makefile does not pin {package}, which {path.name} was measured with"
            assert software[package].split("+")[0] == pins[package], (package, software[package], pins[package])
