"""`interpolation.steps`: axes read as a staircase (a width costs what the next grid value costs), the rest linear."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lut_server.app import create_app
from lut_server.config import ServerConfig
from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable, next_grid_value
from lut_server.table_format import TableFormatError, validate_table, write_table
from lut_server.table_identity import content_hash
from tests.table_factory import SMALL_GRID, make_table


def staircase_table(steps: list[str] | None) -> dict:
    doc = validate_table(make_table())
    doc["interpolation"] = {"steps": steps} if steps is not None else None
    return validate_table(doc)


def test_next_grid_value_moves_widths_inside_the_grid_up_and_leaves_widths_below_it():
    column = np.array([16.0, 64.0, 65.0, 100.0, 128.0, 129.0, 256.0])
    assert next_grid_value([64, 128, 256], column).tolist() == [16.0, 64.0, 128.0, 128.0, 128.0, 256.0, 256.0]


def test_a_width_between_grid_values_costs_the_next_grid_value_along_a_staircase_axis_only():
    steps = LatencyTable(staircase_table(["emb"]), calibrated=False)
    linear = LatencyTable(staircase_table(None), calibrated=False)
    between = BlockDims(96, 3, 12, 24, 300)
    at_next_emb = BlockDims(128, 3, 12, 24, 300)
    assert steps.block_latency([between])[0] == pytest.approx(linear.block_latency([at_next_emb])[0], rel=1e-12)
    assert steps.block_latency([between])[0] > linear.block_latency([between])[0]
    on_grid = BlockDims(128, 2, 16, 16, 256)
    assert steps.block_latency([on_grid])[0] == pytest.approx(linear.block_latency([on_grid])[0], rel=1e-12)
    # the vectorised path (many blocks at once) answers as the one-block path does
    many = [between] * 40 + [on_grid] * 40
    assert np.allclose(steps.block_latency(many), [steps.block_latency([b])[0] for b in many], rtol=1e-12)


def test_answers_stay_monotone_and_group_deltas_spread_each_step_over_its_groups():
    table = LatencyTable(staircase_table(["emb", "mlp"]), calibrated=False)
    linear = LatencyTable(staircase_table(None), calibrated=False)
    widths = np.arange(64, 257, 8)
    latencies = table.block_latency([BlockDims(int(e), 2, 16, 16, 256) for e in widths])
    assert np.all(np.diff(latencies) >= 0)
    for emb in (112, 128, 144):  # inside a step, on a grid value, just above one
        model = ModelDims.uniform(emb, 2, heads=2, qk=16, v=16, mlp=300)
        deltas, plain = table.deltas(model, {"emb": 16}), linear.deltas(model, {"emb": 16})
        assert deltas.total_ms == pytest.approx(table.model_latency(model), rel=1e-12)  # the model as the table reads
        assert deltas.emb == pytest.approx(plain.emb, rel=1e-12) and deltas.emb > 0  # the step's share per group
        for mine, theirs in zip(deltas.blocks, plain.blocks, strict=True):
            assert mine == pytest.approx(theirs, rel=1e-12)
        assert all(d["mlp"] > 0 for d in deltas.blocks)


def test_below_the_grid_a_group_delta_extrapolates_linearly_as_without_steps():
    steps = LatencyTable(staircase_table(["emb"]), calibrated=False)
    linear = LatencyTable(staircase_table(None), calibrated=False)
    model = ModelDims.uniform(64, 2, heads=2, qk=16, v=16, mlp=256)  # 64 - 16 = 48 lies below the grid
    assert steps.deltas(model, {"emb": 16}).emb == pytest.approx(linear.deltas(model, {"emb": 16}).emb, rel=1e-12)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["depth"], "interpolation.steps"),
        (["emb", "emb"], "names an axis twice"),
        ([], "interpolation.steps is empty"),
    ],
)
def test_a_bad_staircase_axis_is_refused_naming_the_field(steps, message):
    doc = validate_table(make_table())
    doc["interpolation"] = {"steps": steps}
    with pytest.raises(TableFormatError, match=message):
        validate_table(doc)


def test_an_axis_no_part_has_is_refused():
    grid = dict(SMALL_GRID)
    doc = validate_table(make_table(grid, {"mlp": lambda emb, mlp: 0.03 + 3e-6 * emb * mlp}))
    doc["interpolation"] = {"steps": ["heads"]}
    with pytest.raises(TableFormatError, match="no part of the table has the axis 'heads'"):
        validate_table(doc)


def test_a_step_axis_with_one_grid_value_is_refused():
    grid = {**SMALL_GRID, "heads": [2]}
    doc = validate_table(make_table(grid))
    doc["interpolation"] = {"steps": ["heads"]}
    with pytest.raises(TableFormatError, match="the grid has one heads value"):
        validate_table(doc)


def test_a_table_without_steps_is_written_without_the_key_and_hashes_its_grid_parts_and_calibration(tmp_path):
    plain = staircase_table(None)
    write_table(tmp_path / "t.json", plain)
    assert "interpolation" not in json.loads((tmp_path / "t.json").read_text())
    canonical = json.dumps({k: plain.get(k) for k in ("grid", "parts", "calibration")}, sort_keys=True,
                           separators=(",", ":"))  # fmt: skip
    assert content_hash(plain) == hashlib.sha256(canonical.encode()).hexdigest()


def test_the_hash_covers_the_staircase_axes_not_their_order_or_the_record_of_the_choice():
    emb_mlp = staircase_table(["emb", "mlp"])
    mlp_emb = staircase_table(["mlp", "emb"])
    mlp_emb["interpolation"]["chosen"] = {"seed": 23, "blocks": 60}
    assert content_hash(emb_mlp) == content_hash(mlp_emb)
    assert content_hash(emb_mlp) not in (content_hash(staircase_table(["emb"])), content_hash(staircase_table(None)))


def test_the_server_summary_names_the_staircase_axes_and_answers_with_them(tmp_path):
    write_table(tmp_path / "stairs.json", staircase_table(["emb"]))
    with TestClient(create_app(ServerConfig(tmp_path))) as client:
        summary = client.get("/v1/tables/stairs/summary").json()
        assert summary["interpolation"] == {"steps": ["emb"]}
        block = {"emb": 96, "heads": 3, "qk": 12, "v": 24, "mlp": 300}
        served = client.post("/v1/tables/stairs/latency", json={"blocks": [block]}).json()
    local = LatencyTable(staircase_table(["emb"])).block_latency([BlockDims(96, 3, 12, 24, 300)])[0]
    assert served["latency_ms"][0] == pytest.approx(local, rel=1e-12)
