"""`calibrate --steps`: a staircase reading is kept where a validation's off-grid blocks follow one, not otherwise."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lut_server.dims import AXES, BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import read_table, validate_table, write_table
from profiler.interpolation_choice import MIN_BLOCKS, choose_steps
from tests.table_factory import make_table

GRID = {"emb": [64, 128, 192, 256], "heads": [1, 2, 4], "qk": [8, 16, 32], "v": [8, 16, 32], "mlp": [64, 256, 512]}


def device_answers(steps: list[str]) -> LatencyTable:
    """The device's 'true' latencies: the table read with these staircase axes."""
    doc = validate_table(make_table(GRID))
    doc["interpolation"] = {"steps": steps} if steps else None
    return LatencyTable(validate_table(doc), calibrated=False)


def validated_table(device: LatencyTable, blocks: int = 40, seed: int = 0) -> dict:
    """The plain (linear) table with a validation whose off-grid blocks and models were 'measured' on `device`,
    with 1% of noise either way."""
    rng = random.Random(seed)
    noise = lambda: 1.0 + rng.uniform(-0.01, 0.01)  # noqa: E731
    points = [
        BlockDims(
            rng.randrange(72, 256, 8), rng.choice([1, 2, 3, 4]), 8 * rng.randrange(1, 5), 16, 64 * rng.randrange(1, 8)
        )
        for _ in range(blocks)
    ]
    measured = device.block_latency(points)
    models = [ModelDims.uniform(rng.randrange(72, 256, 8), 3, heads=2, qk=16, v=16, mlp=256) for _ in range(8)]
    doc = validate_table(make_table(GRID))
    doc["validation"] = {
        "created": "2026-01-02T00:00:00Z",
        "seed": seed,
        "blocks": [
            {**dict(zip(AXES, (b.emb, b.heads, b.qk, b.v, b.mlp), strict=True)), "measured_ms": m * noise()}
            for b, m in zip(points, measured, strict=True)
        ],
        "model_points": [{"dims": m.as_dict(), "measured_ms": device.model_latency(m) * noise()} for m in models],
    }
    return validate_table(doc)


def test_blocks_that_follow_a_staircase_along_emb_choose_emb_alone():
    chosen = choose_steps(validated_table(device_answers(["emb"])))
    assert chosen["steps"] == ["emb"]
    errors = chosen["chosen"]["mean_ape_pct"]
    assert errors["emb"] < 1.0 < errors["linear"]
    assert chosen["chosen"]["blocks"] == 40 and chosen["chosen"]["seed"] == 0


def test_blocks_that_follow_the_linear_reading_keep_every_axis_linear():
    chosen = choose_steps(validated_table(device_answers([])))
    assert chosen["steps"] == []
    assert min(chosen["chosen"]["mean_ape_pct"], key=chosen["chosen"]["mean_ape_pct"].get) == "linear"


def test_a_second_staircase_axis_that_helps_within_the_noise_is_left_out():
    chosen = choose_steps(validated_table(device_answers(["emb"]), blocks=60))
    record = chosen["chosen"]
    assert chosen["steps"] == ["emb"]
    # emb+heads or emb+mlp may score within noise of emb: the fewer axes win, and the record shows why
    for name, excess in record["excess_over_best_pct"].items():
        if name in ("emb", record["best"]):
            assert excess <= record["excess_standard_error_pct"][name]
    assert record["excess_over_best_pct"]["linear"] > record["excess_standard_error_pct"]["linear"]


def test_too_few_blocks_choose_nothing():
    assert choose_steps(validated_table(device_answers(["emb"]), blocks=MIN_BLOCKS - 1)) is None


def run_calibrate(table: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "profiler", "calibrate", str(table), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_calibrate_steps_auto_sets_the_reading_before_the_fit_and_none_or_axes_set_it_explicitly(tmp_path):
    table = tmp_path / "t.json"
    write_table(table, validated_table(device_answers(["emb"])))
    done = run_calibrate(table, "--steps", "auto")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["interpolation_steps"] == ["emb"]
    doc = read_table(table)
    assert doc["interpolation"]["steps"] == ["emb"]
    assert doc["calibration"]["before"]["median_ape_pct"] < 1.0  # models fitted as the staircase reading answers
    assert LatencyTable(doc).summary()["interpolation"] == {"steps": ["emb"]}

    kept = run_calibrate(table)  # without --steps the reading stays
    assert kept.returncode == 0 and read_table(table)["interpolation"]["steps"] == ["emb"]
    given = run_calibrate(table, "--steps", "emb,mlp")
    assert given.returncode == 0 and read_table(table)["interpolation"]["steps"] == ["emb", "mlp"]
    removed = run_calibrate(table, "--steps", "none")
    assert removed.returncode == 0 and "interpolation" not in json.loads(table.read_text())


def test_calibrate_steps_refuses_an_unknown_axis_and_auto_without_blocks(tmp_path):
    table = tmp_path / "t.json"
    doc = validated_table(device_answers([]))
    doc["validation"]["blocks"] = []
    write_table(table, doc)
    unknown = run_calibrate(table, "--steps", "emb,depth")
    assert unknown.returncode == 2 and "--steps takes auto, none or distinct axes among emb" in unknown.stderr
    twice = run_calibrate(table, "--steps", "emb,emb")
    assert twice.returncode == 2 and "distinct axes" in twice.stderr
    auto = run_calibrate(table, "--steps", "auto")
    assert auto.returncode == 2 and "timed blocks, at least 10; the table has 0" in auto.stderr
