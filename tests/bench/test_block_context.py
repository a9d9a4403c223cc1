"""The block-context benchmark times the block it names inside the model it builds, and summarises by MLP width."""

from __future__ import annotations

import json
import random

import pytest

from bench.block_context import (
    DEPTH,
    NARROW_MLP,
    block_contexts,
    block_stage_indices,
    drawn_blocks,
    main,
    model_around,
    summary,
)
from lut_server.dims import BlockDims
from lut_server.latency_table import LatencyTable
from profiler.backends import create_backend
from profiler.grids import DEFAULT_PARTS, GridSpec
from profiler.sweep import Sweep
from profiler.timing import Protocol
from profiler.workload import FUSED_ATTENTION, SCORES_VALUES, Workload, build_pipeline, model_config_for_tokens
from tests.table_factory import make_table_v2


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real torch-cpu table (quick protocol) whose MLP spans 16 to 2048, so a block's own MLP dominates it."""
    spec = GridSpec({"emb": [64, 128], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [16, 2048]}, DEFAULT_PARTS)
    out = tmp_path_factory.mktemp("block-context") / "t.json"
    backend = create_backend("torch-cpu", "fp32", 1)
    return Sweep(out, backend, Workload(1, 17, model_config_for_tokens(17)), spec, Protocol.quick()).run(False)


def test_the_model_around_a_block_has_its_emb_and_holds_it_in_the_middle(swept: dict) -> None:
    table = LatencyTable(swept, calibrated=False)
    block = BlockDims(64, 2, 16, 8, 1024)
    model = model_around(block, table, random.Random(3))
    assert len(model) == DEPTH and model[DEPTH // 2] == block
    assert {b.emb for b in model} == {64}
    assert all(16 <= b.mlp <= 2048 and 1 <= b.heads <= 2 for b in model)


@pytest.mark.parametrize(
    ("split", "with_model"), [(SCORES_VALUES, True), (SCORES_VALUES, False), (FUSED_ATTENTION, True)]
)
def test_the_stages_read_are_the_named_blocks_own(swept: dict, split: tuple[str, ...], with_model: bool) -> None:
    block = BlockDims(64, 2, 16, 8, 1024)
    model = model_around(block, LatencyTable(swept, calibrated=False), random.Random(0))
    names, stages, _ = build_pipeline(
        model, Workload(1, 17, model_config_for_tokens(17)), with_model, block_stages=split
    )
    indices = block_stage_indices(DEPTH // 2, len(split), with_model)
    assert [names[i] for i in indices] == list(split)
    assert all(stages[i].block.dims == block for i in indices)  # the named block's widths, from one block:
    assert all(stages[i].block is stages[indices[0]].block for i in indices)


def test_block_contexts_times_each_block_both_ways(swept: dict) -> None:
    narrow, wide = BlockDims(64, 1, 8, 8, 16), BlockDims(64, 1, 8, 8, 2048)
    rows = block_contexts(swept, [narrow, wide], seed=0)
    assert [r["dims"]["mlp"] for r in rows] == [16, 2048]
    assert all(r["in_model_ms"] > 0 and r["loop_of_2_ms"] > 0 for r in rows)
    for row in rows:
        assert row["loop_over_in_model"] == pytest.approx(row["loop_of_2_ms"] / row["in_model_ms"], rel=1e-3)
        assert row["table_ms"] > 0 and row["calibrated_ms"] == row["table_ms"]  # the swept table has no calibration


def test_summary_splits_narrow_from_other_blocks_and_takes_medians() -> None:
    def row(mlp: int, table: float, in_model: float, loop: float) -> dict:
        dims = {"emb": 64, "heads": 1, "qk": 8, "v": 8, "mlp": mlp}
        return {"dims": dims, "table_ms": table, "in_model_ms": in_model, "loop_of_2_ms": loop,
                "loop_over_in_model": loop / in_model}  # fmt: skip

    rows = [row(32, 1.0, 1.0, 0.8), row(48, 1.1, 1.0, 0.9), row(64, 1.2, 1.0, 1.0), row(NARROW_MLP, 2.0, 2.0, 2.0)]
    result = summary(rows)
    assert result["narrow"] == {"blocks": 3, "loop_over_in_model": 0.9, "table_vs_in_model_pct": 10.0,
                                "table_vs_loop_pct": 22.22}  # fmt: skip
    assert result["other"] == {"blocks": 1, "loop_over_in_model": 1.0, "table_vs_in_model_pct": 0.0,
                               "table_vs_loop_pct": 0.0}  # fmt: skip


def test_drawn_blocks_alternate_narrow_and_other_and_stay_off_the_grid(swept: dict) -> None:
    blocks = drawn_blocks(swept, 6, seed=1)
    assert [b.mlp < NARROW_MLP for b in blocks] == [True, False] * 3
    for block in blocks:
        assert block.mlp not in swept["grid"]["mlp"] and block.emb not in swept["grid"]["emb"]


def test_a_table_without_narrow_mlp_widths_gets_plain_draws() -> None:
    grid = {"emb": [64, 128], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [512, 2048]}
    blocks = drawn_blocks(make_table_v2(grid), 5, seed=0)
    assert len(blocks) == 5 and all(512 < b.mlp < 2048 for b in blocks)


def test_main_writes_rows_and_summary(swept: dict, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "t.json"
    table.write_text(json.dumps(swept))
    out = tmp_path / "result.json"
    assert main([str(table), "--points", "2", "--out", str(out)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    result = json.loads(out.read_text())
    assert result["rows"] == printed and len(printed) == 2
    assert set(result["summary"]) == {"narrow", "other"}
