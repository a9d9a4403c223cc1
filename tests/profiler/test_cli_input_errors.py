"""Bad input to the profiler's commands ends in one `error:` line and exit 2 before any timing, never a traceback or a
silently changed request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lut_server.dims import BlockDims, ModelDims
from lut_server.table_format import write_table
from tests.table_factory import make_table

ROOT = Path(__file__).resolve().parents[2]


def run_profiler(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "profiler", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "model",
    [
        {"emb": 48.9, "blocks": [{"heads": 1, "qk": 8, "v": 8, "mlp": 32}]},
        {"emb": "48", "blocks": [{"heads": 1, "qk": 8, "v": 8, "mlp": 32}]},
        {"emb": True, "blocks": [{"heads": 1, "qk": 8, "v": 8, "mlp": 32}]},
        {"emb": 48, "blocks": [{"emb": 48, "heads": 1, "qk": 8, "v": 8, "mlp": 32}]},
        {"emb": 48, "blocks": {"heads": 1}},
        {"emb": 48, "blocks": [], "depth": 1},
    ],
)
def test_a_model_with_a_non_integer_width_or_a_stray_key_is_refused_not_truncated(model):
    with pytest.raises(ValueError):
        ModelDims.from_dict(model)


def test_block_dims_need_exactly_the_five_integer_axes():
    assert BlockDims.from_mapping({"emb": 48, "heads": 1, "qk": 8, "v": 8, "mlp": 32}) == BlockDims(48, 1, 8, 8, 32)
    with pytest.raises(ValueError, match="unknown foo"):
        BlockDims.from_mapping({"emb": 48, "heads": 1, "qk": 8, "v": 8, "mlp": 32, "foo": 1})
    with pytest.raises(ValueError, match="missing mlp"):
        BlockDims.from_mapping({"emb": 48, "heads": 1, "qk": 8, "v": 8})
    with pytest.raises(TypeError, match="emb must be an integer"):
        BlockDims.from_mapping({"emb": 48.5, "heads": 1, "qk": 8, "v": 8, "mlp": 32})


@pytest.mark.parametrize(
    ("flag", "items", "message"),
    [
        ("--configs", [{"emb": 48.5, "heads": 1, "qk": 8, "v": 8, "mlp": 32}], "emb must be an integer, got 48.5"),
        ("--configs", [{"emb": 48, "heads": 1, "qk": 8, "v": 8, "mlp": 32, "foo": 1}], "unknown foo"),
        ("--configs", [], "non-empty JSON list"),
        ("--models", [{"emb": 48.9, "blocks": [{"heads": 1, "qk": 8, "v": 8, "mlp": 32}]}], "got 48.9"),
    ],
)
def test_measure_refuses_bad_dims_with_one_error_line(tmp_path, flag, items, message):
    table = tmp_path / "t.json"
    write_table(table, make_table())
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps(items))
    done = run_profiler("measure", "--table", table, flag, items_file)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr


def test_check_refuses_an_incomplete_table(tmp_path):
    doc = make_table()
    doc["complete"] = False
    table = tmp_path / "partial.json"
    write_table(table, doc)
    done = run_profiler("check", table)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "partial.json is incomplete" in done.stderr and "--resume" in done.stderr


def test_profile_refuses_a_zero_patch_size_before_timing(tmp_path):
    done = run_profiler("profile", "--grid", "tiny", "--quick", "--patch-size", "0", "--out", tmp_path / "t.json")
    assert done.returncode == 2 and "--patch-size must be >= 1, got 0" in done.stderr
    assert not (tmp_path / "t.json").exists()


@pytest.mark.slow
def test_a_token_count_without_an_image_says_the_table_holds_blocks_only(tmp_path):
    out = tmp_path / "t.json"
    done = run_profiler("profile", "--grid", "tiny", "--quick", "--tokens", "100", "--out", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "100 tokens are not a square grid of patches" in done.stderr and "blocks only" in done.stderr
    assert "take one value" not in done.stderr
    assert sorted(json.loads(out.read_text())["parts"]) == ["attn_qk", "attn_v", "mlp"]
    assert json.loads(done.stdout)["backwards_steps_pct"] is not None


@pytest.mark.slow
def test_a_one_value_axis_is_profiled_with_a_warning_that_it_prices_no_removal(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"grid": {"emb": [32, 64], "heads": [2], "qk": [8, 16], "v": [8, 16], "mlp": [32, 64]}}))
    out = tmp_path / "t.json"
    done = run_profiler("profile", "--grid", grid, "--quick", "--tokens", "17", "--out", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "warning: heads take one value" in done.stderr and "deltas of 0" in done.stderr
