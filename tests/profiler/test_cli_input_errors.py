"""Bad input to the profiler's commands ends in one `error:` line and exit 2 before any timing, never a traceback or a
silently changed request."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lut_server.dims import BlockDims, ModelDims
from lut_server.table_format import validate_table, write_table
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
        ("--configs", [{"emb": 10**9, "heads": 1, "qk": 8, "v": 8, "mlp": 32}], "emb=1000000000 is beyond any table"),
        ("--models", [{"emb": 10**22, "blocks": [{"heads": 1, "qk": 8, "v": 8, "mlp": 32}]}], "beyond any table"),
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


@pytest.mark.parametrize("command", ["check", "calibrate"])
def test_an_incomplete_table_is_refused_as_incomplete(tmp_path, command):
    doc = make_table()
    doc["complete"] = False
    table = tmp_path / "partial.json"
    write_table(table, doc)
    done = run_profiler(command, table)
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--budget", "5"), "--budget counts the runs of `profile --from TABLE`"),
        (("--tokens", "0"), "--tokens must be >= 1, got 0"),
        (("--batch", "-1"), "--batch must be >= 1, got -1"),
        (("--passes", "0"), "--passes must be >= 1, got 0"),
        (("--passes", "1", "--from", "tables/x.json"), "--passes counts a sweep's passes"),
    ],
)
def test_profile_refuses_a_flag_it_would_ignore_or_a_count_below_one_first(tmp_path, args, message):
    done = run_profiler("profile", "--grid", "tiny", "--quick", *args, "--out", tmp_path / "t.json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [f"error: {message}" + done.stderr.splitlines()[0].split(message, 1)[1]]
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    ("grid_file", "message"),
    [
        ({"grid": [1, 2]}, "must be an object with a 'grid' object"),
        ({"grid": {"emb": [32, 64]}, "parts": "mlp"}, "'parts' must be a list of part names, got 'mlp'"),
    ],
)
def test_a_malformed_grid_file_is_one_error_line(tmp_path, grid_file, message):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(grid_file))
    done = run_profiler("profile", "--grid", grid, "--quick", "--out", tmp_path / "t.json")
    assert done.returncode == 2 and "Traceback" not in done.stderr and message in done.stderr


def test_a_table_name_the_server_cannot_serve_is_warned_about_before_the_sweep(tmp_path):
    done = run_profiler("profile", "--grid", "tiny", "--quick", "--tokens", "0", "--out", tmp_path / "My CPU.json")
    assert "warning: the server serves tables/ID.json as table ID, and 'My CPU.json' is not such a name" in done.stderr
    assert done.returncode == 2  # the bad --tokens still stops it, after the warning


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--points", "0"), "--points must be >= 1, got 0"),
        (("--models", "-1"), "--models must be >= 0, got -1"),
        (("--retest", "0"), "--retest must be >= 1"),
        (("--depth", "0"), "--depth must be >= 1, got 0"),
    ],
)
def test_validate_refuses_counts_it_cannot_judge_by(tmp_path, args, message):
    table = tmp_path / "t.json"
    write_table(table, make_table())
    done = run_profiler("validate", table, "--quick", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr and message in done.stderr


def test_an_interrupted_sweep_says_how_to_continue_it(tmp_path):
    from argparse import Namespace

    from profiler.cli import interrupted_hint

    out = tmp_path / "t.json"
    sweep = Namespace(command="profile", from_table=None, out=out)
    assert interrupted_hint(sweep) == ""  # nothing written yet: nothing to continue
    write_table(out, make_table())
    assert interrupted_hint(sweep) == f": {out} keeps every finished run; the same command with --resume continues it"
    assert interrupted_hint(Namespace(command="validate", table=out)) == ""


def test_validate_checks_the_tables_to_compare_before_any_timing(tmp_path):
    table = tmp_path / "t.json"
    write_table(table, make_table())
    before = table.read_bytes()
    done = run_profiler("validate", table, "--quick", "--points", "2", "--models", "0", "--force",
                        "--compare", tmp_path / "typo.json")  # fmt: skip
    assert done.returncode == 2 and "typo.json" in done.stderr and "Traceback" not in done.stderr
    assert "validate t.json" not in done.stderr  # no progress bar: nothing was timed
    assert table.read_bytes() == before


def test_a_table_to_compare_that_cannot_answer_the_validation_is_named(tmp_path):
    from lut_server.latency_table import LatencyTable
    from profiler.validate import comparable, random_blocks

    doc = validate_table(make_table())  # as read from a file
    narrow = make_table(grid={**doc["grid"], "emb": doc["grid"]["emb"][:2]})
    other = tmp_path / "narrow.json"
    write_table(other, narrow)
    table = LatencyTable(doc)
    blocks = [b for b in random_blocks(table, 50, random.Random(0)) if b.emb > max(narrow["grid"]["emb"])][:1]
    assert blocks, "the draw should reach beyond the narrower table's EMB range"
    with pytest.raises(ValueError, match=r"^--compare narrow.json: .*emb"):
        comparable(doc, other, blocks, [])


def test_measure_calls_a_table_whose_backend_cannot_run_here_another_device(tmp_path):
    doc = make_table()
    doc["workload"] |= {"backend": "torch-cuda", "threads": None}
    table = tmp_path / "gpu.json"
    write_table(table, doc)
    configs = tmp_path / "c.json"
    configs.write_text(json.dumps([{"emb": 64, "heads": 1, "qk": 8, "v": 8, "mlp": 32}]))
    done = run_profiler("measure", "--table", table, "--configs", configs)
    if "torch-cuda cannot run here" not in done.stderr:
        pytest.skip("torch-cuda runs on this machine")
    assert done.returncode == 4 and done.stderr.startswith("error: this machine is not the table's device")


@pytest.mark.slow
def test_block_parts_the_backend_splits_otherwise_are_replaced_with_a_warning(tmp_path):
    grid = tmp_path / "grid.json"
    axes = {"emb": [32, 64], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [32, 64]}
    grid.write_text(json.dumps({"grid": axes, "parts": ["block", "stem", "head"]}))
    out = tmp_path / "t.json"
    done = run_profiler("profile", "--grid", grid, "--quick", "--tokens", "17", "--out", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "grid's block parts ['block'] are replaced by those" in done.stderr
    assert sorted(json.loads(out.read_text())["parts"]) == ["attn_qk", "attn_v", "head", "mlp", "stem"]


def test_an_output_that_cannot_be_written_is_refused_before_any_timing(tmp_path):
    table = tmp_path / "t.json"
    write_table(table, make_table())
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    (tmp_path / "out").mkdir()
    for args, message in (
        (("profile", "--out", tmp_path / "out", "--quick"), "is a directory"),
        (("profile", "--from", table, "--budget", "3", "--out", a_file / "moved.json"), "cannot write"),
        (("merge", table, "--out", tmp_path / "out", "--force"), "is a directory"),
    ):
        done = run_profiler(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert message in done.stderr


def test_a_budget_beyond_a_full_sweep_is_refused(tmp_path):
    table = tmp_path / "t.json"
    write_table(table, make_table())
    done = run_profiler("profile", "--from", table, "--budget", "1000000000", "--out", tmp_path / "moved.json")
    assert done.returncode == 2 and "more runs than a full sweep of this grid times (about " in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--quick",),
        ("--cuda-graphs",),
        ("--no-model-parts",),
        ("--tf32",),
        ("--sparsity", "2:4"),
        ("--patch-size", "14"),
        ("--in-chans", "1"),
        ("--num-classes", "10"),
    ],
)
def test_profile_from_refuses_a_sweep_setting_it_would_ignore(tmp_path, args):
    table = tmp_path / "t.json"
    write_table(table, make_table())
    done = run_profiler("profile", "--from", table, "--budget", "3", *args, "--out", tmp_path / "moved.json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "error: --from takes the backend and its options, the workload, model, grid and timing protocol from the "
        f"source table; drop {args[0]}"
    ]
    assert not (tmp_path / "moved.json").exists()


def test_profile_from_names_every_setting_it_would_ignore_and_takes_the_defaults_given_explicitly(tmp_path):
    table = tmp_path / "t.json"
    write_table(table, make_table())
    out = tmp_path / "moved.json"
    done = run_profiler("profile", "--from", table, "--quick", "--grid", "tiny", "--patch-size", "16", "--out", out)
    assert done.returncode == 2 and done.stderr.strip().endswith("drop --grid, --quick")


def test_a_table_without_a_sweep_cannot_be_checked_or_merged(tmp_path):
    doc = validate_table(make_table())
    doc["sweep"] = None
    table = tmp_path / "made.json"
    write_table(table, doc)
    checked = run_profiler("check", table)  # a table with no fingerprint: another device, answered without timing
    assert checked.returncode == 4 and "verdict different" in checked.stdout and "Traceback" not in checked.stderr
    merged = run_profiler("merge", table, "--out", tmp_path / "m.json")
    assert merged.returncode == 2 and "records no sweep runs" in merged.stderr
    moved = validate_table(make_table())  # records as `profile --from` writes them: no pass, no grid combination
    moved["sweep"] = {
        "layout": "in-context-pairs/v2+transfer",
        "parts": sorted(moved["parts"]),
        "records": [{"dims": [{"emb": 32, "heads": 1, "qk": 8, "v": 8, "mlp": 32}] * 2, "stage_median_ms": [1.0]}],
        "shard": None,
    }
    write_table(tmp_path / "moved.json", moved)
    merged = run_profiler("merge", tmp_path / "moved.json", "--out", tmp_path / "m.json")
    assert merged.returncode == 2 and "by `profile --from`" in merged.stderr and "Traceback" not in merged.stderr


def test_upload_refuses_a_timeout_or_a_server_it_could_never_use(tmp_path, monkeypatch):
    table = tmp_path / "t.json"
    write_table(table, make_table())
    monkeypatch.setenv("LUT_SERVER_TOKEN", "a-token")
    for args, message in (
        (("--server", "http://127.0.0.1:9", "--timeout", "-1"), "--timeout must be > 0 seconds"),
        (("--server", "notaurl"), "--server takes a base URL"),
    ):
        done = run_profiler("upload", table, *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
