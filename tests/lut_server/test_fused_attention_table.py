"""A table split as attn | mlp (attention one 4-D part, for runtimes that fuse it) validates, interpolates, answers
the pruner's per-axis deltas and is served like a table split as attn_qk | attn_v | mlp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lut_server.app import create_app
from lut_server.config import ServerConfig
from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import TableFormatError, validate_table
from tests.table_factory import SMALL_GRID, make_table, multilinear_parts

SPLIT = multilinear_parts(SMALL_GRID)


def fused_functions() -> dict:
    """attn = attn_qk + attn_v: multilinear on (emb, heads, qk, v), so interpolation of either table is exact."""
    return {
        "attn": lambda emb, heads, qk, v: SPLIT["attn_qk"](emb, heads, qk) + SPLIT["attn_v"](emb, heads, v),
        "mlp": SPLIT["mlp"],
        "stem": SPLIT["stem"],
        "head": SPLIT["head"],
    }


def random_model(seed: int, depth: int = 6) -> ModelDims:
    rng = np.random.default_rng(seed)
    widths = [
        BlockDims(
            128, *(int(rng.integers(min(SMALL_GRID[a]), max(SMALL_GRID[a]) + 1)) for a in SMALL_GRID if a != "emb")
        )
        for _ in range(depth)
    ]
    return ModelDims.from_blocks(widths)


def test_the_attn_part_has_four_axes_and_validates() -> None:
    doc = validate_table(make_table(functions=fused_functions()))
    assert doc["parts"]["attn"]["axes"] == ["emb", "heads", "qk", "v"]
    assert np.array(doc["parts"]["attn"]["median_ms"]).shape == (3, 3, 3, 3)


@pytest.mark.parametrize("extra", ["attn_qk", "attn_v", "block"])
def test_parts_of_two_splits_are_refused(extra: str) -> None:
    functions = fused_functions() | {extra: multilinear_parts(SMALL_GRID, (extra,))[extra]}
    with pytest.raises(TableFormatError, match="mix two ways of splitting a block"):
        validate_table(make_table(functions=functions))


def test_fused_table_answers_like_the_split_table_it_adds_up_to() -> None:
    fused, split = LatencyTable(make_table(functions=fused_functions())), LatencyTable(make_table())
    model = random_model(0)
    np.testing.assert_allclose(
        fused.block_latency(model.block_dims()), split.block_latency(model.block_dims()), rtol=1e-12
    )
    got, want = fused.deltas(model, {"qk": 4, "v": 8}), split.deltas(model, {"qk": 4, "v": 8})
    assert got.total_ms == pytest.approx(want.total_ms, rel=1e-12)
    for g, w in zip(got.blocks, want.blocks, strict=True):
        for axis in ("heads", "qk", "v", "mlp"):
            assert (g[axis] is None) == (w[axis] is None)
            if g[axis] is not None:
                assert g[axis] == pytest.approx(w[axis], rel=1e-9, abs=1e-12)
    assert any(g["qk"] and g["qk"] > 0 for g in got.blocks) and any(g["v"] and g["v"] > 0 for g in got.blocks)


def test_the_server_serves_a_fused_table(tmp_path: Path) -> None:
    (tmp_path / "fused.json").write_text(json.dumps(make_table(functions=fused_functions())))
    client = TestClient(create_app(ServerConfig(tmp_path, write_token="t" * 32, max_body_bytes=256 * 1024)))
    (summary,) = client.get("/v1/tables").json()["tables"]
    assert summary["parts"] == ["attn", "mlp", "stem", "head"]
    model = random_model(1)
    answer = client.post("/v1/tables/fused/deltas", json=model.as_dict() | {"group_size": {"qk": 8}})
    assert answer.status_code == 200
    local = LatencyTable(make_table(functions=fused_functions())).deltas(model, {"qk": 8})
    assert answer.json()["total_ms"] == pytest.approx(local.total_ms, rel=1e-12)
    assert [b["qk"] for b in answer.json()["blocks"]] == pytest.approx([b["qk"] for b in local.blocks], rel=1e-12)
