"""`python -m pruner prune` refuses bad input, foreign checkpoints and unreadable data with one line, before any
training, and keeps the training process's settings, its held-out subset and its deferred steps sound."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

from lut_server.latency_table import LatencyTable
from pruner.__main__ import main
from pruner.image_folder import ImageFolderSplit
from pruner.latency_pruner import Pruner
from pruner.prune_run import CHECKPOINT, _accuracy, _measured_ms
from tests.pruner.image_folder_data import IMAGE_SIZE, MODEL, PATCH_SIZE, make_image_folder, write_small_table
from tests.pruner.small_models import small_model, small_table


def args(data: Path, table: Path, out: Path, *extra: str) -> list[str]:
    return [
        "prune", "--model", MODEL, "--data", str(data), "--out", str(out), "--table-file", str(table),
        "--image-size", str(IMAGE_SIZE), "--patch-size", str(PATCH_SIZE), "--batch-size", "8", "--epochs", "1",
        "--prune-every", "2", "--eval-images", "6", "--no-progress", "--seed", "3", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    return make_image_folder(root / "data"), write_small_table(root / "table.json"), root


@pytest.fixture(scope="module")
def checkpointed(workspace):
    """A finished one-epoch run whose target (5% of the latency) was not reached: exit 3, a checkpoint in OUT."""
    data, table, root = workspace
    out = root / "run"
    assert main(args(data, table, out, "--target", "0.05")) == 3
    assert (out / CHECKPOINT).is_file()
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "extra, named",
    [
        (("--target", "0.5", "--prune-every", "0"), "--prune-every"),
        (("--target", "0.5", "--batch-size", "0"), "--batch-size"),
        (("--target", "0.5", "--batch-size", "-8"), "--batch-size"),
        (("--target", "0.5", "--epochs", "0"), "--epochs"),
        (("--targets", ",,"), "--targets"),
        (("--target", "0.5", "--device", "meta"), "--device"),
        (("--target", "0.5", "--eval-images", "-1"), "--eval-images"),
        (("--target", "0.5", "--retry-minutes", "-1"), "--retry-minutes"),
    ],
)
def test_bad_numbers_and_devices_are_one_error_line_before_training(workspace, tmp_path, capsys, extra, named):
    data, table, _ = workspace
    assert main(args(data, table, tmp_path / "out", *extra)) == 2
    assert named in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(workspace, tmp_path, capsys):
    data, table, _ = workspace
    (tmp_path / "out").write_text("notes")
    assert main(args(data, table, tmp_path / "out", "--target", "0.5")) == 2
    assert "is a file" in one_error_line(capsys)
    assert (tmp_path / "out").read_text() == "notes"


def test_a_checkpoint_in_out_is_not_overwritten_without_resume(workspace, checkpointed, tmp_path, capsys):
    data, table, _ = workspace
    out = tmp_path / "copy"
    shutil.copytree(checkpointed, out)
    before = (out / CHECKPOINT).read_bytes()
    assert main(args(data, table, out, "--target", "0.05")) == 2
    assert "--resume" in one_error_line(capsys)
    assert (out / CHECKPOINT).read_bytes() == before


@pytest.mark.parametrize(
    "changed, named",
    [
        (("--target", "0.5"), "--targets"),
        (("--target", "0.05", "--seed", "4"), "--seed"),
        (("--target", "0.5", "--prune-every", "3"), "--targets"),
    ],
)
def test_resume_with_other_options_names_each_difference(workspace, checkpointed, capsys, changed, named):
    data, table, _ = workspace
    assert main([*args(data, table, checkpointed, *changed), "--resume"]) == 2  # a later flag overrides args()'s
    line = one_error_line(capsys)
    assert named in line and "--resume" in line
    if "--prune-every" in changed:
        assert "--prune-every 2 there, 3 now" in line


def test_resume_with_another_model_or_table_is_one_line(workspace, checkpointed, tmp_path, capsys):
    data, table, _ = workspace
    other_model = args(data, table, checkpointed, "--target", "0.05", "--resume")
    other_model[other_model.index(MODEL)] = "custom:emb=48,depth=2,heads=4,head_dim=16,mlp=96"
    assert main(other_model) == 2
    assert "--model" in one_error_line(capsys)
    doc = LatencyTable.load(table).data
    doc["parts"]["stem"]["median_ms"] = [v * 3 for v in doc["parts"]["stem"]["median_ms"]]
    (tmp_path / "other.json").write_text(json.dumps(doc))
    assert main(args(data, tmp_path / "other.json", checkpointed, "--target", "0.05", "--resume")) == 2
    assert "table" in one_error_line(capsys)


def test_resume_removes_temp_files_a_killed_checkpoint_write_left(workspace, checkpointed, tmp_path, capsys):
    data, table, _ = workspace
    out = tmp_path / "killed"
    shutil.copytree(checkpointed, out)
    stale = out / f".{CHECKPOINT}.k2j4x9.tmp"
    stale.write_bytes((out / CHECKPOINT).read_bytes())
    keep = out / "notes.tmp"
    keep.write_text("mine")
    assert main(args(data, table, out, "--target", "0.05", "--resume")) == 3
    assert not stale.exists() and keep.exists()


def test_a_corrupt_image_is_one_error_line_naming_the_file(workspace, tmp_path, capsys):
    _, table, _ = workspace
    data = make_image_folder(tmp_path / "data")
    broken = data / "train" / "class1" / "5.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(args(data, table, tmp_path / "out", "--target", "0.05")) == 2
    assert str(broken) in one_error_line(capsys)


def test_an_empty_training_class_folder_is_refused_by_name(workspace, tmp_path, capsys):
    _, table, _ = workspace
    data = make_image_folder(tmp_path / "data")
    (data / "train" / "class9").mkdir()
    (data / "train" / "class9" / "README.txt").write_text("not an image")
    assert main(args(data, table, tmp_path / "out", "--target", "0.05")) == 2
    assert "class9" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()  # a run refused on its inputs leaves no empty --out behind


@pytest.mark.slow
def test_snapshot_measurement_leaves_the_training_process_settings_alone(tmp_path):
    grid = tmp_path / "grid.json"  # a table of this machine (fingerprinted) covering the small model
    axes = {"emb": [16, 64], "heads": [1, 4], "qk": [8, 24], "v": [8, 24], "mlp": [16, 96]}
    grid.write_text(json.dumps({"grid": axes}))
    table = tmp_path / "here.json"
    made = subprocess.run(
        [sys.executable, "-m", "profiler", "profile", "--grid", str(grid), "--quick", "--tokens", "6",
         "--patch-size", "4", "--in-chans", "1", "--num-classes", "3", "--out", str(table), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    summary = LatencyTable.load(table).summary()
    assert summary["backend"] == "torch-cpu" and summary["threads"] == 1
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    try:
        torch.set_num_threads(2)
        torch.set_float32_matmul_precision("high")
        measured = _measured_ms(summary, small_model(), table)
        assert torch.get_num_threads() == 2
        assert torch.get_float32_matmul_precision() == "high"
        assert measured is not None and 0 < measured < 1000  # measured in the child, on the table's device
    finally:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)


class AlwaysClassZero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0, 0.0]]).expand(x.shape[0], 3)


def test_held_out_accuracy_scores_every_class_and_none_without_images(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=3, val_per_class=4)
    val = ImageFolderSplit(data / "val", IMAGE_SIZE)
    cpu = torch.device("cpu")
    assert _accuracy(AlwaysClassZero(), val, 3, cpu, nullcontext) == pytest.approx(100.0 / 3)
    assert _accuracy(AlwaysClassZero(), val, 6, cpu, nullcontext) == pytest.approx(100.0 / 3)
    assert _accuracy(AlwaysClassZero(), val, 12, cpu, nullcontext) == pytest.approx(100.0 / 3)
    assert _accuracy(AlwaysClassZero(), val, 0, cpu, nullcontext) is None


def test_eval_images_zero_records_no_accuracy(workspace, tmp_path):
    data, table, _ = workspace
    out = tmp_path / "out"
    assert main(args(data, table, out, "--target", "0.05", "--eval-images", "0")) == 3
    timeline = json.loads((out / "report.json").read_text())["timeline"]
    assert len(timeline) == 3 and all(t["accuracy"] is None for t in timeline)
    assert (out / "latency_accuracy_dims.png").stat().st_size > 0


def test_a_pruner_without_an_accumulated_batch_is_not_ready():
    p = Pruner(small_model(), latency=small_table(), target_ratio=0.5)
    assert not p.ready
    p.importance.add_flat(torch.ones(p.gates.flat().numel()))
    assert p.ready


def test_a_step_due_after_only_skipped_batches_waits_for_the_next_counted_batch(workspace, tmp_path, monkeypatch):
    """fp16 overflows on the first three batches (prune every batch): the steps come at batches 4, 5 and 6."""
    data, table, _ = workspace
    real = Pruner.accumulate
    calls = {"n": 0}

    def overflow_first_three(self: Pruner, scaler=None) -> bool:
        calls["n"] += 1
        if calls["n"] <= 3:
            self.skipped_batches += 1
            return False
        return real(self, scaler)

    monkeypatch.setattr(Pruner, "accumulate", overflow_first_three)
    out = tmp_path / "out"
    assert main([*args(data, table, out, "--target", "0.05"), "--prune-every", "1"]) == 3
    report = json.loads((out / "report.json").read_text())
    assert report["skipped_batches"] == 3 and report["iterations"] == 6
    assert report["steps"] == 3
