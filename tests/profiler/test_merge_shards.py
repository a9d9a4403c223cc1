"""Sharded sweeps merged into one table: same cells as an unsharded sweep; mismatched shards refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lut_server.dims import BlockDims
from lut_server.latency_table import LatencyTable
from lut_server.table_format import read_table, write_table
from profiler.cli import main

PROFILE = ["profile", "--backend", "torch-cpu", "--grid", "tiny", "--quick", "--batch", "1", "--tokens", "17"]


def _profile(out: Path, *extra: str) -> None:
    assert main([*PROFILE, "--out", str(out), "--no-progress", *extra]) == 0


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    paths = {"full": root / "full.json"}
    _profile(paths["full"])
    for i in range(3):
        paths[f"s{i}"] = root / f"shard{i}.json"
        _profile(paths[f"s{i}"], "--shard", f"{i}/3")
    return paths


def _runs(doc: dict) -> dict[tuple, dict]:
    """The block records of a table (one per block timed in a pass), keyed by (pass, combo)."""
    return {(r["pass"], *r["combo"]): r for r in doc["sweep"]["records"]}


def test_three_shards_merge_to_the_unsharded_point_set(sweeps: dict[str, Path], tmp_path: Path, capsys) -> None:
    shards = [sweeps[f"s{i}"] for i in (2, 0, 1)]  # order of the arguments does not matter
    for path in shards:
        assert not read_table(path)["complete"]
    with_session = read_table(shards[0])  # a session one shard's machine saw says nothing of the merged table's
    with_session["levels"] = [{"created": "2026-02-01T00:00:00Z", "source": "check", "level_pct": 5.0}]
    shards[0] = tmp_path / "shard-with-session.json"
    write_table(shards[0], with_session)
    out = tmp_path / "merged.json"
    assert main(["merge", *map(str, shards), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    merged, full = read_table(out), read_table(sweeps["full"])
    assert summary == {**summary, "complete": True, "shards": 3, "blocks": 8, "blocks_planned": 8}
    assert merged["complete"] and merged["sweep"]["shard"] is None and merged["validation"] is None
    assert "levels" not in merged
    assert merged["grid"] == full["grid"] and set(merged["parts"]) == set(full["parts"])
    # the same runs as the unsharded sweep, each one the shard's own measurement, and the shards are disjoint
    assert set(_runs(merged)) == set(_runs(full))
    shard_runs = [_runs(read_table(p)) for p in shards]
    assert sum(len(r) for r in shard_runs) == len(_runs(merged)) == 8
    for runs in shard_runs:
        assert all(_runs(merged)[key] == record for key, record in runs.items())
    for name, part in merged["parts"].items():
        assert np.isfinite(np.array(part["median_ms"], dtype=float)).all(), name
    assert merged["sweep"]["measurements"] == sum(read_table(p)["sweep"]["measurements"] for p in shards)
    assert sorted(m["shard"]["index"] for m in merged["sweep"]["merged_from"]) == [0, 1, 2]
    # the merged table serves queries
    (predicted,) = LatencyTable(merged, "m").block_latency([BlockDims(48, 2, 12, 12, 48)])
    assert np.isfinite(predicted) and predicted > 0


def _variant(src: Path, dst: Path, change) -> Path:
    doc = read_table(src)
    change(doc)
    write_table(dst, doc)
    return dst


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["workload"].update(batch=2), "workload.batch"),
        (lambda d: d["workload"].update(threads=2), "workload.threads"),
        (lambda d: d["device"].update(name="Another CPU"), "device.name"),
        (lambda d: d["software"]["match"].update(torch="9.9.9"), "software.match.torch"),
        (lambda d: d["protocol"].update(min_repeats=99), "protocol.min_repeats"),
    ],
)
def test_mismatched_shards_are_refused_naming_the_field(
    sweeps: dict[str, Path], tmp_path: Path, capsys, change, field: str
) -> None:
    odd = _variant(sweeps["s1"], tmp_path / "odd.json", change)
    out = tmp_path / "merged.json"
    assert main(["merge", str(sweeps["s0"]), str(odd), str(sweeps["s2"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert field in err and "odd.json" in err
    assert not out.exists()


def test_different_grids_are_refused(tmp_path: Path, sweeps: dict[str, Path], capsys) -> None:
    grid = {"grid": {"emb": [32, 64], "heads": [1, 2], "qk": [8, 16], "v": [8, 16], "mlp": [32, 48]}}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    other = tmp_path / "other-grid.json"
    assert main([*PROFILE[:4], str(tmp_path / "grid.json"), *PROFILE[5:], "--out", str(other), "--no-progress",
                 "--shard", "1/3"]) == 0  # fmt: skip
    assert main(["merge", str(sweeps["s0"]), str(other), "--out", str(tmp_path / "m.json")]) == 2
    assert "grid.mlp" in capsys.readouterr().err


def test_overlapping_and_missing_runs(sweeps: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "merged.json"
    assert main(["merge", str(sweeps["s0"]), str(sweeps["full"]), "--out", str(out)]) == 2
    assert "measured in both" in capsys.readouterr().err
    copy = tmp_path / "copy-of-shard0.json"
    copy.write_text(sweeps["s0"].read_text())
    assert main(["merge", str(sweeps["s0"]), str(copy), "--out", str(out)]) == 2
    assert "both shard 0/3" in capsys.readouterr().err
    other_split = read_table(sweeps["s1"])
    other_split["sweep"]["shard"] = {"index": 1, "count": 2}
    write_table(tmp_path / "half.json", other_split)
    assert main(["merge", str(sweeps["s0"]), str(tmp_path / "half.json"), "--out", str(out)]) == 2
    assert "half.json is shard 1/2 but" in capsys.readouterr().err  # not "overlap": another split entirely
    assert main(["merge", str(sweeps["s0"]), str(sweeps["s1"]), "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err and not out.exists()


def test_incomplete_merge_is_resumed_to_a_complete_table(sweeps: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "partial.json"
    assert main(["merge", str(sweeps["s0"]), str(sweeps["s1"]), "--out", str(out), "--allow-incomplete"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is False
    before = read_table(out)
    _profile(out, "--resume")
    after = read_table(out)
    assert after["complete"]
    kept, final = _runs(before), _runs(after)
    assert {key: final[key] for key in kept} == kept  # the merged shards' runs were kept, not re-measured
    assert set(final) == set(_runs(read_table(sweeps["full"])))
    assert main(["merge", str(sweeps["s0"]), "--out", str(out)]) == 2  # refuses to overwrite without --force
    assert "exists" in capsys.readouterr().err
