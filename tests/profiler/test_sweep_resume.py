"""A sweep killed with SIGKILL resumes without re-measuring finished points and refuses mixed settings."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lut_server.latency_table import LatencyTable
from lut_server.table_format import read_table

GRID = {"emb": [16, 32, 48], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [16, 32, 64]}
RUNS = 3 * 2 * 2  # one pipeline run per (emb, heads, qk = v); the quick protocol measures one pass


def profile_cmd(out: Path, grid_file: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "profiler",
        "profile",
        "--grid",
        str(grid_file),
        "--out",
        str(out),
        "--batch",
        "1",
        "--tokens",
        "17",
        "--no-model-parts",
        "--quick",
        "--no-progress",
        *extra,
    ]


def measured_runs(doc: dict) -> dict[tuple, dict]:
    return {(r["pass"], *r["combo"]): r for r in doc["sweep"]["records"]}


@pytest.mark.slow
def test_sigkilled_sweep_resumes_without_measuring_finished_points_twice(tmp_path):
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps({"grid": GRID, "parts": ["attn_qk", "attn_v", "mlp"]}))
    out = tmp_path / "t.json"
    proc = subprocess.Popen(profile_cmd(out, grid_file), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists():
            done = json.loads(out.read_text())["sweep"]["units_done"]
            if done >= 5:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    partial = read_table(out)  # the file on disk is a valid (incomplete) table after a SIGKILL
    assert partial["complete"] is False
    before = measured_runs(partial)
    assert 5 <= len(before) < RUNS
    assert partial["sweep"]["units_done"] == len(before)
    assert any(v is None for v in np.array(partial["parts"]["attn_qk"]["median_ms"], dtype=object).ravel())

    resumed = subprocess.run(profile_cmd(out, grid_file, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = read_table(out)
    after = measured_runs(final)
    assert final["complete"] is True
    assert len(after) == RUNS and final["sweep"]["units_done"] == RUNS
    # a finished run keeps its first measurement bit for bit: it was not timed again
    assert {k: after[k] for k in before} == before
    assert len(final["sweep"]["records"]) == RUNS  # and no run appears twice
    for part in final["parts"].values():
        assert np.isfinite(np.array(part["median_ms"], dtype=float)).all()
    LatencyTable(final)  # and the completed table loads for serving


def test_resume_refuses_a_partial_table_with_other_settings(tmp_path):
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps({"grid": {"emb": [16, 32], "heads": [1], "qk": [8], "v": [8], "mlp": [16]}}))
    out = tmp_path / "t.json"
    first = subprocess.run(profile_cmd(out, grid_file), capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    doc = read_table(out)
    doc["complete"] = False
    doc["sweep"]["records"].pop()
    out.write_text(json.dumps(doc))
    other = profile_cmd(out, grid_file, "--resume")
    other[other.index("--batch") + 1] = "2"
    refused = subprocess.run(other, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "cannot resume" in refused.stderr and "workload" in refused.stderr
    again = subprocess.run(profile_cmd(out, grid_file), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr  # never silently overwritten
